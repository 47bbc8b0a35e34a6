//! Launch wrappers for kernels/cuda/tensor.cu: the f32 <-> bf16 casts and the
//! plain memory ops the Backend trait needs, plus the f32 attention used for
//! shapes the flash kernels do not take (left padding, KV-cache decoding,
//! other head dims).

use cudarc::driver::{DevicePtr, DevicePtrMut, PushKernelArg};
use half::bf16;

use super::check::{grid, int, len_is, long, need};
use super::{CudaDevice, CudaError};
use crate::backend::AttnShape;

const TS_THREADS: u32 = 256;
/// As in tensor.cu: lanes hold up to 8 elements each, 4 warps per block.
const ATT_F32_MAX_DIM: usize = 32 * 8;
const ATT_F32_WARPS: usize = 4;

/// The rows of a strided copy, as [`crate::backend::RowCopy`] has them.
#[derive(Clone, Copy, Debug)]
pub struct RowBlocks {
    pub count: usize,
    pub rows: usize,
    pub width: usize,
    pub src_block: usize,
    pub src_row: usize,
    pub dst_block: usize,
    pub dst_row: usize,
}

/// The f32 attention kernel's view of a call's shape.
impl AttnShape {
    fn q_elems(&self) -> usize {
        self.batch * self.q_len * self.heads * self.head_dim
    }

    fn kv_elems(&self) -> usize {
        self.batch * self.kv_cap * self.kv_heads * self.head_dim
    }

    fn lse_elems(&self) -> usize {
        self.batch * self.heads * self.q_len
    }

    fn check(&self, kernel: &'static str) -> Result<[i32; 8], CudaError> {
        need(
            kernel,
            self.head_dim > 0 && self.head_dim <= ATT_F32_MAX_DIM,
            || format!("head_dim {} is not in 1..={ATT_F32_MAX_DIM}", self.head_dim),
        )?;
        need(
            kernel,
            self.kv_heads > 0 && self.heads.is_multiple_of(self.kv_heads),
            || {
                format!(
                    "{} heads are not a multiple of {} kv heads",
                    self.heads, self.kv_heads
                )
            },
        )?;
        need(kernel, self.kv_len <= self.kv_cap, || {
            format!("kv_len {} exceeds kv_cap {}", self.kv_len, self.kv_cap)
        })?;
        int(kernel, "q elements", self.q_elems())?;
        Ok([
            int(kernel, "batch", self.batch)?,
            int(kernel, "q_len", self.q_len)?,
            int(kernel, "kv_len", self.kv_len)?,
            int(kernel, "kv_cap", self.kv_cap)?,
            int(kernel, "q_offset", self.q_offset)?,
            int(kernel, "heads", self.heads)?,
            int(kernel, "kv_heads", self.kv_heads)?,
            int(kernel, "head_dim", self.head_dim)?,
        ])
    }

    fn blocks(&self, kernel: &'static str) -> Result<u32, CudaError> {
        grid(kernel, self.lse_elems().div_ceil(ATT_F32_WARPS), u32::MAX)
    }
}

impl CudaDevice {
    fn stride_blocks(&self, kernel: &'static str, items: usize) -> Result<u32, CudaError> {
        grid(
            kernel,
            items.div_ceil(TS_THREADS as usize),
            32 * self.sm_count(),
        )
    }

