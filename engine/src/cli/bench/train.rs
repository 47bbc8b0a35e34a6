//! `poker-pipe bench train`: full training steps (forward, backward,
//! clipping, AdamW) of a LLaMA with random weights on random tokens. The
//! PyTorch twin is engine/benches/train_twin.py (same shapes, same thread
//! count); engine/PERF.md records the comparison.

use std::path::PathBuf;
use std::time::Instant;

use miette::miette;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::backend::{Backend, Device, OnBackend};
use crate::cli::device::on_device;
use crate::error::{CmdResult, Exit, Failure};
use crate::model::lora::{self, LoraConfig};
use crate::model::{Batch, Llama, LlamaConfig, TrainPass};
use crate::train::adamw::{AdamW, AdamWConfig};
use crate::train::clip::clip_grad_norm;

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
    on_device(args.device, Bench { args, cfg })
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
    let mut model = Llama::random(be, cfg.clone(), 0).map_err(Failure::user)?;
    match args.lora_rank {
        Some(rank) => {
            let lc = LoraConfig {
                rank,
                alpha: 2.0 * rank as f32,
                dropout: 0.0,
                targets: crate::model::llama::PROJECTIONS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                rslora: false,
            };
            lora::attach(be, &mut model, &lc, 0).map_err(Failure::user)?;
        }
        None => {
            for p in model.params_mut() {
                p.set_trainable(be, true);
            }
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (b, t) = (args.batch, args.seq);
    let ids: Vec<u32> = (0..b * t)
        .map(|_| rng.random_range(0..cfg.vocab_size as u32))
        .collect();
    let mut targets = vec![0; b * t];
    let mut weights = vec![0.0; b * t];
    for r in 0..b {
        for j in 0..t - 1 {
            targets[r * t + j] = ids[r * t + j + 1];
            weights[r * t + j] = 1.0 / (b * (t - 1)) as f32;
        }
    }
    let batch = Batch::dense(ids, b);
    let mut opt = AdamW::new(AdamWConfig::default());
    let mut times = Vec::with_capacity(args.steps);
    for step in 0..=args.steps {
        let start = Instant::now();
        model.zero_grads(be);
        let pass = TrainPass {
            seed: step as u64,
            checkpoint: args.checkpoint,
        };
        let loss = model.loss_backward(be, &batch, &targets, &weights, pass);
        if !loss.is_finite() {
            return Err(Failure::runtime(miette!("loss is {loss} at step {step}")));
        }
        clip_grad_norm(be, &mut model.params_mut(), 1.0);
        opt.update(be, model.params_mut(), 1e-4);
        if step > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    let total: f64 = times.iter().sum();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let json = serde_json::json!({
        "tokens_per_s": (b * t * args.steps) as f64 / total,
        "step_ms_median": median * 1e3,
        "peak_mem_bytes": peak_rss_bytes(),
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
