//! Launch wrappers for the fused cross-entropy over one chunk of token rows.
//! The caller computes the LM-head logits for a chunk of rows in bf16 [rows,
//! vocab], calls `cross_entropy_fwd`, then (training) `cross_entropy_bwd`,
//! which turns the same buffer into d(loss)/d(logits) in place, ready for the
//! two backward GEMMs. No f32 [B, T, V] tensor exists at any point.

use cudarc::driver::{DevicePtr, DevicePtrMut, PushKernelArg};
use half::bf16;

use super::check::{grid, int, len_is};
use super::{CudaDevice, CudaError};

const CE_THREADS: u32 = 512;

impl CudaDevice {
    /// Per row: lse = logsumexp(logits), loss = weight * (lse - logits[target]).
    /// Rows with weight 0 or a target outside [0, vocab) get loss 0.
    #[allow(clippy::too_many_arguments)]
    pub fn cross_entropy_fwd(
        &self,
        rows: usize,
        vocab: usize,
        logits: &impl DevicePtr<bf16>,
        targets: &impl DevicePtr<i32>,
        weights: &impl DevicePtr<f32>,
        lse: &mut impl DevicePtrMut<f32>,
        loss: &mut impl DevicePtrMut<f32>,
    ) -> Result<(), CudaError> {
        let kernel = "cross_entropy_fwd";
        len_is(kernel, "logits", logits.len(), rows * vocab)?;
        len_is(kernel, "targets", targets.len(), rows)?;
        len_is(kernel, "weights", weights.len(), rows)?;
        len_is(kernel, "lse", lse.len(), rows)?;
        len_is(kernel, "loss", loss.len(), rows)?;
        let v = int(kernel, "vocab", vocab)?;
        let s = &self.stream;
        let (x, _x) = logits.device_ptr(s);
        let (t, _t) = targets.device_ptr(s);
        let (w, _w) = weights.device_ptr(s);
        let (l, _l) = lse.device_ptr_mut(s);
        let (o, _o) = loss.device_ptr_mut(s);
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&x).arg(&t).arg(&w).arg(&l).arg(&o).arg(&v);
        self.launch(
            kernel,
            args,
            (grid(kernel, rows, u32::MAX)?, 1, 1),
            CE_THREADS,
        )
    }

    /// logits <- weight * scale * (softmax(logits) - onehot(target)), in place,
    /// from the forward's lse. `scale` is typically 1 / (number of counted
    /// tokens in the whole batch).
    #[allow(clippy::too_many_arguments)]
    pub fn cross_entropy_bwd(
        &self,
        rows: usize,
        vocab: usize,
        logits: &mut impl DevicePtrMut<bf16>,
        targets: &impl DevicePtr<i32>,
        weights: &impl DevicePtr<f32>,
        lse: &impl DevicePtr<f32>,
        scale: f32,
    ) -> Result<(), CudaError> {
        let kernel = "cross_entropy_bwd";
        len_is(kernel, "logits", logits.len(), rows * vocab)?;
        len_is(kernel, "targets", targets.len(), rows)?;
        len_is(kernel, "weights", weights.len(), rows)?;
        len_is(kernel, "lse", lse.len(), rows)?;
        let v = int(kernel, "vocab", vocab)?;
        let s = &self.stream;
        let (x, _x) = logits.device_ptr_mut(s);
        let (t, _t) = targets.device_ptr(s);
        let (w, _w) = weights.device_ptr(s);
        let (l, _l) = lse.device_ptr(s);
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&x).arg(&t).arg(&w).arg(&l).arg(&scale).arg(&v);
        self.launch(
            kernel,
            args,
            (grid(kernel, rows, u32::MAX)?, 1, 1),
            CE_THREADS,
        )
    }

    /// entropy[r] = lse[r] - sum_v softmax(logits[r])[v] * logits[r, v], from
    /// the forward's lse.
    pub fn softmax_entropy(
        &self,
        rows: usize,
        vocab: usize,
        logits: &impl DevicePtr<bf16>,
        lse: &impl DevicePtr<f32>,
        entropy: &mut impl DevicePtrMut<f32>,
    ) -> Result<(), CudaError> {
        let kernel = "softmax_entropy";
        len_is(kernel, "logits", logits.len(), rows * vocab)?;
        len_is(kernel, "lse", lse.len(), rows)?;
        len_is(kernel, "entropy", entropy.len(), rows)?;
        let v = int(kernel, "vocab", vocab)?;
        let s = &self.stream;
        let (x, _x) = logits.device_ptr(s);
        let (l, _l) = lse.device_ptr(s);
        let (e, _e) = entropy.device_ptr_mut(s);
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&x).arg(&l).arg(&e).arg(&v);
        self.launch(
            kernel,
            args,
            (grid(kernel, rows, u32::MAX)?, 1, 1),
            CE_THREADS,
        )
    }
}
