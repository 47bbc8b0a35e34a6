//! `poker-pipe run FILE`: run what `plan` says must run, in order, reuse the
//! rest, and end with a table of what happened.

use std::path::PathBuf;

use crate::backend::Device;
use crate::error::{CmdResult, Exit, Failure};
use crate::graph::{
    Cancel, Executor, Plan, PlanOptions, RunReport, Selection, StageReport, StageStatus, Store,
    Verbosity, cache_root, select,
};
use crate::model::memory;
use crate::spec::Pipeline;
use crate::stages;

use super::plan::{choose_preset, load_pipeline, make_plan};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file.
    pub file: PathBuf,
    /// Memory preset (overrides the file's `preset:`); `auto` picks by device.
    #[arg(long)]
    pub preset: Option<String>,
    /// Run this stage and what it depends on, nothing after it.
    #[arg(long, conflicts_with = "only")]
    pub until: Option<String>,
    /// Run only this stage (its inputs must be cached).
    #[arg(long)]
    pub only: Option<String>,
    /// Re-run this stage even if cached (repeatable).
    #[arg(long)]
    pub force: Vec<String>,
    /// Re-run every stage.
    #[arg(long)]
    pub force_all: bool,
    /// Cache folder [default: $POKER_PIPE_CACHE or .poker-pipe].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// `cpu` or `cuda[:N]`.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// Only errors and the final table on the terminal (the logs and
    /// metrics files are written as always).
    #[arg(long, short, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Every training step's line on stderr too.
    #[arg(long, short)]
    pub verbose: bool,
}

pub fn run(args: Args) -> CmdResult {
    // From the start: a Ctrl-C while the plan is made (hashing inputs) is
    // seen by the executor before its first stage.
    Cancel::install_sigint();
    let registry = stages::registry();
    let pipeline = load_pipeline(&args.file, &registry)?;
    let preset = choose_preset(&pipeline, args.preset.as_deref(), args.device)?;
    let root = cache_root(args.cache_dir.as_deref());
    let io = |err: std::io::Error| {
        Failure::runtime(miette::miette!(
            help = "check that the cache folder is writable (--cache-dir or POKER_PIPE_CACHE)",
            "cache {}: {err}",
            root.display()
        ))
    };
    let store = Store::open(&root).map_err(io)?;
    let _lock = store.lock().map_err(io)?;
    store.clean_tmp().map_err(io)?;
    let options = PlanOptions {
        device: args.device,
        force: args.force,
        force_all: args.force_all,
    };
    let plan = make_plan(&pipeline, preset.as_ref(), &store, &options)?;
    let selection = match (args.until, args.only) {
        (Some(stage), _) => Selection::Until(stage),
        (None, Some(stage)) => Selection::Only(stage),
        (None, None) => Selection::All,
    };
    let selected = select(&plan, &pipeline, &selection).map_err(Failure::user)?;
    let to_run = plan
        .stages
        .iter()
        .filter(|s| selected.contains(&s.name) && !s.cached)
        .count();
    eprintln!(
        "{}: {to_run} of {} selected stage(s) to run (preset {}, device {})",
        pipeline.name,
        selected.len(),
        plan.preset.as_deref().unwrap_or("none"),
        args.device
    );
    let cancel = Cancel::new();
    let executor = Executor {
        pipeline: &pipeline,
        store: &store,
        device: args.device,
        cancel: cancel.clone(),
        runs_dir: PathBuf::from("runs"),
        verbosity: match (args.quiet, args.verbose) {
            (true, _) => Verbosity::Quiet,
            (_, true) => Verbosity::Verbose,
            _ => Verbosity::Normal,
        },
    };
    let report = executor.execute(&plan, &selected);
    print_table(&report);
    write_report(&plan, &store, &executor, &report);
    if let Some(err) = report.error {
        return Err(Failure {
            exit: err.exit,
            report: explain_failure(err.report, &report.stages, &plan, &pipeline),
        });
    }
    // A Ctrl-C that came as the last selected stage finished still ends
    // the command as interrupted, as a shell tool's would.
    if report.interrupted || cancel.is_cancelled() {
        return Err(Failure::interrupted(miette::miette!(
            help = "run the same command again to resume",
            "interrupted: the running stage saved its state"
        )));
    }
    Ok(Exit::Ok)
}

/// An out-of-memory failure names the stage, its preset, the planner's
/// estimate and the next smaller preset; other failures pass unchanged.
fn explain_failure(
    error: miette::Report,
    stages: &[StageReport],
    plan: &Plan,
    pipeline: &Pipeline,
) -> miette::Report {
    let failed = stages
        .iter()
        .rev()
        .find(|s| s.status == StageStatus::Failed)
        .and_then(|s| plan.stage(&s.name));
    let Some(stage) = failed else {
        return error;
    };
    let presets = pipeline
        .presets
        .iter()
        .map(|(name, p)| (name.as_str(), p.gpu_memory_gib))
        .collect();
    memory::explain_out_of_memory(
        error,
        &memory::OomContext {
            stage: &stage.name,
            preset: stage.exec.preset.as_deref(),
            gpu_memory_gib: stage.exec.gpu_memory_gib,
            estimate: stage.memory_estimate,
            presets,
        },
    )
}

/// The run's page (`runs/<pipeline>/report.html`), whatever the outcome: a
/// report that cannot be written is a warning, never the run's failure.
/// Where it is goes after the table, unless quiet.
fn write_report(plan: &Plan, store: &Store, executor: &Executor, run: &RunReport) {
    let page = crate::report::collect(plan, store, &executor.runs_dir, &run.stages);
    match crate::report::write(&page, &executor.runs_dir) {
        Ok(path) if executor.verbosity != Verbosity::Quiet => {
            println!("report: {}", path.display());
        }
        Ok(_) => {}
        Err(err) => eprintln!("warning: could not write the report: {err}"),
    }
}

fn print_table(report: &RunReport) {
    let width = report
        .stages
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!("{:width$}  {:11}  {:>9}  OUTPUT", "STAGE", "STATUS", "TIME");
    for stage in &report.stages {
        let status = match stage.status {
            StageStatus::Cached => "cached",
            StageStatus::Ran => "ran",
            StageStatus::Interrupted => "interrupted",
            StageStatus::Failed => "failed",
        };
        println!(
            "{:width$}  {status:11}  {:>8.2}s  {}",
            stage.name,
            stage.duration_s,
            stage.output.display()
        );
    }
}
