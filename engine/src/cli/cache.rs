//! PLACEHOLDER: replaced by the helper that owns this subcommand.

use crate::error::{CmdResult, Failure};

#[derive(Debug, clap::Subcommand)]
pub enum Command {}

pub fn run(command: Command) -> CmdResult {
    match command {}
}

#[allow(dead_code)]
fn unused() -> Failure {
    Failure::runtime(miette::miette!("not built yet"))
}
