//! What the GPU benchmarks share: opening the device named by `--device`
//! (a clear error without a GPU), timing queued work, and measuring the
//! device-to-device copy bandwidth that memory-bound kernels are held to.

use std::time::Instant;

use cudarc::driver::CudaSlice;
use miette::miette;

use crate::backend::Device;
use crate::backend::cuda::CudaDevice;
use crate::error::Failure;

/// The GPU `--device` names; `cpu` is a usage error, a missing driver or GPU
/// the CUDA backend's own diagnostic.
pub fn open(device: Device, bench: &str) -> Result<CudaDevice, Failure> {
    match device {
        Device::Cpu => Err(Failure::user(miette!(
            code = "bench::needs_gpu",
            help = "run with --device cuda (or cuda:N) on a machine with an NVIDIA GPU",
            "`bench {bench}` measures CUDA kernels; it has no CPU variant"
        ))),
        Device::Cuda(n) => CudaDevice::open(n).map_err(|e| Failure::user(miette::Report::new(e))),
    }
}

/// A CUDA error in the middle of a measurement.
pub fn runtime(e: crate::backend::cuda::CudaError) -> Failure {
    Failure::runtime(miette::Report::new(e))
}

/// Seconds per call of `work`, after `warmup` unmeasured calls, over `iters`
/// calls with the queue drained before and after.
pub fn time_per_call(
    dev: &CudaDevice,
    warmup: usize,
    iters: usize,
    mut work: impl FnMut() -> Result<(), Failure>,
) -> Result<f64, Failure> {
    for _ in 0..warmup {
        work()?;
    }
    dev.synchronize().map_err(runtime)?;
    let start = Instant::now();
    for _ in 0..iters {
        work()?;
    }
    dev.synchronize().map_err(runtime)?;
    Ok(start.elapsed().as_secs_f64() / iters.max(1) as f64)
}

/// Device-to-device copy bandwidth in bytes per second (read + write
/// counted), over a buffer of `bytes`.
pub fn copy_bandwidth(dev: &CudaDevice, bytes: usize) -> Result<f64, Failure> {
    let n = bytes / 4;
    let src: CudaSlice<f32> = dev.zeros(n).map_err(runtime)?;
    let mut dst: CudaSlice<f32> = dev.zeros(n).map_err(runtime)?;
    let secs = time_per_call(dev, 2, 10, || {
        dev.stream()
            .memcpy_dtod(&src, &mut dst)
            .map_err(|e| Failure::runtime(miette!("device copy failed: {e}")))
    })?;
    Ok(2.0 * (n * 4) as f64 / secs)
}

/// Uniform values in [-scale, scale) from a fixed seed, as bf16.
pub fn random_bf16(n: usize, seed: u64, scale: f32) -> Vec<half::bf16> {
    random_f32(n, seed, scale)
        .into_iter()
        .map(half::bf16::from_f32)
        .collect()
}

pub fn random_f32(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}
