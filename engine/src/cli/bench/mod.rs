//! `poker-pipe bench ...`: benchmarks that print JSON. One file per benchmark;
//! each has a PyTorch or crates.io twin where the notes compare against one.

use crate::error::CmdResult;

mod adamw;
mod attention;
mod decode;
mod gpu;
mod poker;
mod train;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Seven-card hand evaluations per second.
    #[command(name = "poker-eval")]
    Evaluator(poker::EvalArgs),
    /// Time to generate and label poker training data.
    #[command(name = "poker-data")]
    Dataset(poker::DataArgs),
    /// How often the expert picks the same action under two Monte Carlo seeds.
    #[command(name = "poker-stability")]
    LabelStability(poker::StabilityArgs),
    /// Training steps (forward, backward, AdamW) of a LLaMA on random data.
    Train(train::Args),
    /// Causal flash attention forward and backward on the GPU.
    Attention(attention::Args),
    /// The fused AdamW step on the GPU against the device copy bandwidth.
    Adamw(adamw::Args),
    /// Greedy decoding steps/s against the bandwidth bound, and prefill tokens/s.
    Decode(decode::Args),
}

pub fn run(command: Command) -> CmdResult {
    match command {
        Command::Evaluator(args) => poker::evaluator(args),
        Command::Dataset(args) => poker::data(args),
        Command::LabelStability(args) => poker::stability(args),
        Command::Train(args) => train::run(args),
        Command::Attention(args) => attention::run(args),
        Command::Adamw(args) => adamw::run(args),
        Command::Decode(args) => decode::run(args),
    }
}
