//! `poker-pipe validate FILE...`: check pipeline files without running
//! anything; every problem of every file is reported.

use std::path::PathBuf;

use crate::error::{CmdResult, Exit};
use crate::model::memory::{fits, gib_text};
use crate::spec::{
    FileProblems, JsonProblem, MemoryPreset, Pipeline, exec_settings, load_and_check,
};
use crate::stages;

/// How to print problems.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// miette diagnostics with the YAML snippet (stderr).
    #[default]
    Human,
    /// A JSON array of {file, line, column, code, message, help} (stdout).
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pipeline files to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub fn run(args: Args) -> CmdResult {
    let registry = stages::registry();
    let mut all: Vec<JsonProblem> = Vec::new();
    let mut failed = 0;
    for file in &args.files {
        match load_and_check(file, &registry) {
            Ok(pipeline) => {
                if args.format == Format::Human {
                    println!(
                        "ok: {} (pipeline `{}`, {} stages)",
                        file.display(),
                        pipeline.name,
                        pipeline.stages.len()
                    );
                }
                for warning in memory_warnings(&pipeline) {
                    eprintln!("warning: {}: {warning}", file.display());
                }
            }
            Err(problems) => {
                failed += 1;
                match args.format {
                    Format::Human => print_problems(&problems),
                    Format::Json => all.extend(problems.json()),
                }
            }
        }
    }
    if args.format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&all).unwrap_or_else(|_| "[]".into())
        );
    }
    Ok(if failed == 0 { Exit::Ok } else { Exit::User })
}

/// One line per (stage, preset) whose planned peak memory exceeds the
/// preset's GPU: every preset claims the pipeline fits that card. These are
/// warnings: the estimate errs high, and a preset may be meant for later.
pub fn memory_warnings(pipeline: &Pipeline) -> Vec<String> {
    let mut presets: Vec<(&String, &MemoryPreset)> = pipeline.presets.iter().collect();
    presets.sort_by(|a, b| a.1.gpu_memory_gib.total_cmp(&b.1.gpu_memory_gib));
    let mut warnings = Vec::new();
    for stage in &pipeline.stages {
        for (i, (name, preset)) in presets.iter().enumerate() {
            let exec = exec_settings(stage, Some(&((*name).clone(), (*preset).clone())));
            let Some(bytes) = stage.kind.memory(&stage.params, &exec).total() else {
                continue;
            };
            if fits(bytes, preset.gpu_memory_gib) {
                continue;
            }
            let bigger = presets[i + 1..]
                .iter()
                .find(|(_, p)| {
                    let exec = exec_settings(stage, Some(&((*name).clone(), (*p).clone())));
                    stage
                        .kind
                        .memory(&stage.params, &exec)
                        .total()
                        .is_some_and(|b| fits(b, p.gpu_memory_gib))
                })
                .map(|(n, _)| format!("preset `{n}` fits it"))
                .unwrap_or_else(|| "no preset of this pipeline fits it".into());
            warnings.push(format!(
                "stage `{}` needs about {} under preset `{name}` ({} GiB GPU, micro-batch {}{}): \
                 it will likely run out of memory there; {bigger} \
                 (`poker-pipe plan` shows the breakdown)",
                stage.name,
                gib_text(bytes),
                preset.gpu_memory_gib,
                exec.micro_batch,
                if exec.activation_checkpointing {
                    ", checkpointing"
                } else {
                    ""
                },
            ));
        }
    }
    warnings
}

/// Print every problem of a file as a diagnostic, then a one-line count.
pub fn print_problems(problems: &FileProblems) {
    for diagnostic in problems.diagnostics() {
        eprintln!("{:?}", miette::Report::new(diagnostic));
    }
    eprintln!(
        "{}: {} problem(s)",
        problems.path.display(),
        problems.problems.len()
    );
}
