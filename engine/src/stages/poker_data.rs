//! `poker-data`: generated no-limit hold'em spots labelled by the expert, as
//! SFT examples, preference pairs and PPO prompts with held-out test files.
//! The generator lives in `poker::dataset`; this file only connects it to the
//! engine, so the data can also be made outside a pipeline.

use serde_json::Value;

use super::{DATASETS, dataset_output};
use crate::graph::{Outcome, OutputDecl, StageContext, StageError, StageKind, StageResult};
use crate::poker::dataset::{self, PokerDataParams};

/// The `poker-data` stage kind.
pub struct PokerData;

impl StageKind for PokerData {
    type Params = PokerDataParams;
    const NAME: &'static str = "poker-data";
    const VERSION: u32 = 6;
    const DESCRIPTION: &'static str = "Generated hold'em spots labelled by the expert: SFT examples, preference pairs, PPO prompts and held-out test files.";

    fn outputs(&self, _params: &PokerDataParams) -> Vec<OutputDecl> {
        DATASETS
            .iter()
            .filter_map(|(name, _, _)| dataset_output(name))
            .collect()
    }

    fn check(&self, params: &PokerDataParams) -> Vec<(String, String)> {
        params
            .check()
            .into_iter()
            .map(|(field, message)| (field.to_string(), message))
            .collect()
    }

    fn run(&self, params: &PokerDataParams, ctx: &mut StageContext) -> StageResult {
        let out_dir = ctx.out_dir().to_path_buf();
        let total = params.scenarios + params.pairs + params.prompts;
        ctx.log(format!(
            "generating {} SFT examples, {} pairs and {} prompts (seed {}, {:.0}% held out)",
            params.scenarios,
            params.pairs,
            params.prompts,
            params.seed,
            params.test_fraction * 100.0
        ));
        let cancel = ctx.cancel_flag();
        let stop = move || cancel.is_cancelled();
        let mut line = ctx.progress_line(total);
        let generated = dataset::generate(
            params,
            &out_dir,
            |done, _| {
                ctx.progress(done, total);
                line.update(done);
            },
            &stop,
        );
        let summary = match generated {
            Ok(summary) => summary,
            Err(dataset::DatasetError::Stopped) => return Ok(Outcome::Interrupted),
            Err(err) => return Err(StageError::runtime(miette::Report::new(err))),
        };
        let summary_json = serde_json::to_value(&summary).unwrap_or(Value::Null);
        ctx.log(format!("wrote {summary_json}"));
        let text = serde_json::to_vec_pretty(&summary_json).map_err(|err| {
            StageError::runtime(miette::miette!("cannot encode summary.json: {err}"))
        })?;
        std::fs::write(out_dir.join("summary.json"), text).map_err(|err| {
            StageError::runtime(miette::miette!("cannot write summary.json: {err}"))
        })?;
        Ok(Outcome::Done)
    }
}
