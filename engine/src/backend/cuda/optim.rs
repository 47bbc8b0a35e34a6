//! Launch wrappers for the optimizer: the global gradient norm (with the
//! clip factor left on the device) and the fused AdamW step.

use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, PushKernelArg};
use half::bf16;

use super::check::{grid, int, len_is, long, need};
use super::{CudaDevice, CudaError};
use crate::backend::AdamWStep;

const GN_THREADS: u32 = 256;
/// Partial sums per gradient tensor at most; enough blocks to fill the GPU.
const GN_MAX_BLOCKS: usize = 1024;
const ADAMW_THREADS: u32 = 256;

impl AdamWStep {
    /// (1 - beta1^t, 1 - beta2^t), computed in f64 so late steps stay exact.
    pub fn bias_corrections(&self) -> (f32, f32) {
        let t = i32::try_from(self.step).unwrap_or(i32::MAX);
        (
            (1.0 - f64::from(self.beta1).powi(t)) as f32,
            (1.0 - f64::from(self.beta2).powi(t)) as f32,
        )
    }
}

/// One gradient tensor for the global norm.
pub enum GradRef<'a> {
    F32(&'a CudaSlice<f32>),
    Bf16(&'a CudaSlice<bf16>),
}

impl CudaDevice {
    /// out[0] = sqrt(sum of squares over every tensor), out[1] = the clip
    /// factor min(1, max_norm / (norm + 1e-6)) (1 when max_norm <= 0) that
    /// `adamw_step` takes as its gradient scale.
    pub fn grad_norm(
        &self,
        grads: &[GradRef<'_>],
        max_norm: f32,
        out: &mut impl DevicePtrMut<f32>,
    ) -> Result<(), CudaError> {
        let finish = "grad_norm_finish";
        len_is(finish, "out", out.len(), 2)?;
        let blocks: Vec<usize> = grads
            .iter()
            .map(|g| {
                let len = match g {
                    GradRef::F32(x) => x.len(),
                    GradRef::Bf16(x) => x.len(),
                };
                len.div_ceil(GN_THREADS as usize * 4)
                    .clamp(1, GN_MAX_BLOCKS)
            })
            .collect();
        let total: usize = blocks.iter().sum();
        let count = int(finish, "partials", total)?;
        let mut partials = self.scratch::<f32>(total)?;
        let s = &self.stream;
        let (part, _part) = partials.device_ptr_mut(s);
        let mut offset = 0usize;
        for (g, &nblocks) in grads.iter().zip(&blocks) {
            let off = int("sumsq", "offset", offset)?;
            let g_blocks = grid("sumsq", nblocks, u32::MAX)?;
            match g {
                GradRef::F32(x) => {
                    let n = long("sumsq_f32", "n", x.len())?;
                    let (x, _x) = x.device_ptr(s);
                    let mut args = s.launch_builder(self.function("sumsq_f32")?);
                    args.arg(&x).arg(&n).arg(&part).arg(&off);
                    self.launch("sumsq_f32", args, (g_blocks, 1, 1), GN_THREADS)?;
                }
                GradRef::Bf16(x) => {
                    let n = long("sumsq_bf16", "n", x.len())?;
                    let (x, _x) = x.device_ptr(s);
                    let mut args = s.launch_builder(self.function("sumsq_bf16")?);
                    args.arg(&x).arg(&n).arg(&part).arg(&off);
                    self.launch("sumsq_bf16", args, (g_blocks, 1, 1), GN_THREADS)?;
                }
            }
            offset += nblocks;
        }
        let (o, _o) = out.device_ptr_mut(s);
        let mut args = s.launch_builder(self.function(finish)?);
        args.arg(&part).arg(&count).arg(&max_norm).arg(&o);
        self.launch(finish, args, (1, 1, 1), GN_THREADS)
    }

    /// One AdamW step over a flat tensor: master (f32), m and v updated in
    /// place, `param` (the bf16 copy the model reads) rewritten. `grad_scale`
    /// is a one-element device value multiplied into the gradient (the clip
    /// factor at `grad_norm`'s out[1], or 1).
    #[allow(clippy::too_many_arguments)]
    pub fn adamw_step<G: AdamGrad>(
        &self,
        hyper: AdamWStep,
        master: &mut impl DevicePtrMut<f32>,
        m: &mut impl DevicePtrMut<f32>,
        v: &mut impl DevicePtrMut<f32>,
        param: &mut impl DevicePtrMut<bf16>,
        grad: &impl DevicePtr<G>,
        grad_scale: &impl DevicePtr<f32>,
    ) -> Result<(), CudaError> {
        let kernel = G::KERNEL;
        let len = master.len();
        len_is(kernel, "m", m.len(), len)?;
        len_is(kernel, "v", v.len(), len)?;
        len_is(kernel, "param", param.len(), len)?;
        len_is(kernel, "grad", grad.len(), len)?;
        need(kernel, !grad_scale.is_empty(), || {
            "grad_scale must hold one value".into()
        })?;
        need(kernel, hyper.step >= 1, || {
            "AdamW steps count from 1".into()
        })?;
        let n = long(kernel, "n", len)?;
        let (bc1, bc2) = hyper.bias_corrections();
        let blocks = grid(
            kernel,
            len.div_ceil(4 * ADAMW_THREADS as usize),
            16 * self.sm_count(),
        )?;
        let s = &self.stream;
        let (p, _p) = master.device_ptr_mut(s);
        let (mm, _m) = m.device_ptr_mut(s);
        let (vv, _v) = v.device_ptr_mut(s);
        let (pb, _pb) = param.device_ptr_mut(s);
        let (g, _g) = grad.device_ptr(s);
        let (sc, _sc) = grad_scale.device_ptr(s);
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&p)
            .arg(&mm)
            .arg(&vv)
            .arg(&pb)
            .arg(&g)
            .arg(&sc)
            .arg(&n);
        args.arg(&hyper.lr)
            .arg(&hyper.beta1)
            .arg(&hyper.beta2)
            .arg(&hyper.eps);
        args.arg(&hyper.weight_decay).arg(&bc1).arg(&bc2);
        self.launch(kernel, args, (blocks, 1, 1), ADAMW_THREADS)
    }
}

/// Gradient element types the AdamW kernel accepts.
pub trait AdamGrad: cudarc::driver::DeviceRepr {
    const KERNEL: &'static str;
}

impl AdamGrad for f32 {
    const KERNEL: &'static str = "adamw_f32grad";
}

impl AdamGrad for bf16 {
    const KERNEL: &'static str = "adamw_bf16grad";
}
