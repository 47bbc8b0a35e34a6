//! `poker-pipe bench ...`: benchmarks that print JSON. One file per benchmark;
//! each has a PyTorch or crates.io twin where the notes compare against one.

use crate::error::CmdResult;

mod poker;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Seven-card hand evaluations per second.
    PokerEval(poker::EvalArgs),
    /// Time to generate and label poker training data.
    PokerData(poker::DataArgs),
    /// How often the expert picks the same action under two Monte Carlo seeds.
    PokerStability(poker::StabilityArgs),
}

pub fn run(command: Command) -> CmdResult {
    match command {
        Command::PokerEval(args) => poker::evaluator(args),
        Command::PokerData(args) => poker::data(args),
        Command::PokerStability(args) => poker::stability(args),
    }
}
