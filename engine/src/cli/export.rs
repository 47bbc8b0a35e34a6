//! `poker-pipe export MODEL --format gguf|hf --out PATH`: a model with its
//! LoRA adapter merged in, for deployment: one GGUF file for llama.cpp and
//! Ollama, or an HF folder of safetensors (sharded with an index above
//! 5 GB). MODEL is a stage output (`runs/<pipeline>/<stage>`), a model
//! folder, `hf:owner/name` or `gguf:FILE`. Runs on the CPU in f32.

use std::path::PathBuf;

use crate::backend::Cpu;
use crate::error::{CmdResult, Exit, Failure};
use crate::model::ModelError;
use crate::model::export::{self, DEFAULT_SHARD_BYTES, Quant};
use crate::model::source;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A stage output, a model folder, `hf:owner/name` or `gguf:FILE`.
    pub model: String,
    /// What to write.
    #[arg(long, value_enum)]
    pub format: Format,
    /// The GGUF file, or the folder of an HF export.
    #[arg(long)]
    pub out: PathBuf,
    /// How a GGUF export stores its matrices (norms stay f32).
    #[arg(long, value_enum, default_value = "f16")]
    pub quant: Quant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Gguf,
    Hf,
}

fn failure(err: ModelError) -> Failure {
    match err {
        ModelError::Write { .. } => Failure::runtime(err),
        other => Failure::user(other),
    }
}

pub fn run(args: Args) -> CmdResult {
    let dir = source::local_dir(&args.model).map_err(Failure::user)?;
    let merged = export::merged(&Cpu, &dir).map_err(failure)?;
    match args.format {
        Format::Gguf => export::write_gguf(&merged, &args.out, args.quant),
        Format::Hf => export::write_hf(&merged, &args.out, DEFAULT_SHARD_BYTES),
    }
    .map_err(failure)?;
    println!("wrote {}", args.out.display());
    Ok(Exit::Ok)
}
