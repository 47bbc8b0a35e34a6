//! What the kinds that train on preference pairs from an SFT model share
//! (`reward` and `dpo`): their LoRA settings, their inputs, what they train
//! for the planner, and how the SFT model's adapter is continued, replaced
//! or merged away before training.

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::sft::{Method, fail};
use super::{CAUSAL_LM, PAIRS_DATASET};
use crate::backend::Backend;
use crate::graph::{InputDecl, StageError};
use crate::model::Llama;
use crate::model::llama::PROJECTIONS;
use crate::model::lora::{self, LoraConfig};
use crate::model::memory::Trains;

/// LoRA settings for training on pairs (no dropout: the recipe disables it
/// for the reward model, and DPO's reference figures are computed without
/// it).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PairLora {
    #[serde(default = "PairLora::rank")]
    #[schemars(range(min = 1, max = 1024))]
    pub rank: usize,
    #[serde(default = "PairLora::alpha")]
    pub alpha: f32,
    /// Projections to adapt: q_proj, k_proj, v_proj, o_proj, gate_proj,
    /// up_proj, down_proj.
    #[serde(default = "PairLora::targets")]
    pub targets: Vec<String>,
}

impl PairLora {
    fn rank() -> usize {
        128
    }
    fn alpha() -> f32 {
        256.0
    }
    fn targets() -> Vec<String> {
        PROJECTIONS.iter().map(|s| s.to_string()).collect()
    }

    fn config(&self) -> LoraConfig {
        LoraConfig {
            rank: self.rank,
            alpha: self.alpha,
            dropout: 0.0,
            targets: self.targets.clone(),
            rslora: false,
        }
    }
}

impl Default for PairLora {
    fn default() -> Self {
        PairLora {
            rank: Self::rank(),
            alpha: Self::alpha(),
            targets: Self::targets(),
        }
    }
}

/// `init` (an SFT model), `data` and the optional `test_data` pairs.
pub fn inputs(init: &str, data: &str, test_data: Option<&str>) -> Vec<InputDecl> {
    let mut inputs = vec![
        InputDecl::stage("init", init, &[CAUSAL_LM]),
        InputDecl::stage("data", data, &[PAIRS_DATASET]),
    ];
    if let Some(test) = test_data {
        inputs.push(InputDecl::stage("test_data", test, &[PAIRS_DATASET]));
    }
    inputs
}

/// What the stage trains, for the planner: a continued SFT adapter
/// (`init_adapter`) keeps its shape.
pub fn trains(method: Method, init_adapter: Option<&Trains>, lora: Option<&PairLora>) -> Trains {
    match (method, init_adapter) {
        (Method::Full, _) => Trains::Full,
        (Method::Lora, Some(adapter @ Trains::Lora { .. })) => adapter.clone(),
        (Method::Lora, _) => {
            let lora = lora.cloned().unwrap_or_default();
            Trains::Lora {
                rank: lora.rank,
                targets: lora.targets,
            }
        }
    }
}

/// The adapter the stage's output carries (None for full training).
pub fn output_adapter(
    method: Method,
    inputs: &BTreeMap<String, Trains>,
    lora: Option<&PairLora>,
) -> Option<Trains> {
    match method {
        Method::Full => None,
        Method::Lora => Some(trains(method, inputs.get("init"), lora)),
    }
}

/// Problems with `lora:` for `validate`.
pub fn check(method: Method, lora: Option<&PairLora>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(lora) = lora {
        if method == Method::Full {
            out.push((
                "lora".into(),
                "`lora` settings only apply with `method: lora`".into(),
            ));
        }
        if let Err(e) = lora.config().check(Path::new("lora")) {
            out.push(("lora".into(), e.to_string()));
        }
    }
    out
}

/// Sets up the SFT model's adapter for `method`; returns the adapter that
/// `method: lora` trains (`who` names the stage in errors). Which
/// parameters train is left to the caller.
/// - `full`: the SFT adapter, if any, is merged into the weights and
///   removed.
/// - `lora` on an SFT adapter: that adapter is continued, without dropout;
///   `lora`, if given, must match its rank and targets.
/// - `lora` on a fully trained SFT model: a fresh adapter of `lora`.
pub fn prepare_adapter<B: Backend>(
    be: &B,
    model: &mut Llama<B>,
    method: Method,
    lora: Option<&PairLora>,
    seed: u64,
    init_adapter: Option<LoraConfig>,
    who: &str,
) -> Result<Option<LoraConfig>, StageError> {
    match (method, init_adapter) {
        (Method::Full, init_adapter) => {
            if init_adapter.is_some() {
                lora::set_merged(be, model, true);
                for layer in &mut model.layers {
                    for (_, lin) in layer.projections_mut() {
                        lin.lora = None;
                    }
                }
            }
            Ok(None)
        }
        (Method::Lora, Some(cfg)) => {
            if let Some(own) = lora
                && (own.rank != cfg.rank || own.targets != cfg.targets)
            {
                return Err(StageError::user(miette::miette!(
                    help = "leave `lora` out to continue the SFT adapter as it is, or train \
                            the SFT stage with the same rank and targets",
                    "{who} continues the SFT model's adapter (rank {}, targets {}), but `lora` \
                     asks for rank {} on {}",
                    cfg.rank,
                    cfg.targets.join(", "),
                    own.rank,
                    own.targets.join(", ")
                )));
            }
            for layer in &mut model.layers {
                for (_, lin) in layer.projections_mut() {
                    if let Some(adapter) = lin.lora.as_mut() {
                        adapter.dropout = 0.0;
                    }
                }
            }
            Ok(Some(LoraConfig {
                dropout: 0.0,
                ..cfg
            }))
        }
        (Method::Lora, None) => {
            let cfg = lora.cloned().unwrap_or_default().config();
            lora::attach(be, model, &cfg, seed).map_err(fail)?;
            Ok(Some(cfg))
        }
    }
}
