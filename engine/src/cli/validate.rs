//! `poker-pipe validate FILE...`: check pipeline files without running
//! anything; every problem of every file is reported.

use std::path::PathBuf;

use crate::error::{CmdResult, Exit};
use crate::spec::{FileProblems, JsonProblem, load_and_check};
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
