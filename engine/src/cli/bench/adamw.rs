//! `poker-pipe bench adamw`: the fused AdamW step over one flat tensor (f32
//! master, m, v and gradient, bf16 parameter copy). It is memory bound: per
//! element it reads 16 bytes (master, m, v, grad) and writes 14 (master, m,
//! v, bf16 param), 30 bytes in all, and is held to the measured
//! device-to-device copy bandwidth. Twin: engine/benches/adamw_twin.py
//! (torch.optim.AdamW(fused=True) on the same element count).

use half::bf16;

use super::gpu;
use crate::backend::AdamWStep;
use crate::backend::Device;
use crate::error::{CmdResult, Exit};

/// Bytes one element moves: see the module docs.
const BYTES_PER_ELEMENT: f64 = 30.0;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Elements in the tensor (default 2^28: 7.5 GiB of optimizer traffic).
    #[arg(long, default_value_t = 1 << 28)]
    pub elements: usize,
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    #[arg(long, default_value = "cuda")]
    pub device: Device,
    #[arg(long, value_enum, default_value = "json")]
    pub format: super::train::Format,
}

pub fn run(args: Args) -> CmdResult {
    let dev = gpu::open(args.device, "adamw")?;
    let n = args.elements.max(1);
    let mut master = dev
        .upload(&gpu::random_f32(n, 1, 1.0))
        .map_err(gpu::runtime)?;
    let grad = dev
        .upload(&gpu::random_f32(n, 2, 1.0))
        .map_err(gpu::runtime)?;
    let mut m = dev.zeros::<f32>(n).map_err(gpu::runtime)?;
    let mut v = dev.zeros::<f32>(n).map_err(gpu::runtime)?;
    let mut param = dev.zeros::<bf16>(n).map_err(gpu::runtime)?;
    let unit = dev.upload(&[1.0f32]).map_err(gpu::runtime)?;
    let mut step = 0;
    let secs = gpu::time_per_call(&dev, 3, args.iters, || {
        step += 1;
        let hyper = AdamWStep {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            step,
        };
        dev.adamw_step(hyper, &mut master, &mut m, &mut v, &mut param, &grad, &unit)
            .map_err(gpu::runtime)
    })?;
    let copy = gpu::copy_bandwidth(&dev, n * 4)?;
    let achieved = BYTES_PER_ELEMENT * n as f64 / secs;
    let json = serde_json::json!({
        "bench": "adamw",
        "device": dev.name(),
        "elements": n,
        "ms": secs * 1e3,
        "gb_per_s": achieved / 1e9,
        "copy_gb_per_s": copy / 1e9,
        "fraction_of_copy": achieved / copy,
    });
    println!("{json}");
    Ok(Exit::Ok)
}