    /// y = bf16(x), rounding to nearest even.
    pub fn cast_to_bf16(
        &self,
        x: &impl DevicePtr<f32>,
        y: &mut impl DevicePtrMut<bf16>,
    ) -> Result<(), CudaError> {
        let kernel = "cast_f32_bf16";
        len_is(kernel, "y", y.len(), x.len())?;
        let n = long(kernel, "n", x.len())?;
        let blocks = self.stride_blocks(kernel, x.len())?;
        let s = &self.stream;
        let (xp, _x) = x.device_ptr(s);
        let (yp, _y) = y.device_ptr_mut(s);
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&xp).arg(&yp).arg(&n);
        self.launch(kernel, args, (blocks, 1, 1), TS_THREADS)
    }

    /// y = f32(x), exact.
    pub fn cast_to_f32(
        &self,
        x: &impl DevicePtr<bf16>,
        y: &mut impl DevicePtrMut<f32>,
    ) -> Result<(), CudaError> {
        let kernel = "cast_bf16_f32";
        len_is(kernel, "y", y.len(), x.len())?;
        let n = long(kernel, "n", x.len())?;
        let blocks = self.stride_blocks(kernel, x.len())?;
        let s = &self.stream;
        let (xp, _x) = x.device_ptr(s);
        let (yp, _y) = y.device_ptr_mut(s);
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&xp).arg(&yp).arg(&n);
        self.launch(kernel, args, (blocks, 1, 1), TS_THREADS)
    }

    /// y += alpha * x.
    pub fn axpy(
        &self,
        y: &mut impl DevicePtrMut<f32>,
        alpha: f32,
        x: &impl DevicePtr<f32>,
    ) -> Result<(), CudaError> {
        let kernel = "axpy_f32";
        len_is(kernel, "x", x.len(), y.len())?;
        let n = long(kernel, "n", y.len())?;
        let blocks = self.stride_blocks(kernel, y.len())?;
        let s = &self.stream;
        let (xp, _x) = x.device_ptr(s);
        let (yp, _y) = y.device_ptr_mut(s);
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&yp).arg(&xp).arg(&alpha).arg(&n);
        self.launch(kernel, args, (blocks, 1, 1), TS_THREADS)
    }

    /// y *= alpha.
    pub fn scale(&self, y: &mut impl DevicePtrMut<f32>, alpha: f32) -> Result<(), CudaError> {
        let kernel = "scale_f32";
        let n = long(kernel, "n", y.len())?;
        let blocks = self.stride_blocks(kernel, y.len())?;
        let s = &self.stream;
        let (yp, _y) = y.device_ptr_mut(s);
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&yp).arg(&alpha).arg(&n);
        self.launch(kernel, args, (blocks, 1, 1), TS_THREADS)
    }

    /// Strided row copy between two f32 buffers.
    pub fn copy_rows(
        &self,
        src: &impl DevicePtr<f32>,
        dst: &mut impl DevicePtrMut<f32>,
        c: RowBlocks,
    ) -> Result<(), CudaError> {
        let kernel = "copy_rows_f32";
        let last = c.count.saturating_sub(1);
        need(
            kernel,
            c.count == 0 || (last * c.src_block + c.src_row + c.rows) * c.width <= src.len(),
            || format!("{c:?} reads past the {} source elements", src.len()),
        )?;
        need(
            kernel,
            c.count == 0 || (last * c.dst_block + c.dst_row + c.rows) * c.width <= dst.len(),
            || format!("{c:?} writes past the {} destination elements", dst.len()),
        )?;
        let items = c.count * c.rows * c.width;
        let blocks = self.stride_blocks(kernel, items)?;
        let vals = [
            c.count,
            c.rows,
            c.width,
            c.src_block,
            c.src_row,
            c.dst_block,
            c.dst_row,
        ]
        .map(|v| long(kernel, "copy size", v));
        let [count, rows, width, src_block, src_row, dst_block, dst_row] = vals;
        let (count, rows, width) = (count?, rows?, width?);
        let (src_block, src_row, dst_block, dst_row) = (src_block?, src_row?, dst_block?, dst_row?);
        let s = &self.stream;
        let (sp, _s) = src.device_ptr(s);
        let (dp, _d) = dst.device_ptr_mut(s);
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&sp).arg(&dp).arg(&count).arg(&rows).arg(&width);
        args.arg(&src_block)
            .arg(&src_row)
            .arg(&dst_block)
            .arg(&dst_row);
        self.launch(kernel, args, (blocks, 1, 1), TS_THREADS)
    }

    /// out[i] = x[idx[i]] for rows of `width`; `idx` must be in range (the
    /// backend checks on the host before uploading).
    pub fn gather_rows(
        &self,
        x: &impl DevicePtr<f32>,
        idx: &impl DevicePtr<i32>,
        width: usize,
        out: &mut impl DevicePtrMut<f32>,
    ) -> Result<(), CudaError> {
        let kernel = "gather_rows_f32";
        len_is(kernel, "out", out.len(), idx.len() * width)?;
        let (n, w) = (
            long(kernel, "rows", idx.len())?,
            long(kernel, "width", width)?,
        );
        let blocks = self.stride_blocks(kernel, out.len())?;
        let s = &self.stream;
        let (xp, _x) = x.device_ptr(s);
        let (ip, _i) = idx.device_ptr(s);
        let (op, _o) = out.device_ptr_mut(s);
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&xp).arg(&ip).arg(&op).arg(&n).arg(&w);
        self.launch(kernel, args, (blocks, 1, 1), TS_THREADS)
    }

    /// dx[idx[i]] += dy[i] for rows of `width`, atomically.
    pub fn scatter_add_rows(
        &self,
        dy: &impl DevicePtr<f32>,
        idx: &impl DevicePtr<i32>,
        width: usize,
        dx: &mut impl DevicePtrMut<f32>,
    ) -> Result<(), CudaError> {
        let kernel = "scatter_add_rows_f32";
        len_is(kernel, "dy", dy.len(), idx.len() * width)?;
        let (n, w) = (
            long(kernel, "rows", idx.len())?,
            long(kernel, "width", width)?,
        );
        let blocks = self.stride_blocks(kernel, dy.len())?;
        let s = &self.stream;
        let (yp, _y) = dy.device_ptr(s);
        let (ip, _i) = idx.device_ptr(s);
        let (xp, _x) = dx.device_ptr_mut(s);
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&yp).arg(&ip).arg(&xp).arg(&n).arg(&w);
        self.launch(kernel, args, (blocks, 1, 1), TS_THREADS)
    }

    /// Inverted dropout with the counter-based mask of the CPU backend: one
    /// key per row of `x`.
    pub fn dropout(
        &self,
        x: &impl DevicePtr<f32>,
        y: &mut impl DevicePtrMut<f32>,
        row_keys: &impl DevicePtr<u64>,
        p: f32,
        seed: u64,
    ) -> Result<(), CudaError> {
        let kernel = "dropout_f32";
        len_is(kernel, "y", y.len(), x.len())?;
        need(kernel, (0.0..1.0).contains(&p), || {
            format!("dropout probability {p} is not in [0, 1)")
        })?;
        let rows = row_keys.len();
        need(kernel, rows > 0 && x.len() % rows == 0, || {
            format!("{} values are not {rows} rows", x.len())
        })?;
        let n = long(kernel, "n", x.len())?;
        let width = long(kernel, "width", x.len() / rows)?;
        let blocks = self.stride_blocks(kernel, x.len())?;
        let s = &self.stream;
        let (xp, _x) = x.device_ptr(s);
        let (yp, _y) = y.device_ptr_mut(s);
        let (kp, _k) = row_keys.device_ptr(s);
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&xp)
            .arg(&yp)
            .arg(&kp)
            .arg(&n)
            .arg(&width)
            .arg(&p)
            .arg(&seed);
        self.launch(kernel, args, (blocks, 1, 1), TS_THREADS)
    }

    /// f32 causal attention with left padding and a KV-cache offset; writes
    /// `out` and `lse` (minus infinity for a query that sees no key).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_f32(
        &self,
        shape: AttnShape,
        q: &impl DevicePtr<f32>,
        k: &impl DevicePtr<f32>,
        v: &impl DevicePtr<f32>,
        kv_start: &impl DevicePtr<i32>,
        out: &mut impl DevicePtrMut<f32>,
        lse: &mut impl DevicePtrMut<f32>,
    ) -> Result<(), CudaError> {
        let kernel = "attention_fwd_f32";
        let [b, tq, tk, cap, off, h, hk, d] = shape.check(kernel)?;
        len_is(kernel, "q", q.len(), shape.q_elems())?;
        len_is(kernel, "k", k.len(), shape.kv_elems())?;
        len_is(kernel, "v", v.len(), shape.kv_elems())?;
        len_is(kernel, "kv_start", kv_start.len(), shape.batch)?;
        len_is(kernel, "out", out.len(), shape.q_elems())?;
        len_is(kernel, "lse", lse.len(), shape.lse_elems())?;
        let scale = 1.0 / (shape.head_dim as f32).sqrt();
        let blocks = shape.blocks(kernel)?;
        let s = &self.stream;
        let (qp, _q) = q.device_ptr(s);
        let (kp, _k) = k.device_ptr(s);
        let (vp, _v) = v.device_ptr(s);
        let (sp, _s) = kv_start.device_ptr(s);
        let (op, _o) = out.device_ptr_mut(s);
        let (lp, _l) = lse.device_ptr_mut(s);
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&qp).arg(&kp).arg(&vp).arg(&sp).arg(&op).arg(&lp);
        args.arg(&b).arg(&tq).arg(&tk).arg(&cap).arg(&off);
        args.arg(&h).arg(&hk).arg(&d).arg(&scale);
        self.launch(kernel, args, (blocks, 1, 1), 32 * ATT_F32_WARPS as u32)
    }

    /// Gradients of [`CudaDevice::attention_f32`]: `dq` is written, `dk` and
    /// `dv` must be zero on entry (they are accumulated atomically).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_f32_bwd(
        &self,
        shape: AttnShape,
        q: &impl DevicePtr<f32>,
        k: &impl DevicePtr<f32>,
        v: &impl DevicePtr<f32>,
        out: &impl DevicePtr<f32>,
        lse: &impl DevicePtr<f32>,
        dout: &impl DevicePtr<f32>,
        kv_start: &impl DevicePtr<i32>,
        grads: (
            &mut impl DevicePtrMut<f32>,
            &mut impl DevicePtrMut<f32>,
            &mut impl DevicePtrMut<f32>,
        ),
    ) -> Result<(), CudaError> {
        let kernel = "attention_bwd_f32";
        let (dq, dk, dv) = grads;
        let [b, tq, tk, cap, off, h, hk, d] = shape.check(kernel)?;
        for (name, len, want) in [
            ("q", q.len(), shape.q_elems()),
            ("k", k.len(), shape.kv_elems()),
            ("v", v.len(), shape.kv_elems()),
            ("out", out.len(), shape.q_elems()),
            ("lse", lse.len(), shape.lse_elems()),
            ("dout", dout.len(), shape.q_elems()),
            ("kv_start", kv_start.len(), shape.batch),
            ("dq", dq.len(), shape.q_elems()),
            ("dk", dk.len(), shape.kv_elems()),
            ("dv", dv.len(), shape.kv_elems()),
        ] {
            len_is(kernel, name, len, want)?;
        }
        let scale = 1.0 / (shape.head_dim as f32).sqrt();
        let blocks = shape.blocks(kernel)?;
        let s = &self.stream;
        let (qp, _q) = q.device_ptr(s);
        let (kp, _k) = k.device_ptr(s);
        let (vp, _v) = v.device_ptr(s);
        let (op, _o) = out.device_ptr(s);
        let (lp, _l) = lse.device_ptr(s);
        let (gp, _g) = dout.device_ptr(s);
        let (sp, _s) = kv_start.device_ptr(s);
        let (dqp, _dq) = dq.device_ptr_mut(s);
        let (dkp, _dk) = dk.device_ptr_mut(s);
        let (dvp, _dv) = dv.device_ptr_mut(s);
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&qp)
            .arg(&kp)
            .arg(&vp)
            .arg(&op)
            .arg(&lp)
            .arg(&gp)
            .arg(&sp);
        args.arg(&dqp).arg(&dkp).arg(&dvp);
        args.arg(&b).arg(&tq).arg(&tk).arg(&cap).arg(&off);
        args.arg(&h).arg(&hk).arg(&d).arg(&scale);
        self.launch(kernel, args, (blocks, 1, 1), 32 * ATT_F32_WARPS as u32)
    }
}
