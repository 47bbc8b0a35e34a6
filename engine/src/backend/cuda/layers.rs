//! Launch wrappers for the per-token layers: RMSNorm, RoPE, SwiGLU and the
//! token embedding, forward and backward. Activations are bf16 [rows, width].

use cudarc::driver::{DevicePtr, DevicePtrMut, PushKernelArg};
use half::bf16;

use super::check::{grid, int, len_is, long, need};
use super::{CudaDevice, CudaError};

const RMS_THREADS: u32 = 256;
/// rmsnorm.cu keeps 16 column pairs per thread in registers.
const RMS_MAX_WIDTH: usize = 2 * 256 * 16;
const ELEMENTWISE_THREADS: u32 = 256;

impl CudaDevice {
    /// y = w * (x / rms(x)) per row of `width`; saves 1/rms per row in rstd.
    #[allow(clippy::too_many_arguments)]
    pub fn rmsnorm_fwd(
        &self,
        rows: usize,
        width: usize,
        eps: f32,
        x: &impl DevicePtr<bf16>,
        w: &impl DevicePtr<bf16>,
        y: &mut impl DevicePtrMut<bf16>,
        rstd: &mut impl DevicePtrMut<f32>,
    ) -> Result<(), CudaError> {
        let kernel = "rmsnorm_fwd";
        check_rms(kernel, rows, width)?;
        len_is(kernel, "x", x.len(), rows * width)?;
        len_is(kernel, "w", w.len(), width)?;
        len_is(kernel, "y", y.len(), rows * width)?;
        len_is(kernel, "rstd", rstd.len(), rows)?;
        let h = int(kernel, "width", width)?;
        let s = &self.stream;
        let (x, _x) = x.device_ptr(s);
        let (w, _w) = w.device_ptr(s);
        let (y, _y) = y.device_ptr_mut(s);
        let (r, _r) = rstd.device_ptr_mut(s);
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&x).arg(&w).arg(&y).arg(&r).arg(&h).arg(&eps);
        self.launch(
            kernel,
            args,
            (grid(kernel, rows, u32::MAX)?, 1, 1),
            RMS_THREADS,
        )
    }

    /// dx from dy, and dw (overwritten, f32) summed over rows in a fixed order.
    #[allow(clippy::too_many_arguments)]
    pub fn rmsnorm_bwd(
        &self,
        rows: usize,
        width: usize,
        x: &impl DevicePtr<bf16>,
        w: &impl DevicePtr<bf16>,
        dy: &impl DevicePtr<bf16>,
        rstd: &impl DevicePtr<f32>,
        dx: &mut impl DevicePtrMut<bf16>,
        dw: &mut impl DevicePtrMut<f32>,
    ) -> Result<(), CudaError> {
        let kernel = "rmsnorm_bwd";
        check_rms(kernel, rows, width)?;
        len_is(kernel, "x", x.len(), rows * width)?;
        len_is(kernel, "w", w.len(), width)?;
        len_is(kernel, "dy", dy.len(), rows * width)?;
        len_is(kernel, "rstd", rstd.len(), rows)?;
        len_is(kernel, "dx", dx.len(), rows * width)?;
        len_is(kernel, "dw", dw.len(), width)?;
        let blocks = rows.min(4 * self.sm_count() as usize).max(1);
        let per_block = rows.div_ceil(blocks);
        let blocks = rows.div_ceil(per_block);
        let mut partial = self.scratch::<f32>(blocks * width)?;
        let (n, h, per) = (
            int(kernel, "rows", rows)?,
            int(kernel, "width", width)?,
            int(kernel, "rows per block", per_block)?,
        );
        let blocks_i = int(kernel, "blocks", blocks)?;
        let s = &self.stream;
        let (x, _x) = x.device_ptr(s);
        let (w, _w) = w.device_ptr(s);
        let (dy, _dy) = dy.device_ptr(s);
        let (r, _r) = rstd.device_ptr(s);
        let (dx, _dx) = dx.device_ptr_mut(s);
        let (dw, _dw) = dw.device_ptr_mut(s);
        let (part, _part) = partial.device_ptr_mut(s);
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&x).arg(&w).arg(&dy).arg(&r).arg(&dx).arg(&part);
        args.arg(&n).arg(&h).arg(&per);
        self.launch(
            kernel,
            args,
            (grid(kernel, blocks, u32::MAX)?, 1, 1),
            RMS_THREADS,
        )?;

        let sum = "sum_rows_f32";
        let mut args = s.launch_builder(self.function(sum)?);
        args.arg(&part).arg(&dw).arg(&blocks_i).arg(&h);
        let g = grid(sum, width.div_ceil(ELEMENTWISE_THREADS as usize), u32::MAX)?;
        self.launch(sum, args, (g, 1, 1), ELEMENTWISE_THREADS)
    }

    /// Rotate q or k in place: x is [tokens, heads, head_dim], pos [tokens],
    /// inv_freq [head_dim / 2] (see `rope_inv_freq`).
    pub fn rope_fwd(
        &self,
        tokens: usize,
        heads: usize,
        head_dim: usize,
        x: &mut impl DevicePtrMut<bf16>,
        pos: &impl DevicePtr<i32>,
        inv_freq: &impl DevicePtr<f32>,
    ) -> Result<(), CudaError> {
        self.rope("rope_fwd", tokens, heads, head_dim, x, pos, inv_freq)
    }

    /// The inverse rotation, applied in place to dq or dk.
    pub fn rope_bwd(
        &self,
        tokens: usize,
        heads: usize,
        head_dim: usize,
        dx: &mut impl DevicePtrMut<bf16>,
        pos: &impl DevicePtr<i32>,
        inv_freq: &impl DevicePtr<f32>,
    ) -> Result<(), CudaError> {
        self.rope("rope_bwd", tokens, heads, head_dim, dx, pos, inv_freq)
    }

    #[allow(clippy::too_many_arguments)]
    fn rope(
        &self,
        kernel: &'static str,
        tokens: usize,
        heads: usize,
        head_dim: usize,
        x: &mut impl DevicePtrMut<bf16>,
        pos: &impl DevicePtr<i32>,
        inv_freq: &impl DevicePtr<f32>,
    ) -> Result<(), CudaError> {
        need(kernel, head_dim > 0 && head_dim.is_multiple_of(2), || {
            format!("head_dim {head_dim} must be even")
        })?;
        len_is(kernel, "x", x.len(), tokens * heads * head_dim)?;
        len_is(kernel, "pos", pos.len(), tokens)?;
        len_is(kernel, "inv_freq", inv_freq.len(), head_dim / 2)?;
        let (t, h, d) = (
            long(kernel, "tokens", tokens)?,
            int(kernel, "heads", heads)?,
            int(kernel, "head_dim", head_dim)?,
        );
        let pairs = tokens * heads * head_dim / 2;
        let blocks = grid(
            kernel,
            pairs.div_ceil(ELEMENTWISE_THREADS as usize),
            32 * self.sm_count(),
        )?;
        let s = &self.stream;
        let (x, _x) = x.device_ptr_mut(s);
        let (p, _p) = pos.device_ptr(s);
        let (f, _f) = inv_freq.device_ptr(s);
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&x).arg(&x).arg(&p).arg(&f).arg(&t).arg(&h).arg(&d);
        self.launch(kernel, args, (blocks, 1, 1), ELEMENTWISE_THREADS)
    }

    /// out = silu(gate) * up, elementwise.
    pub fn swiglu_fwd(
        &self,
        gate: &impl DevicePtr<bf16>,
        up: &impl DevicePtr<bf16>,
        out: &mut impl DevicePtrMut<bf16>,
    ) -> Result<(), CudaError> {
        let kernel = "swiglu_fwd";
        let len = gate.len();
        len_is(kernel, "up", up.len(), len)?;
        len_is(kernel, "out", out.len(), len)?;
        let n = long(kernel, "n", len)?;
        let blocks = self.elementwise_blocks(kernel, len.div_ceil(8))?;
        let s = &self.stream;
        let (g, _g) = gate.device_ptr(s);
        let (u, _u) = up.device_ptr(s);
        let (o, _o) = out.device_ptr_mut(s);
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&g).arg(&u).arg(&o).arg(&n);
        self.launch(kernel, args, (blocks, 1, 1), ELEMENTWISE_THREADS)
    }

    /// dgate and dup from dout.
    pub fn swiglu_bwd(
        &self,
        gate: &impl DevicePtr<bf16>,
        up: &impl DevicePtr<bf16>,
        dout: &impl DevicePtr<bf16>,
        dgate: &mut impl DevicePtrMut<bf16>,
        dup: &mut impl DevicePtrMut<bf16>,
    ) -> Result<(), CudaError> {
        let kernel = "swiglu_bwd";
        let len = gate.len();
        for (name, l) in [
            ("up", up.len()),
            ("dout", dout.len()),
            ("dgate", dgate.len()),
            ("dup", dup.len()),
        ] {
            len_is(kernel, name, l, len)?;
        }
        let n = long(kernel, "n", len)?;
        let blocks = self.elementwise_blocks(kernel, len.div_ceil(8))?;
        let s = &self.stream;
        let (g, _g) = gate.device_ptr(s);
        let (u, _u) = up.device_ptr(s);
        let (d, _d) = dout.device_ptr(s);
        let (dg, _dg) = dgate.device_ptr_mut(s);
        let (du, _du) = dup.device_ptr_mut(s);
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&g).arg(&u).arg(&d).arg(&dg).arg(&du).arg(&n);
        self.launch(kernel, args, (blocks, 1, 1), ELEMENTWISE_THREADS)
    }

    /// out[n, :] = table[ids[n], :]; table is [vocab, width].
    pub fn embedding_fwd(
        &self,
        vocab: usize,
        width: usize,
        ids: &impl DevicePtr<i32>,
        table: &impl DevicePtr<bf16>,
        out: &mut impl DevicePtrMut<bf16>,
    ) -> Result<(), CudaError> {
        let kernel = "embedding_fwd";
        let tokens = ids.len();
        len_is(kernel, "table", table.len(), vocab * width)?;
        len_is(kernel, "out", out.len(), tokens * width)?;
        let (v, h) = (int(kernel, "vocab", vocab)?, int(kernel, "width", width)?);
        let s = &self.stream;
        let (i, _i) = ids.device_ptr(s);
        let (t, _t) = table.device_ptr(s);
        let (o, _o) = out.device_ptr_mut(s);
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&i).arg(&t).arg(&o).arg(&v).arg(&h);
        self.launch(
            kernel,
            args,
            (grid(kernel, tokens, u32::MAX)?, 1, 1),
            ELEMENTWISE_THREADS,
        )
    }

    /// dtable[ids[n], :] += dout[n, :] (f32 accumulation; zero dtable first
    /// for a fresh gradient).
    pub fn embedding_bwd(
        &self,
        vocab: usize,
        width: usize,
        ids: &impl DevicePtr<i32>,
        dout: &impl DevicePtr<bf16>,
        dtable: &mut impl DevicePtrMut<f32>,
    ) -> Result<(), CudaError> {
        let kernel = "embedding_bwd";
        let tokens = ids.len();
        len_is(kernel, "dout", dout.len(), tokens * width)?;
        len_is(kernel, "dtable", dtable.len(), vocab * width)?;
        let (v, h) = (int(kernel, "vocab", vocab)?, int(kernel, "width", width)?);
        let s = &self.stream;
        let (i, _i) = ids.device_ptr(s);
        let (d, _d) = dout.device_ptr(s);
        let (t, _t) = dtable.device_ptr_mut(s);
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&i).arg(&d).arg(&t).arg(&v).arg(&h);
        self.launch(
            kernel,
            args,
            (grid(kernel, tokens, u32::MAX)?, 1, 1),
            ELEMENTWISE_THREADS,
        )
    }

    /// Blocks for a grid-stride elementwise kernel over `items` work items:
    /// one item per thread up to 32 blocks per multiprocessor.
    pub(crate) fn elementwise_blocks(
        &self,
        kernel: &'static str,
        items: usize,
    ) -> Result<u32, CudaError> {
        grid(
            kernel,
            items.div_ceil(ELEMENTWISE_THREADS as usize),
            32 * self.sm_count(),
        )
    }
}

