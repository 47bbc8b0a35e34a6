//! `poker-pipe plan FILE`: the stages in order with their hash, cached or
//! not, and why each would run.

use std::path::{Path, PathBuf};

use crate::backend::Device;
use crate::error::{CmdResult, Exit, Failure};
use crate::graph::{Plan, PlanOptions, Registry, Store, cache_root, check_stage_name, plan};
use crate::spec::{MemoryPreset, Pipeline, load_and_check, select_preset};
use crate::stages;

use super::validate::print_problems;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table.
    #[default]
    Human,
    /// {"pipeline", "preset", "stages": [{name, kind, hash, status, reasons, memory_estimate_bytes}]}
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file.
    pub file: PathBuf,
    /// Memory preset (overrides the file's `preset:`); `auto` picks by device.
    #[arg(long)]
    pub preset: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Cache folder [default: $POKER_PIPE_CACHE or .poker-pipe].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Device the run would use (picks the `auto` preset).
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// Plan as if these stages were forced.
    #[arg(long)]
    pub force: Vec<String>,
    /// Plan as if every stage were forced.
    #[arg(long)]
    pub force_all: bool,
}

pub fn run(args: Args) -> CmdResult {
    let registry = stages::registry();
    let pipeline = load_pipeline(&args.file, &registry)?;
    let preset = choose_preset(&pipeline, args.preset.as_deref(), args.device)?;
    let store = Store::at(&cache_root(args.cache_dir.as_deref()));
    let options = PlanOptions {
        device: args.device,
        force: args.force,
        force_all: args.force_all,
    };
    let plan = make_plan(&pipeline, preset.as_ref(), &store, &options)?;
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&plan.to_json()).unwrap_or_default()
        ),
        Format::Human => print_plan(&plan),
    }
    Ok(Exit::Ok)
}

/// Load and check a pipeline; problems are printed and give exit 1.
pub(super) fn load_pipeline(file: &Path, registry: &Registry) -> Result<Pipeline, Failure> {
    load_and_check(file, registry).map_err(|problems| {
        print_problems(&problems);
        Failure::user(miette::miette!(
            code = "spec::invalid",
            help = "run `poker-pipe validate` for the same report",
            "{} is not a valid pipeline",
            file.display()
        ))
    })
}

pub(super) fn choose_preset(
    pipeline: &Pipeline,
    requested: Option<&str>,
    device: Device,
) -> Result<Option<(String, MemoryPreset)>, Failure> {
    select_preset(pipeline, requested, device).map_err(Failure::user)
}

/// Plan, checking that forced stage names exist.
pub(super) fn make_plan(
    pipeline: &Pipeline,
    preset: Option<&(String, MemoryPreset)>,
    store: &Store,
    options: &PlanOptions,
) -> Result<Plan, Failure> {
    let plan = plan(pipeline, preset, store, options).map_err(|err| {
        Failure::runtime(miette::miette!(
            help = "check that the input files are readable",
            "cannot hash the inputs: {err}"
        ))
    })?;
    for name in &options.force {
        check_stage_name(&plan, name).map_err(Failure::user)?;
    }
    Ok(plan)
}

fn print_plan(plan: &Plan) {
    println!(
        "pipeline {}  preset {}  device {}",
        plan.pipeline,
        plan.preset.as_deref().unwrap_or("(none)"),
        plan.device
    );
    let width = plan
        .stages
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let kind_width = plan
        .stages
        .iter()
        .map(|s| s.kind.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:width$}  {:kind_width$}  {:12}  {:6}  WHY",
        "STAGE", "KIND", "HASH", "STATUS"
    );
    for stage in &plan.stages {
        let why: Vec<String> = stage.reasons.iter().map(ToString::to_string).collect();
        let memory = stage
            .memory_estimate
            .map(|b| format!("  (memory ~{})", human_bytes(b)))
            .unwrap_or_default();
        println!(
            "{:width$}  {:kind_width$}  {:12}  {:6}  {}{memory}",
            stage.name,
            stage.kind,
            &stage.hash[..12.min(stage.hash.len())],
            if stage.cached { "cached" } else { "run" },
            why.join("; ")
        );
    }
}

/// 1536 -> "1.5 KiB".
pub(super) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
