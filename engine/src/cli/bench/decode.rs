//! `poker-pipe bench decode`: batch-1 greedy decoding of a LLaMA with random
//! weights on the CUDA backend, tokens per second against the memory-bandwidth
//! bound. Each new token must read every weight once, so the bound is the
//! measured device copy bandwidth over the model's weight bytes in bf16 (2
//! bytes per parameter). Twin: engine/benches/decode_twin.py (transformers
//! generate with a static cache, bf16, same config).

use std::time::Instant;

use miette::miette;

use super::gpu;
use crate::backend::{Backend, CudaBackend, Device, Dtype, Sampling};
use crate::error::{CmdResult, Exit, Failure};
use crate::model::generate::{GenerateOptions, generate};
use crate::model::{Llama, LlamaConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// An HF config.json giving the architecture.
    #[arg(long)]
    pub model_config: std::path::PathBuf,
    #[arg(long, default_value_t = 128)]
    pub prompt_len: usize,
    #[arg(long, default_value_t = 64)]
    pub new_tokens: usize,
    #[arg(long, default_value = "cuda")]
    pub device: Device,
    #[arg(long, value_enum, default_value = "json")]
    pub format: super::train::Format,
}

pub fn run(args: Args) -> CmdResult {
    if args.prompt_len == 0 || args.new_tokens < 2 {
        return Err(Failure::user(miette!(
            code = "bench::shape",
            help = "use --prompt-len >= 1 and --new-tokens >= 2",
            "nothing to measure with prompt {} and {} new tokens",
            args.prompt_len,
            args.new_tokens
        )));
    }
    // Open the raw device first for the bandwidth probe and the clear
    // no-GPU error, then the backend on the same ordinal.
    let dev = gpu::open(args.device, "decode")?;
    let ordinal = dev.ordinal();
    let copy = gpu::copy_bandwidth(&dev, 1 << 30)?;
    drop(dev);
    let be = CudaBackend::open(ordinal, Dtype::Bf16)
        .map_err(|e| Failure::user(miette::Report::new(e)))?;
    let cfg = LlamaConfig::load(&args.model_config).map_err(Failure::user)?;
    let mut model = Llama::random(&be, cfg.clone(), 0).map_err(Failure::user)?;
    let params: usize = model.params_mut().iter().map(|p| p.numel()).sum();
    let prompt: Vec<u32> = (0..args.prompt_len)
        .map(|i| (i * 7919 % cfg.vocab_size.max(1)) as u32)
        .collect();
    let opts = |n| GenerateOptions {
        max_new_tokens: n,
        sampling: Sampling::GREEDY,
        seed: 0,
        eos: vec![],
        pad_id: 0,
    };
    // The prefill and one token, then prefill and all tokens: the difference
    // is the decode steps alone.
    let time = |n: usize| {
        let start = Instant::now();
        let out = generate(&be, &model, std::slice::from_ref(&prompt), &opts(n));
        be.download(&be.zeros(1));
        (start.elapsed().as_secs_f64(), out)
    };
    time(2);
    let (short, _) = time(1);
    let (long, _) = time(args.new_tokens);
    let per_token = (long - short) / (args.new_tokens - 1) as f64;
    let weight_bytes = 2.0 * params as f64;
    let bound = copy / weight_bytes;
    let json = serde_json::json!({
        "bench": "decode",
        "device": be.device_handle().name(),
        "params": params,
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
        "tokens_per_s": 1.0 / per_token,
        "bound_tokens_per_s": bound,
        "fraction_of_bound": (1.0 / per_token) / bound,
        "copy_gb_per_s": copy / 1e9,
    });
    println!("{json}");
    Ok(Exit::Ok)
}
