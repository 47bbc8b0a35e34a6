//! `poker-pipe bench train`: full training steps (forward, backward,
//! clipping, AdamW) of a LLaMA with random weights on random tokens. The
//! PyTorch twin is engine/benches/train_twin.py (same shapes, same thread
//! count); engine/PERF.md records the comparison.

use std::path::PathBuf;
use std::time::Instant;

use miette::miette;

use crate::backend::{Backend, Device, Dtype, OnBackend};
use crate::cli::device::on_device;
use crate::error::{CmdResult, Exit, Failure};
use crate::model::LlamaConfig;
use crate::model::memory::estimate;
use crate::train::step_memory::{StepRunner, StepSetup};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// An HF config.json giving the architecture.
    #[arg(long)]
    pub model_config: PathBuf,
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// Measured steps (one more runs first, unmeasured, as warm-up).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Train a LoRA of this rank on all projections instead of every weight.
    #[arg(long)]
    pub lora_rank: Option<usize>,
    /// Recompute each block in backward (activation checkpointing).
    #[arg(long)]
    pub checkpoint: bool,
    /// Worker threads (default: rayon's, i.e. RAYON_NUM_THREADS or all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// Storage of the model's weights: `f32`, or `bf16` (frozen weights in
    /// bfloat16, rounding as the CUDA kernels do, on any device).
    #[arg(long, default_value = "f32")]
    pub dtype: Dtype,
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
}

pub fn run(args: Args) -> CmdResult {
    if args.batch == 0 || args.seq < 2 || args.steps == 0 {
        return Err(Failure::user(miette!(
            code = "bench::shape",
            help = "use --batch >= 1, --seq >= 2, --steps >= 1",
            "nothing to measure with batch {}, seq {}, steps {}",
            args.batch,
            args.seq,
            args.steps
        )));
    }
    if let Some(threads) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .map_err(|e| Failure::runtime(miette!("cannot start {threads} threads: {e}")))?;
    }
    let cfg = LlamaConfig::load(&args.model_config).map_err(Failure::user)?;
    on_device(args.device, args.dtype, Bench { args, cfg })
}

/// The benchmark, waiting for the backend it measures.
struct Bench {
    args: Args,
    cfg: LlamaConfig,
}

impl OnBackend for Bench {
    type Output = CmdResult;

    fn run<B: Backend>(self, be: &B) -> CmdResult {
        measure(be, &self.args, &self.cfg)
    }
}

fn measure<B: Backend>(be: &B, args: &Args, cfg: &LlamaConfig) -> CmdResult {
    let setup = StepSetup {
        lora_rank: args.lora_rank,
        batch: args.batch,
        seq: args.seq,
        checkpoint: args.checkpoint,
    };
    let mut runner = StepRunner::new(be, cfg, setup).map_err(Failure::user)?;
    let mut times = Vec::with_capacity(args.steps);
    for step in 0..=args.steps {
        let start = Instant::now();
        let loss = runner.step(be, step as u64);
        if !loss.is_finite() {
            return Err(Failure::runtime(miette!("loss is {loss} at step {step}")));
        }
        if step > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    let total: f64 = times.iter().sum();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let (b, t) = (args.batch, args.seq);
    // On the CPU the counting allocator sees every buffer; a GPU's are
    // counted by its memory pool, and where the driver allocates outside a
    // pool no figure is given rather than the host's.
    let on_host = be.device() == Device::Cpu;
    let tracked = on_host || be.device_bytes().is_some();
    let json = serde_json::json!({
        "tokens_per_s": (b * t * args.steps) as f64 / total,
        "step_ms_median": median * 1e3,
        "peak_bytes": tracked.then_some(runner.memory.peak),
        "measured_bytes": tracked.then_some(runner.memory),
        "planned_bytes": estimate(&setup.workload(cfg, be.weight_dtype(), !on_host)),
        "peak_rss_bytes": peak_rss_bytes(),
    });
    println!("{json}");
    Ok(Exit::Ok)
}

/// The process's peak resident set (VmHWM), 0 where /proc is unavailable.
fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
