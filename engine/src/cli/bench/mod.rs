//! `poker-pipe bench ...`: benchmarks that print JSON. One file per benchmark;
//! each has a PyTorch or crates.io twin where the notes compare against one.

use crate::error::CmdResult;

mod train;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Training steps (forward, backward, AdamW) of a LLaMA on random data.
    Train(train::Args),
}

pub fn run(command: Command) -> CmdResult {
    match command {
        Command::Train(args) => train::run(args),
    }
}
