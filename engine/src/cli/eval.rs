//! PLACEHOLDER: replaced by the helper that owns this subcommand.

use crate::error::{CmdResult, Failure};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> CmdResult {
    Err(Failure::runtime(miette::miette!("not built yet")))
}
