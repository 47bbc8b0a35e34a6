//! `poker-pipe report FILE`: write `runs/<pipeline>/report.html` from what
//! the cache holds for the pipeline's current plan (`run` writes the same
//! page when it ends).

use std::path::{Path, PathBuf};

use crate::backend::Device;
use crate::error::{CmdResult, Exit, Failure};
use crate::graph::{Store, cache_root};
use crate::report;
use crate::stages;

use super::plan::{choose_preset, load_pipeline, make_plan};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file.
    pub file: PathBuf,
    /// Memory preset (overrides the file's `preset:`); `auto` picks by device.
    #[arg(long)]
    pub preset: Option<String>,
    /// Cache folder [default: $POKER_PIPE_CACHE or .poker-pipe].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Device the stages ran on (it is part of their hash).
    #[arg(long, default_value = "cpu")]
    pub device: Device,
}

pub fn run(args: Args) -> CmdResult {
    let registry = stages::registry();
    let pipeline = load_pipeline(&args.file, &registry)?;
    let preset = choose_preset(&pipeline, args.preset.as_deref(), args.device)?;
    let store = Store::at(&cache_root(args.cache_dir.as_deref()));
    let options = crate::graph::PlanOptions {
        device: args.device,
        ..Default::default()
    };
    let plan = make_plan(&pipeline, preset.as_ref(), &store, &options)?;
    let runs = Path::new("runs");
    let page = report::collect(&plan, &store, runs, &[]);
    let path = report::write(&page, runs).map_err(|err| {
        Failure::runtime(miette::miette!(
            help = "check that runs/ is writable",
            "cannot write the report under runs/{}: {err}",
            pipeline.name
        ))
    })?;
    let done = page
        .stages
        .iter()
        .filter(|s| s.status != report::RowStatus::NotRun)
        .count();
    println!(
        "{} ({done} of {} stage(s) in the cache)",
        path.display(),
        page.stages.len()
    );
    Ok(Exit::Ok)
}
