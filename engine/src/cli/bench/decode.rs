//! `poker-pipe bench decode`: greedy decoding of a LLaMA with random weights,
//! a batch of distinct prompts at a time, decode steps per second against
//! the memory-bandwidth bound. Each step must read every weight once
//! whatever the batch, so the bound is the measured copy bandwidth over the
//! model's weight bytes (bf16 on CUDA, f32 on the CPU). It also reports the
//! prefill's tokens per second, which is what a decision at the table costs
//! on the CPU. Twin: engine/benches/decode_twin.py (transformers generate
//! with a static cache, same config, bf16 on CUDA).

use std::time::Instant;

use miette::miette;

use super::gpu;
use crate::backend::{Backend, Cpu, CudaBackend, Device, Dtype, Sampling};
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
    /// Sequences decoded together, each with its own prompt.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[arg(long, default_value = "cuda")]
    pub device: Device,
    #[arg(long, value_enum, default_value = "json")]
    pub format: super::train::Format,
}

pub fn run(args: Args) -> CmdResult {
    if args.prompt_len == 0 || args.new_tokens < 2 || args.batch == 0 {
        return Err(Failure::user(miette!(
            code = "bench::shape",
            help = "use --prompt-len >= 1, --new-tokens >= 2 and --batch >= 1",
            "nothing to measure with prompt {}, {} new tokens and batch {}",
            args.prompt_len,
            args.new_tokens,
            args.batch
        )));
    }
    let cfg = LlamaConfig::load(&args.model_config).map_err(Failure::user)?;
    let json = match args.device {
        Device::Cpu => {
            crate::backend::cpu::warm_up();
            let copy = host_copy_bandwidth(1 << 30);
            measure(&Cpu, &cfg, &args, copy, 4.0, "cpu".to_string())?
        }
        Device::Cuda(_) => {
            // Open the raw device first for the bandwidth probe and the
            // clear no-GPU error, then the backend on the same ordinal.
            let dev = gpu::open(args.device, "decode")?;
            let ordinal = dev.ordinal();
            let copy = gpu::copy_bandwidth(&dev, 1 << 30)?;
            drop(dev);
            let be = CudaBackend::open(ordinal, Dtype::Bf16)
                .map_err(|e| Failure::user(miette::Report::new(e)))?;
            let name = be.device_handle().name().to_string();
            measure(&be, &cfg, &args, copy, 2.0, name)?
        }
    };
    println!("{json}");
    Ok(Exit::Ok)
}

/// Times a prefill with one token, then with all `new_tokens`: the
/// difference is the decode steps alone. `weight_bytes` is what one
/// parameter takes on this backend.
fn measure<B: Backend>(
    be: &B,
    cfg: &LlamaConfig,
    args: &Args,
    copy: f64,
    weight_bytes: f64,
    device: String,
) -> Result<serde_json::Value, Failure> {
    let mut model = Llama::random(be, cfg.clone(), 0).map_err(Failure::user)?;
    let params: usize = model.params_mut().iter().map(|p| p.numel()).sum();
    // Distinct prompts, or generation would prefill one and copy it.
    let prompts: Vec<Vec<u32>> = (0..args.batch)
        .map(|b| {
            (0..args.prompt_len)
                .map(|i| ((i * 7919 + b * 104_729) % cfg.vocab_size.max(1)) as u32)
                .collect()
        })
        .collect();
    let opts = |n| GenerateOptions {
        max_new_tokens: n,
        sampling: Sampling::GREEDY,
        seed: 0,
        eos: vec![],
        pad_id: 0,
    };
    let time = |n: usize| {
        let start = Instant::now();
        let out = generate(be, &model, &prompts, &opts(n));
        be.download(&be.zeros(1));
        (start.elapsed().as_secs_f64(), out)
    };
    time(2);
    let (short, _) = time(1);
    let (long, _) = time(args.new_tokens);
    let per_step = (long - short) / (args.new_tokens - 1) as f64;
    let bound = copy / (weight_bytes * params as f64);
    Ok(serde_json::json!({
        "bench": "decode",
        "device": device,
        "params": params,
        "batch": args.batch,
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
        "prefill_s": short,
        "prefill_tokens_per_s": (args.batch * args.prompt_len) as f64 / short,
        "steps_per_s": 1.0 / per_step,
        "tokens_per_s": args.batch as f64 / per_step,
        "bound_steps_per_s": bound,
        "fraction_of_bound": (1.0 / per_step) / bound,
        "copy_gb_per_s": copy / 1e9,
    }))
}

/// Host memory copy bandwidth in bytes per second (read + write counted),
/// over buffers of `bytes` filled with non-zero values, best of five.
fn host_copy_bandwidth(bytes: usize) -> f64 {
    let n = bytes / 4;
    let src: Vec<f32> = (0..n).map(|i| (i % 251) as f32 + 0.5).collect();
    let mut dst = vec![0.0f32; n];
    dst.copy_from_slice(&src);
    let best = (0..5)
        .map(|_| {
            let start = Instant::now();
            dst.copy_from_slice(&src);
            std::hint::black_box(&dst);
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    2.0 * (n * 4) as f64 / best
}
