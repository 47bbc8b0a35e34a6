//! `poker-pipe bench attention`: causal flash attention forward and backward
//! (GQA) on the GPU. Twin: engine/benches/attention_twin.py (torch SDPA, same
//! shapes). FLOPs count the causal half only: forward 2 GEMMs of
//! B*H*T*T/2*D multiply-adds each = 2*B*H*T^2*D; backward 5 such GEMMs = 2.5x.

use half::bf16;

use super::gpu;
use crate::backend::Device;
use crate::backend::cuda::AttentionShape;
use crate::error::{CmdResult, Exit};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Sequence lengths to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "2048,4096")]
    pub seq: Vec<usize>,
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[arg(long, default_value_t = 32)]
    pub heads: usize,
    #[arg(long, default_value_t = 8)]
    pub kv_heads: usize,
    /// 64 or 128.
    #[arg(long, default_value_t = 128)]
    pub head_dim: usize,
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    #[arg(long, default_value = "cuda")]
    pub device: Device,
    #[arg(long, value_enum, default_value = "json")]
    pub format: super::train::Format,
}

pub fn run(args: Args) -> CmdResult {
    let dev = gpu::open(args.device, "attention")?;
    let mut rows = Vec::new();
    for &seq in &args.seq {
        let shape = AttentionShape {
            batch: args.batch,
            seq,
            q_heads: args.heads,
            kv_heads: args.kv_heads,
            head_dim: args.head_dim,
        };
        let up = |n: usize, seed: u64| dev.upload(&gpu::random_bf16(n, seed, 1.0));
        let q = up(shape.q_len(), 1).map_err(gpu::runtime)?;
        let k = up(shape.kv_len(), 2).map_err(gpu::runtime)?;
        let v = up(shape.kv_len(), 3).map_err(gpu::runtime)?;
        let d_o = up(shape.q_len(), 4).map_err(gpu::runtime)?;
        let starts = dev.zeros::<i32>(shape.batch).map_err(gpu::runtime)?;
        let mut o = dev.zeros::<bf16>(shape.q_len()).map_err(gpu::runtime)?;
        let mut lse = dev.zeros::<f32>(shape.lse_len()).map_err(gpu::runtime)?;
        let mut dq = dev.zeros::<bf16>(shape.q_len()).map_err(gpu::runtime)?;
        let mut dk = dev.zeros::<bf16>(shape.kv_len()).map_err(gpu::runtime)?;
        let mut dv = dev.zeros::<bf16>(shape.kv_len()).map_err(gpu::runtime)?;
        let fwd = gpu::time_per_call(&dev, 3, args.iters, || {
            dev.flash_attn_fwd(shape, &q, &k, &v, &starts, &mut o, &mut lse)
                .map_err(gpu::runtime)
        })?;
        let bwd = gpu::time_per_call(&dev, 3, args.iters, || {
            dev.flash_attn_bwd(
                shape, &q, &k, &v, &o, &d_o, &lse, &starts, &mut dq, &mut dk, &mut dv,
            )
            .map_err(gpu::runtime)
        })?;
        let flops_fwd = 2.0 * (args.batch * args.heads * seq * seq * args.head_dim) as f64;
        let flops_bwd = 2.5 * flops_fwd;
        rows.push(serde_json::json!({
            "seq": seq,
            "fwd_ms": fwd * 1e3,
            "bwd_ms": bwd * 1e3,
            "fwd_tflops": flops_fwd / fwd / 1e12,
            "bwd_tflops": flops_bwd / bwd / 1e12,
        }));
    }
    let json = serde_json::json!({
        "bench": "attention",
        "device": dev.name(),
        "batch": args.batch,
        "heads": args.heads,
        "kv_heads": args.kv_heads,
        "head_dim": args.head_dim,
        "causal": true,
        "results": rows,
    });
    println!("{json}");
    Ok(Exit::Ok)
}