fn check_rms(kernel: &'static str, rows: usize, width: usize) -> Result<(), CudaError> {
    need(
        kernel,
        width > 0 && width.is_multiple_of(2) && width <= RMS_MAX_WIDTH,
        || format!("width {width} must be even and at most {RMS_MAX_WIDTH}"),
    )?;
    need(kernel, rows > 0, || "rows is 0".into())
}

/// RoPE inverse frequencies [head_dim / 2] on the host, with LLaMA 3's
/// frequency scaling when `llama3` is given (as HF `_compute_llama3_parameters`:
/// long wavelengths divided by `factor`, short ones kept, a smooth blend
/// between).
pub fn rope_inv_freq(head_dim: usize, theta: f64, llama3: Option<Llama3Scaling>) -> Vec<f32> {
    let half = head_dim / 2;
    (0..half)
        .map(|i| {
            let freq = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
            let scaled = match llama3 {
                None => freq,
                Some(s) => s.apply(freq),
            };
            scaled as f32
        })
        .collect()
}

/// LLaMA 3.1's `rope_scaling` block of config.json.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

impl Llama3Scaling {
    fn apply(&self, freq: f64) -> f64 {
        let low_wavelen = self.original_max_position_embeddings / self.low_freq_factor;
        let high_wavelen = self.original_max_position_embeddings / self.high_freq_factor;
        let wavelen = 2.0 * std::f64::consts::PI / freq;
        if wavelen < high_wavelen {
            freq
        } else if wavelen > low_wavelen {
            freq / self.factor
        } else {
            let smooth = (self.original_max_position_embeddings / wavelen - self.low_freq_factor)
                / (self.high_freq_factor - self.low_freq_factor);
            (1.0 - smooth) * freq / self.factor + smooth * freq
        }
    }
}
