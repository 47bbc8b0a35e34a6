//! Every kernel against a plainly written f64 CPU reference, on fresh random
//! inputs, with outputs poisoned (NaN) before each launch so an unwritten
//! element fails. Tolerances are norm-wise relative errors,
//! ||got - want|| / ||want||: bf16 outputs < 1e-2, f32 outputs < 1e-4.
//!
//! Each test opens GPU 0 and, when there is none (or no driver), prints
//! `SKIPPED` with the reason and passes: CI has no GPU; kernels/gpu-suite.sh
//! runs these on one. Inputs are drawn from a seed printed by every test and
//! taken from POKER_PIPE_TEST_SEED when set, to replay a failure.

#![allow(clippy::unwrap_used)]

mod attention;
mod layers;
mod optim;
mod reference;
mod sampling;

use cudarc::driver::CudaSlice;
use half::bf16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::CudaDevice;

/// GPU 0, or `None` after printing why the test is skipped.
pub(crate) fn gpu(test: &str) -> Option<CudaDevice> {
    match CudaDevice::open(0) {
        Ok(device) => Some(device),
        Err(error) => {
            eprintln!("SKIPPED {test}: no usable GPU ({error})");
            None
        }
    }
}

/// A fresh generator; its seed is printed so a failure can be replayed.
pub(crate) fn rng(test: &str) -> ChaCha8Rng {
    let seed = std::env::var("POKER_PIPE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{test}: POKER_PIPE_TEST_SEED={seed}");
    ChaCha8Rng::seed_from_u64(seed)
}

/// Uniform values in [-scale, scale), rounded to bf16.
pub(crate) fn random_bf16(rng: &mut ChaCha8Rng, len: usize, scale: f32) -> Vec<bf16> {
    (0..len)
        .map(|_| bf16::from_f32(rng.random_range(-scale..scale)))
        .collect()
}

pub(crate) fn random_f32(rng: &mut ChaCha8Rng, len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-scale..scale)).collect()
}

pub(crate) fn widen(x: &[bf16]) -> Vec<f64> {
    x.iter().map(|v| f64::from(v.to_f32())).collect()
}

pub(crate) fn widen32(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

/// A device buffer of NaN: whatever the kernel does not write stays NaN.
pub(crate) fn poisoned_bf16(device: &CudaDevice, len: usize) -> CudaSlice<bf16> {
    device.upload(&vec![bf16::NAN; len]).unwrap()
}

pub(crate) fn poisoned_f32(device: &CudaDevice, len: usize) -> CudaSlice<f32> {
    device.upload(&vec![f32::NAN; len]).unwrap()
}

/// ||got - want|| / ||want||; infinite when anything is not finite.
pub(crate) fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    if got.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let diff: f64 = got.iter().zip(want).map(|(g, w)| (g - w) * (g - w)).sum();
    let norm: f64 = want.iter().map(|w| w * w).sum();
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

/// bf16 outputs are within 1e-2 of the reference.
pub const BF16_TOL: f64 = 1e-2;
/// f32 outputs are within 1e-4 of the reference.
pub const F32_TOL: f64 = 1e-4;

pub(crate) fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    let err = rel_err(got, want);
    eprintln!("  {what}: rel err {err:.3e} (bound {tol:.0e})");
    assert!(
        err < tol,
        "{what}: relative error {err:.3e} exceeds {tol:.0e}"
    );
}

pub(crate) fn bf16_out(device: &CudaDevice, buffer: &CudaSlice<bf16>) -> Vec<f64> {
    widen(&device.download(buffer).unwrap())
}

pub(crate) fn f32_out(device: &CudaDevice, buffer: &CudaSlice<f32>) -> Vec<f64> {
    widen32(&device.download(buffer).unwrap())
}

/// Opening again with the same cache folder takes every module from it.
#[test]
fn second_open_reads_every_module_from_the_ptx_cache() {
    let Some(first) = gpu("ptx cache") else {
        return;
    };
    drop(first);
    let dir = tempfile::tempdir().unwrap();
    let cache = super::PtxCache::new(dir.path());
    let first = CudaDevice::open_with_cache(0, Some(cache.clone())).unwrap();
    assert!(
        first
            .ptx_origins()
            .iter()
            .all(|(_, o)| *o == super::PtxOrigin::Compiled)
    );
    drop(first);
    let second = CudaDevice::open_with_cache(0, Some(cache)).unwrap();
    assert_eq!(
        second.ptx_origins().len(),
        poker_pipe_kernels::MODULES.len()
    );
    assert!(
        second
            .ptx_origins()
            .iter()
            .all(|(_, o)| *o == super::PtxOrigin::Cache)
    );
    eprintln!("{second:?}");
}

/// The memory pool counts a buffer while it lives, and the peak keeps it
/// after it is freed. `bench train` and every stage's `memory.json` read
/// these figures on a GPU. Other tests may hold or free GPU memory at the
/// same time, so only what this test's own buffer implies is asserted.
#[test]
fn the_memory_pool_counts_buffers_and_their_peak() {
    let test = "the_memory_pool_counts_buffers_and_their_peak";
    let Some(dev) = gpu(test) else {
        return;
    };
    if dev.pool_bytes().unwrap().is_none() {
        eprintln!("SKIPPED {test}: this driver allocates outside a memory pool");
        return;
    }
    dev.reset_pool_peak().unwrap();
    let bytes = 64u64 << 20;
    let values: Vec<f32> = (0..bytes / 4).map(|i| (i % 977) as f32).collect();
    let buf = dev.upload(&values).unwrap();
    dev.stream.synchronize().unwrap();
    let held = dev.pool_bytes().unwrap().unwrap();
    assert!(held.current >= bytes, "a 64 MiB buffer is held: {held:?}");
    assert!(held.peak >= held.current, "{held:?}");
    drop(buf);
    dev.stream.synchronize().unwrap();
    let freed = dev.pool_bytes().unwrap().unwrap();
    assert!(freed.peak >= bytes, "the peak forgot the buffer: {freed:?}");
    dev.reset_pool_peak().unwrap();
    let reset = dev.pool_bytes().unwrap().unwrap();
    assert!(reset.peak >= reset.current, "{reset:?}");
}
