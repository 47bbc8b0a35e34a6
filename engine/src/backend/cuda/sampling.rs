//! Launch wrapper for next-token sampling (greedy, temperature, top-k,
//! top-p), seeded and counter-based so a run is reproducible.

use cudarc::driver::{DevicePtr, DevicePtrMut, PushKernelArg};

use super::check::{grid, int, len_is, need};
use super::{CudaDevice, CudaError};

const SAMPLE_THREADS: u32 = 1024;

/// How to pick the next token. `temperature <= 0` is greedy; `top_k = 0`
/// and `top_p >= 1` switch those filters off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub seed: u64,
    /// Row r draws with counter `counter + r`: advance it by the batch size
    /// every step so no draw repeats.
    pub counter: u64,
}

impl CudaDevice {
    /// One token per row of f32 logits [rows, vocab] into `out` [rows].
    pub fn sample_tokens(
        &self,
        rows: usize,
        vocab: usize,
        params: SamplingParams,
        logits: &impl DevicePtr<f32>,
        out: &mut impl DevicePtrMut<i32>,
    ) -> Result<(), CudaError> {
        let kernel = "sample_tokens";
        len_is(kernel, "logits", logits.len(), rows * vocab)?;
        len_is(kernel, "out", out.len(), rows)?;
        need(kernel, vocab > 0, || "vocab is 0".into())?;
        need(kernel, params.temperature.is_finite(), || {
            format!("temperature {} is not finite", params.temperature)
        })?;
        let v = int(kernel, "vocab", vocab)?;
        let k = int(kernel, "top_k", params.top_k as usize)?;
        let s = &self.stream;
        let (x, _x) = logits.device_ptr(s);
        let (o, _o) = out.device_ptr_mut(s);
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&x)
            .arg(&o)
            .arg(&v)
            .arg(&params.temperature)
            .arg(&k);
        args.arg(&params.top_p)
            .arg(&params.seed)
            .arg(&params.counter);
        self.launch(
            kernel,
            args,
            (grid(kernel, rows, u32::MAX)?, 1, 1),
            SAMPLE_THREADS,
        )
    }
}

/// The sampler's generator on the host, bit for bit as in common.cuh: the
/// CPU reference draws the same numbers.
pub fn uniform01(seed: u64, counter: u64) -> f32 {
    let r = splitmix64(seed ^ splitmix64(counter));
    (r >> 40) as f32 * (1.0 / 16_777_216.0)
}

fn splitmix64(x: u64) -> u64 {
    let mut x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64's published first output for state 0 pins the constants.
    #[test]
    fn splitmix_matches_the_reference_sequence() {
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        let u = uniform01(7, 3);
        assert!((0.0..1.0).contains(&u));
        assert_ne!(uniform01(7, 3), uniform01(7, 4));
    }
}
