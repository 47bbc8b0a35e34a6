//! `poker-pipe plan FILE`: the stages in order with their hash, cached or
//! not, and why each would run.

use std::path::{Path, PathBuf};

use crate::backend::Device;
use crate::error::{CmdResult, Exit, Failure};
use crate::graph::{Plan, PlanOptions, Registry, Store, cache_root, check_stage_name, plan};
use crate::model::memory::{StageMemory, fits, gib_text};
use crate::spec::{MemoryPreset, Pipeline, exec_settings, load_and_check, select_preset};
use crate::stages;

use super::validate::print_problems;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table.
    #[default]
    Human,
    /// {"pipeline", "preset", "stages": [{name, kind, hash, status, reasons,
    /// memory_estimate_bytes, memory_breakdown?, memory_note?, fits_preset?}]}
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
        Format::Human => {
            print_plan(&plan);
            print_memory(&plan, &pipeline);
        }
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
        let memory = match (stage.memory_estimate, stage.memory.breakdown()) {
            (Some(b), None) => format!("  (memory ~{})", human_bytes(b)),
            _ => String::new(),
        };
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

/// The planner's view: each training stage's peak memory part by part under
/// the chosen preset, then its total under every preset of the pipeline.
fn print_memory(plan: &Plan, pipeline: &Pipeline) {
    let planned: Vec<_> = plan
        .stages
        .iter()
        .filter(|s| s.memory != StageMemory::NotApplicable)
        .collect();
    if planned.is_empty() {
        return;
    }
    println!();
    println!(
        "peak GPU memory (preset {}):",
        plan.preset.as_deref().unwrap_or("none")
    );
    for stage in &planned {
        let exec = &stage.exec;
        match &stage.memory {
            StageMemory::Estimated(b) => {
                let verdict = match exec.gpu_memory_gib {
                    Some(gib) if fits(b.total(), gib) => format!("fits {gib} GiB"),
                    Some(gib) => format!("DOES NOT FIT {gib} GiB"),
                    None => String::new(),
                };
                println!(
                    "  {} (micro-batch {} x {} accumulation{}): {}  {verdict}",
                    stage.name,
                    exec.micro_batch,
                    exec.grad_accum,
                    if exec.activation_checkpointing {
                        ", checkpointing"
                    } else {
                        ""
                    },
                    b.summary()
                );
            }
            StageMemory::Unknown(note) => println!("  {}: not estimated: {note}", stage.name),
            StageMemory::BeyondAnyDevice(note) => println!("  {}: {note}", stage.name),
            StageMemory::NotApplicable => {}
        }
    }
    let mut presets: Vec<(&String, &MemoryPreset)> = pipeline.presets.iter().collect();
    if presets.is_empty() {
        return;
    }
    presets.sort_by(|a, b| a.1.gpu_memory_gib.total_cmp(&b.1.gpu_memory_gib));
    let width = planned
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut header = format!("{:width$}", "STAGE");
    for (name, _) in &presets {
        header.push_str(&format!("  {name:>14}"));
    }
    println!();
    println!("{header}");
    for stage in &planned {
        let mut line = format!("{:width$}", stage.name);
        let spec_stage = &pipeline.stages[stage.index];
        for (name, preset) in &presets {
            let exec = exec_settings(spec_stage, Some(&((*name).clone(), (*preset).clone())));
            let cell = match spec_stage.kind.memory(&spec_stage.params, &exec).total() {
                Some(bytes) if fits(bytes, preset.gpu_memory_gib) => gib_text(bytes),
                Some(bytes) => format!("{} !", gib_text(bytes)),
                None => "?".to_string(),
            };
            line.push_str(&format!("  {cell:>14}"));
        }
        println!("{line}");
    }
    println!("(! = does not fit the preset's GPU memory)");
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
