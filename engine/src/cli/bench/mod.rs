//! `poker-pipe bench ...`: benchmarks that print JSON. One file per benchmark;
//! each has a PyTorch or crates.io twin where the notes compare against one.

use crate::error::CmdResult;

#[derive(Debug, clap::Subcommand)]
pub enum Command {}

pub fn run(command: Command) -> CmdResult {
    match command {}
}
