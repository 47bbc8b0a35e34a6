//! The command line: one file per subcommand, each with its clap `Args` and a
//! `run` that returns an exit code or a failure to report.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::{CmdResult, Exit};

mod arena;
mod bench;
mod cache;
mod device;
mod equity;
mod eval;
mod export;
mod fetch;
mod plan;
mod report;
mod run;
mod schema;
mod validate;

/// Train poker-playing LLaMA models from one YAML pipeline file.
#[derive(Debug, Parser)]
#[command(name = "poker-pipe", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check pipeline files without running anything.
    Validate(validate::Args),
    /// Print or write the JSON schema of pipeline files.
    Schema(schema::Args),
    /// Show which stages would run, which are cached, and why.
    Plan(plan::Args),
    /// Run a pipeline, reusing cached stages.
    Run(run::Args),
    /// Write runs/<pipeline>/report.html from the cache (run does it too).
    Report(report::Args),
    /// Inspect, clean and verify the stage cache.
    #[command(subcommand)]
    Cache(cache::Command),
    /// Equity of hands against hands or a range.
    Equity(equity::Args),
    /// Play two players against each other on duplicate deals.
    Arena(arena::Args),
    /// Evaluate or talk to a trained model.
    Eval(eval::Args),
    /// Download a model into the hub cache ahead of a (possibly offline) run.
    Fetch(fetch::Args),
    /// Write a model with its LoRA merged in, as GGUF or HF safetensors.
    Export(export::Args),
    /// Benchmarks that print JSON.
    #[command(subcommand)]
    Bench(bench::Command),
}

/// Parse the process arguments, run the command, report, and exit.
pub fn main() -> ExitCode {
    restore_sigpipe();
    quiet_typed_unwinds();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            };
            let _ = err.print();
            return code.into();
        }
    };
    finish(dispatch(cli.command))
}

/// The CUDA backend unwinds with its typed error when the GPU runs out of
/// memory, and the stage executor reports it as `run::out_of_memory`; the
/// default hook would first print a bare "Box<dyn Any>" panic. Every other
/// panic is printed as before.
fn quiet_typed_unwinds() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info
            .payload()
            .downcast_ref::<crate::backend::CudaError>()
            .is_none()
        {
            default(info);
        }
    }));
}

fn dispatch(command: Command) -> CmdResult {
    // `run` saves the running stage's state on the first Ctrl-C (it
    // installs its own handler); every other command just ends.
    if !matches!(command, Command::Run(_)) {
        crate::graph::Cancel::exit_on_sigint();
    }
    match command {
        Command::Validate(args) => validate::run(args),
        Command::Schema(args) => schema::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Run(args) => run::run(args),
        Command::Report(args) => report::run(args),
        Command::Cache(cmd) => cache::run(cmd),
        Command::Equity(args) => equity::run(args),
        Command::Arena(args) => arena::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Fetch(args) => fetch::run(args),
        Command::Export(args) => export::run(args),
        Command::Bench(cmd) => bench::run(cmd),
    }
}

/// Give SIGPIPE back its default action, as a shell tool has it: when the
/// reader of our output goes away (`poker-pipe plan ... | head -1`), the
/// process ends quietly with the signal (a shell shows 141) instead of Rust's
/// ignored SIGPIPE turning the next `println!` into a panic. Nothing is lost
/// by dying there: cache writes are temp-dir-then-rename, as for `kill -9`.
fn restore_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL has no preconditions
    // and runs before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Print a failure's report to stderr and turn the outcome into an exit code.
pub fn finish(result: CmdResult) -> ExitCode {
    match result {
        Ok(exit) => exit.into(),
        Err(failure) => {
            eprintln!("{:?}", failure.report);
            failure.exit.into()
        }
    }
}
