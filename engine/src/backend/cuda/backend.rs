//! `impl Backend for CudaBackend`: the model's ops on one GPU.
//!
//! Storage: frozen weights in the backend's weight dtype (bf16 when opened
//! with [`Dtype::Bf16`], half the bytes), everything else f32: trainable
//! master weights, gradients, AdamW moments and activations. Compute is bf16
//! where the GPU is fast in it: GEMM operands are narrowed to bf16 and run on
//! the tensor cores with f32 accumulation (cuBLAS, f32 output), and RMSNorm,
//! RoPE, SwiGLU, flash attention and the chunked cross-entropy run the bf16
//! kernels of kernels/ on narrowed copies, their results widened back. So
//! values carry bf16 rounding at each op, as a bf16 model does, while sums
//! across steps (residuals, gradient accumulation, AdamW) stay f32. The casts
//! cost one extra read and write per op; kernels/PERF.md has the numbers and
//! the plan to keep activations in bf16 end to end.
//!
//! Shapes the flash kernels do not take (left padding, decoding against a KV
//! cache, head dims other than 64 and 128) go to the f32 attention in
//! tensor.cu. Sampling downloads the logits rows and draws on the host with
//! the CPU reference, because the trait's draws come from caller-supplied
//! uniforms that must pick the same token on every backend.
//!
//! The trait's ops are infallible: shape errors are programming errors, and a
//! device failure in the middle of a step (a lost GPU) has no recovery path,
//! so both panic with the CUDA diagnostic. Running out of memory unwinds
//! with the typed [`CudaError`] as the panic's payload, which the stage
//! executor turns back into an error (`run::out_of_memory`, exit code 3,
//! with the planner's figure and the next preset). Everything a user can get
//! wrong (no driver, no GPU, a kernel that does not compile) is reported by
//! [`CudaBackend::open`] as an error value first.

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DevicePtr};
use half::bf16;

use super::tensor::RowBlocks;
use super::{AttentionShape, CudaDevice, CudaError, GradRef, Transpose};
use crate::backend::{
    AdamWStep, AttnShape, Backend, Cpu, Device, DeviceBytes, Dtype, Gemm, NllGrads, RowCopy,
    Sampling,
};

/// Rows of bf16 logits the fused cross-entropy holds at once: at most 2^27
/// values (256 MiB), e.g. 1046 rows of Llama 3's 128256-token vocabulary.
/// The memory planner counts the same chunk.
pub const CE_CHUNK_VALUES: usize = 1 << 27;

/// The CUDA backend over one opened GPU.
#[derive(Debug)]
pub struct CudaBackend {
    dev: CudaDevice,
    weights: Dtype,
}

/// A buffer on the GPU. Empty buffers hold one unused element because the
/// driver does not allocate zero bytes.
pub struct CudaBuf {
    data: Store,
    len: usize,
}

/// What a [`CudaBuf`] holds.
enum Store {
    F32(CudaSlice<f32>),
    Bf16(CudaSlice<bf16>),
}

impl std::fmt::Debug for CudaBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dtype = match self.data {
            Store::F32(_) => "f32",
            Store::Bf16(_) => "bf16",
        };
        write!(f, "CudaBuf({dtype} x {})", self.len)
    }
}

impl CudaBuf {
    /// The f32 storage. Ops other than the weight readers take f32 only; a
    /// bf16 buffer there is a programming error.
    fn f32(&self) -> &CudaSlice<f32> {
        match &self.data {
            Store::F32(d) => d,
            Store::Bf16(_) => panic!("CUDA backend: an f32 op got a bf16 buffer"),
        }
    }

    fn f32_mut(&mut self) -> &mut CudaSlice<f32> {
        match &mut self.data {
            Store::F32(d) => d,
            Store::Bf16(_) => panic!("CUDA backend: an f32 op got a bf16 buffer"),
        }
    }

    fn view(&self) -> CudaView<'_, f32> {
        self.f32().slice(..self.len)
    }

    fn view_mut(&mut self) -> CudaViewMut<'_, f32> {
        let len = self.len;
        self.f32_mut().slice_mut(..len)
    }
}

/// A bf16 operand for a kernel: a stored bf16 weight as it is, or a
/// narrowed copy of an f32 buffer.
enum Bf16Operand<'a> {
    Stored(CudaView<'a, bf16>),
    Cast(CudaSlice<bf16>),
}

impl Bf16Operand<'_> {
    fn view(&self) -> CudaView<'_, bf16> {
        match self {
            Bf16Operand::Stored(v) => v.slice(..),
            Bf16Operand::Cast(s) => s.slice(..),
        }
    }
}

/// Unwraps a device result inside a trait op (see the module docs).
fn ok<T>(result: Result<T, CudaError>) -> T {
    match result {
        Ok(value) => value,
        Err(e) if e.is_out_of_memory() => std::panic::panic_any(e),
        Err(e) => panic!("CUDA backend: {e}"),
    }
}

/// Host integers as the kernels' `int`, checked against an exclusive bound.
fn indices(op: &str, values: &[u32], bound: usize) -> Vec<i32> {
    values
        .iter()
        .map(|&v| {
            assert!(
                (v as usize) < bound,
                "{op}: index {v} is out of range (limit {bound})"
            );
            v as i32
        })
        .collect()
}

impl CudaBackend {
    /// Open GPU `ordinal`: probe the driver, compile or load the kernels, and
    /// create the cuBLAS handle. Fails with a diagnostic, never a panic, on a
    /// machine without a driver or GPU.
    /// Frozen weights are stored as `weights`.
    pub fn open(ordinal: usize, weights: Dtype) -> Result<Self, CudaError> {
        Ok(CudaBackend {
            dev: CudaDevice::open(ordinal)?,
            weights,
        })
    }

    /// The device underneath, for benchmarks and kernel-level tests.
    pub fn device_handle(&self) -> &CudaDevice {
        &self.dev
    }

    fn alloc(&self, len: usize) -> CudaBuf {
        CudaBuf {
            data: Store::F32(ok(self.dev.zeros(len.max(1)))),
            len,
        }
    }

    /// `x` as a kernel's bf16 input: a stored bf16 weight is read in place.
    fn to_bf16<'a>(&self, x: &'a CudaBuf) -> Bf16Operand<'a> {
        match &x.data {
            Store::Bf16(d) => Bf16Operand::Stored(d.slice(..x.len)),
            Store::F32(_) => Bf16Operand::Cast(self.narrowed(x)),
        }
    }

    /// The LM head's logits `h w^T` in bf16, one chunk of at most
    /// [`CE_CHUNK_VALUES`] values at a time: `each` gets the chunk's rows
    /// `r0..r1`, their hidden states and their logits.
    fn logit_chunks(
        &self,
        h16: &CudaView<'_, bf16>,
        w16: &CudaView<'_, bf16>,
        dim: usize,
        vocab: usize,
        mut each: impl FnMut(usize, usize, CudaView<'_, bf16>, CudaViewMut<'_, bf16>),
    ) {
        let rows = h16.len() / dim;
        let chunk = (CE_CHUNK_VALUES / vocab).clamp(1, rows);
        let mut logits = ok(self.dev.scratch::<bf16>(chunk * vocab));
        for r0 in (0..rows).step_by(chunk) {
            let r1 = (r0 + chunk).min(rows);
            let n = r1 - r0;
            let hc = h16.slice(r0 * dim..r1 * dim);
            let mut lg = logits.slice_mut(..n * vocab);
            ok(self.dev.gemm::<bf16>(
                (n, vocab, dim),
                &hc,
                Transpose::No,
                w16,
                Transpose::Yes,
                &mut lg,
                1.0,
                0.0,
            ));
            each(r0, r1, hc, lg);
        }
    }

    /// A bf16 copy of the f32 buffer `x`, rounded to nearest even.
    fn narrowed(&self, x: &CudaBuf) -> CudaSlice<bf16> {
        let mut out = ok(self.dev.scratch::<bf16>(x.len));
        ok(self.dev.cast_to_bf16(&x.view(), &mut out));
        out
    }

    fn to_f32(&self, x: &impl DevicePtr<bf16>) -> CudaBuf {
        let mut out = CudaBuf {
            data: Store::F32(ok(self.dev.scratch::<f32>(x.len()))),
            len: x.len(),
        };
        ok(self.dev.cast_to_f32(x, &mut out.view_mut()));
        out
    }

    fn upload_ints(&self, values: Vec<i32>) -> CudaSlice<i32> {
        ok(self.dev.upload(&values))
    }

    /// The flash kernels' shape when they take this call
    /// ([`AttnShape::is_flash`]).
    fn flash_shape(shape: AttnShape) -> Option<AttentionShape> {
        shape.is_flash().then_some(AttentionShape {
            batch: shape.batch,
            seq: shape.q_len,
            q_heads: shape.heads,
            kv_heads: shape.kv_heads,
            head_dim: shape.head_dim,
        })
    }

    fn kv_starts(&self, shape: AttnShape, kv_start: &[u32]) -> CudaSlice<i32> {
        assert_eq!(
            kv_start.len(),
            shape.batch,
            "attention: one kv_start per batch"
        );
        self.upload_ints(indices("attention", kv_start, shape.kv_cap + 1))
    }
}

impl Backend for CudaBackend {
    type Buf = CudaBuf;

    fn device(&self) -> Device {
        Device::Cuda(self.dev.ordinal())
    }

    fn device_bytes(&self) -> Option<DeviceBytes> {
        ok(self.dev.pool_bytes())
    }

    fn reset_device_peak(&self) {
        ok(self.dev.reset_pool_peak());
    }

    fn weight_dtype(&self) -> Dtype {
        self.weights
    }

    fn dtype(&self, buf: &CudaBuf) -> Dtype {
        match buf.data {
            Store::F32(_) => Dtype::F32,
            Store::Bf16(_) => Dtype::Bf16,
        }
    }

    fn to_dtype(&self, buf: CudaBuf, dtype: Dtype) -> CudaBuf {
        match (&buf.data, dtype) {
            (Store::F32(_), Dtype::Bf16) => {
                let mut out = ok(self.dev.zeros::<bf16>(buf.len.max(1)));
                if buf.len > 0 {
                    ok(self
                        .dev
                        .cast_to_bf16(&buf.view(), &mut out.slice_mut(..buf.len)));
                }
                CudaBuf {
                    data: Store::Bf16(out),
                    len: buf.len,
                }
            }
            (Store::Bf16(d), Dtype::F32) => {
                let mut out = self.alloc(buf.len);
                if buf.len > 0 {
                    ok(self
                        .dev
                        .cast_to_f32(&d.slice(..buf.len), &mut out.view_mut()));
                }
                out
            }
            _ => buf,
        }
    }

    fn upload(&self, data: &[f32]) -> CudaBuf {
        if data.is_empty() {
            return self.alloc(0);
        }
        CudaBuf {
            data: Store::F32(ok(self.dev.upload(data))),
            len: data.len(),
        }
    }

    fn upload_weight(&self, data: &[f32]) -> CudaBuf {
        match self.weights {
            Dtype::F32 => self.upload(data),
            Dtype::Bf16 => {
                let narrow: Vec<bf16> = data.iter().map(|&x| bf16::from_f32(x)).collect();
                CudaBuf {
                    data: Store::Bf16(ok(self.dev.upload(if narrow.is_empty() {
                        &[bf16::ZERO][..]
                    } else {
                        &narrow[..]
                    }))),
                    len: data.len(),
                }
            }
        }
    }

    fn download(&self, buf: &CudaBuf) -> Vec<f32> {
        if buf.len == 0 {
            return Vec::new();
        }
        match &buf.data {
            Store::F32(d) => ok(self.dev.download(&d.slice(..buf.len))),
            Store::Bf16(d) => ok(self.dev.download(&d.slice(..buf.len)))
                .iter()
                .map(|x: &bf16| x.to_f32())
                .collect(),
        }
    }

    fn zeros(&self, len: usize) -> CudaBuf {
        self.alloc(len)
    }

    fn len(&self, buf: &CudaBuf) -> usize {
        buf.len
    }

    fn set_zero(&self, buf: &mut CudaBuf) {
        let stream = self.dev.stream();
        let zeroed = match &mut buf.data {
            Store::F32(d) => stream.memset_zeros(d),
            Store::Bf16(d) => stream.memset_zeros(d),
        };
        ok(zeroed.map_err(CudaError::driver("zeroing a buffer")));
    }

    fn duplicate(&self, buf: &CudaBuf) -> CudaBuf {
        let stream = self.dev.stream();
        let copy = |what| CudaError::driver(what);
        let data = match &buf.data {
            Store::F32(d) => Store::F32(ok(stream
                .clone_dtod(d)
                .map_err(copy("copying a buffer on the GPU")))),
            Store::Bf16(d) => Store::Bf16(ok(stream
                .clone_dtod(d)
                .map_err(copy("copying a buffer on the GPU")))),
        };
        CudaBuf { data, len: buf.len }
    }

    fn copy_rows(&self, src: &CudaBuf, dst: &mut CudaBuf, c: RowCopy) {
        if c.count * c.rows * c.width == 0 {
            return;
        }
        let blocks = RowBlocks {
            count: c.count,
            rows: c.rows,
            width: c.width,
            src_block: c.src_block,
            src_row: c.src_row,
            dst_block: c.dst_block,
            dst_row: c.dst_row,
        };
        ok(self.dev.copy_rows(&src.view(), &mut dst.view_mut(), blocks));
    }

    fn matmul(&self, a: &CudaBuf, b: &CudaBuf, c: &mut CudaBuf, g: Gemm) {
        let flag = |t: bool| if t { Transpose::Yes } else { Transpose::No };
        let (a16, b16) = (self.to_bf16(a), self.to_bf16(b));
        let (a16, b16) = (a16.view(), b16.view());
        let len = c.len;
        let shape = (g.m, g.n, g.k);
        let (a16, ta, b16, tb) = (&a16, flag(g.trans_a), &b16, flag(g.trans_b));
        ok(match &mut c.data {
            Store::F32(c) => {
                let mut c = c.slice_mut(..len);
                self.dev
                    .gemm::<f32>(shape, a16, ta, b16, tb, &mut c, g.alpha, g.beta)
            }
            Store::Bf16(c) => {
                let mut c = c.slice_mut(..len);
                self.dev
                    .gemm::<bf16>(shape, a16, ta, b16, tb, &mut c, g.alpha, g.beta)
            }
        });
    }

    fn axpy(&self, dst: &mut CudaBuf, alpha: f32, src: &CudaBuf) {
        assert_eq!(dst.len, src.len, "axpy: lengths differ");
        if dst.len > 0 {
            ok(self.dev.axpy(&mut dst.view_mut(), alpha, &src.view()));
        }
    }

    fn scale(&self, buf: &mut CudaBuf, alpha: f32) {
        if buf.len > 0 {
            ok(self.dev.scale(&mut buf.view_mut(), alpha));
        }
    }

    fn sum_squares(&self, buf: &CudaBuf) -> f64 {
        if buf.len == 0 {
            return 0.0;
        }
        let mut out = ok(self.dev.zeros::<f32>(2));
        ok(self
            .dev
            .grad_norm(&[GradRef::F32(buf.f32())], 0.0, &mut out));
        let norm = f64::from(ok(self.dev.download(&out))[0]);
        norm * norm
    }

    fn embedding(&self, table: &CudaBuf, ids: &[u32], dim: usize) -> CudaBuf {
        let Store::Bf16(t) = &table.data else {
            return self.gather_rows(table, ids, dim);
        };
        if ids.is_empty() || dim == 0 {
            return self.alloc(0);
        }
        let vocab = table.len / dim;
        let ids = self.upload_ints(indices("embedding", ids, vocab));
        let mut out = ok(self.dev.scratch::<bf16>(ids.len() * dim));
        ok(self
            .dev
            .embedding_fwd(vocab, dim, &ids, &t.slice(..table.len), &mut out));
        self.to_f32(&out)
    }

    fn embedding_backward(&self, dout: &CudaBuf, ids: &[u32], dim: usize, dtable: &mut CudaBuf) {
        self.scatter_add_rows(dout, ids, dim, dtable);
    }

    fn rms_norm(&self, x: &CudaBuf, w: &CudaBuf, dim: usize, eps: f32) -> (CudaBuf, CudaBuf) {
        let rows = x.len / dim;
        let (x16, w16) = (self.to_bf16(x), self.to_bf16(w));
        let (x16, w16) = (x16.view(), w16.view());
        let mut y = ok(self.dev.scratch::<bf16>(x.len));
        let mut rstd = self.alloc(rows);
        ok(self
            .dev
            .rmsnorm_fwd(rows, dim, eps, &x16, &w16, &mut y, &mut rstd.view_mut()));
        (self.to_f32(&y), rstd)
    }

    fn rms_norm_backward(
        &self,
        dy: &CudaBuf,
        x: &CudaBuf,
        w: &CudaBuf,
        inv_rms: &CudaBuf,
        dim: usize,
        dw: Option<&mut CudaBuf>,
    ) -> CudaBuf {
        let rows = x.len / dim;
        let (dy16, x16, w16) = (self.to_bf16(dy), self.to_bf16(x), self.to_bf16(w));
        let (dy16, x16, w16) = (dy16.view(), x16.view(), w16.view());
        let mut dx = ok(self.dev.scratch::<bf16>(x.len));
        let mut dw_rows = self.alloc(dim);
        ok(self.dev.rmsnorm_bwd(
            rows,
            dim,
            &x16,
            &w16,
            &dy16,
            &inv_rms.view(),
            &mut dx,
            &mut dw_rows.view_mut(),
        ));
        if let Some(dw) = dw {
            self.axpy(dw, 1.0, &dw_rows);
        }
        self.to_f32(&dx)
    }

    fn rope(
        &self,
        x: &mut CudaBuf,
        positions: &[u32],
        heads: usize,
        inv_freq: &[f32],
        inverse: bool,
    ) {
        let tokens = positions.len();
        if tokens == 0 {
            return;
        }
        let head_dim = 2 * inv_freq.len();
        assert_eq!(x.len, tokens * heads * head_dim, "rope: shape mismatch");
        let pos = self.upload_ints(indices("rope", positions, i32::MAX as usize));
        let freq = ok(self.dev.upload(inv_freq));
        let mut x16 = self.narrowed(x);
        if inverse {
            ok(self
                .dev
                .rope_bwd(tokens, heads, head_dim, &mut x16, &pos, &freq));
        } else {
            ok(self
                .dev
                .rope_fwd(tokens, heads, head_dim, &mut x16, &pos, &freq));
        }
        ok(self.dev.cast_to_f32(&x16, &mut x.view_mut()));
    }

    fn attention(
        &self,
        q: &CudaBuf,
        k: &CudaBuf,
        v: &CudaBuf,
        shape: AttnShape,
        kv_start: &[u32],
    ) -> (CudaBuf, CudaBuf) {
        let mut lse = self.alloc(shape.batch * shape.heads * shape.q_len);
        let starts = self.kv_starts(shape, kv_start);
        if let Some(flash) = Self::flash_shape(shape) {
            let (q16, k16, v16) = (self.to_bf16(q), self.to_bf16(k), self.to_bf16(v));
            let (q16, k16, v16) = (q16.view(), k16.view(), v16.view());
            let mut o = ok(self.dev.scratch::<bf16>(q.len));
            ok(self.dev.flash_attn_fwd(
                flash,
                &q16,
                &k16,
                &v16,
                &starts,
                &mut o,
                &mut lse.view_mut(),
            ));
            return (self.to_f32(&o), lse);
        }
        let mut out = self.alloc(q.len);
        ok(self.dev.attention_f32(
            shape,
            &q.view(),
            &k.view(),
            &v.view(),
            &starts,
            &mut out.view_mut(),
            &mut lse.view_mut(),
        ));
        (out, lse)
    }

    fn attention_backward(
        &self,
        q: &CudaBuf,
        k: &CudaBuf,
        v: &CudaBuf,
        out: &CudaBuf,
        lse: &CudaBuf,
        dout: &CudaBuf,
        shape: AttnShape,
        kv_start: &[u32],
    ) -> (CudaBuf, CudaBuf, CudaBuf) {
        let starts = self.kv_starts(shape, kv_start);
        if let Some(flash) = Self::flash_shape(shape) {
            let (q16, k16, v16) = (self.to_bf16(q), self.to_bf16(k), self.to_bf16(v));
            let (q16, k16, v16) = (q16.view(), k16.view(), v16.view());
            let (o16, do16) = (self.to_bf16(out), self.to_bf16(dout));
            let (o16, do16) = (o16.view(), do16.view());
            let mut dq = ok(self.dev.scratch::<bf16>(q.len));
            let mut dk = ok(self.dev.scratch::<bf16>(k.len));
            let mut dv = ok(self.dev.scratch::<bf16>(v.len));
            ok(self.dev.flash_attn_bwd(
                flash,
                &q16,
                &k16,
                &v16,
                &o16,
                &do16,
                &lse.view(),
                &starts,
                &mut dq,
                &mut dk,
                &mut dv,
            ));
            return (self.to_f32(&dq), self.to_f32(&dk), self.to_f32(&dv));
        }
        let (mut dq, mut dk, mut dv) = (self.alloc(q.len), self.alloc(k.len), self.alloc(v.len));
        ok(self.dev.attention_f32_bwd(
            shape,
            &q.view(),
            &k.view(),
            &v.view(),
            &out.view(),
            &lse.view(),
            &dout.view(),
            &starts,
            (&mut dq.view_mut(), &mut dk.view_mut(), &mut dv.view_mut()),
        ));
        (dq, dk, dv)
    }

    fn swiglu(&self, gate: &CudaBuf, up: &CudaBuf) -> CudaBuf {
        assert_eq!(gate.len, up.len, "swiglu: lengths differ");
        let (g16, u16) = (self.to_bf16(gate), self.to_bf16(up));
        let (g16, u16) = (g16.view(), u16.view());
        let mut h = ok(self.dev.scratch::<bf16>(gate.len));
        ok(self.dev.swiglu_fwd(&g16, &u16, &mut h));
        self.to_f32(&h)
    }

    fn swiglu_backward(&self, gate: &CudaBuf, up: &CudaBuf, dh: &CudaBuf) -> (CudaBuf, CudaBuf) {
        let (g16, u16, d16) = (self.to_bf16(gate), self.to_bf16(up), self.to_bf16(dh));
        let (g16, u16, d16) = (g16.view(), u16.view(), d16.view());
        let mut dg = ok(self.dev.scratch::<bf16>(gate.len));
        let mut du = ok(self.dev.scratch::<bf16>(up.len));
        ok(self.dev.swiglu_bwd(&g16, &u16, &d16, &mut dg, &mut du));
        (self.to_f32(&dg), self.to_f32(&du))
    }

    fn dropout(&self, x: &CudaBuf, p: f32, seed: u64, row_keys: &[u64]) -> CudaBuf {
        let mut y = self.alloc(x.len);
        if x.len > 0 {
            let keys = ok(self.dev.upload(row_keys));
            ok(self
                .dev
                .dropout(&x.view(), &mut y.view_mut(), &keys, p, seed));
        }
        y
    }

    fn token_nll(
        &self,
        h: &CudaBuf,
        w: &CudaBuf,
        dim: usize,
        targets: &[u32],
        weights: &[f32],
        grads: Option<NllGrads<'_, CudaBuf>>,
    ) -> Vec<f32> {
        let rows = targets.len();
        let vocab = w.len / dim;
        assert_eq!(h.len, rows * dim, "token_nll: h is not [rows, dim]");
        assert_eq!(weights.len(), rows, "token_nll: one weight per row");
        let mut grads = grads.map(|(dh, dw)| {
            *dh = self.alloc(rows * dim);
            (dh, dw)
        });
        if rows == 0 {
            return Vec::new();
        }
        let (h16, w16) = (self.to_bf16(h), self.to_bf16(w));
        let (h16, w16) = (h16.view(), w16.view());
        let tgt = self.upload_ints(indices("token_nll", targets, vocab));
        let wts = ok(self.dev.upload(weights));
        let mut lse = ok(self.dev.scratch::<f32>(rows));
        let mut loss = ok(self.dev.scratch::<f32>(rows));
        self.logit_chunks(&h16, &w16, dim, vocab, |r0, r1, hc, mut lg| {
            let n = r1 - r0;
            let (tc, wc) = (tgt.slice(r0..r1), wts.slice(r0..r1));
            ok(self.dev.cross_entropy_fwd(
                n,
                vocab,
                &lg,
                &tc,
                &wc,
                &mut lse.slice_mut(r0..r1),
                &mut loss.slice_mut(r0..r1),
            ));
            let Some((dh, dw)) = grads.as_mut() else {
                return;
            };
            ok(self
                .dev
                .cross_entropy_bwd(n, vocab, &mut lg, &tc, &wc, &lse.slice(r0..r1), 1.0));
            ok(self.dev.gemm::<f32>(
                (n, dim, vocab),
                &lg,
                Transpose::No,
                &w16,
                Transpose::No,
                &mut dh.f32_mut().slice_mut(r0 * dim..r1 * dim),
                1.0,
                0.0,
            ));
            if let Some(g) = dw.as_mut() {
                ok(self.dev.gemm::<f32>(
                    (vocab, dim, n),
                    &lg,
                    Transpose::Yes,
                    &hc,
                    Transpose::No,
                    &mut g.dw.view_mut(),
                    1.0,
                    1.0,
                ));
            }
        });
        ok(self.dev.download(&loss))
    }

    fn token_entropy(&self, h: &CudaBuf, w: &CudaBuf, dim: usize) -> Vec<f32> {
        let rows = h.len / dim;
        let vocab = w.len / dim;
        if rows == 0 {
            return Vec::new();
        }
        let (h16, w16) = (self.to_bf16(h), self.to_bf16(w));
        let (h16, w16) = (h16.view(), w16.view());
        // Weight 0 on every row: the forward computes only the lse.
        let tgt = ok(self.dev.zeros::<i32>(rows));
        let wts = ok(self.dev.zeros::<f32>(rows));
        let mut lse = ok(self.dev.scratch::<f32>(rows));
        let mut loss = ok(self.dev.scratch::<f32>(rows));
        let mut entropy = ok(self.dev.scratch::<f32>(rows));
        self.logit_chunks(&h16, &w16, dim, vocab, |r0, r1, _, lg| {
            let n = r1 - r0;
            ok(self.dev.cross_entropy_fwd(
                n,
                vocab,
                &lg,
                &tgt.slice(r0..r1),
                &wts.slice(r0..r1),
                &mut lse.slice_mut(r0..r1),
                &mut loss.slice_mut(r0..r1),
            ));
            ok(self.dev.softmax_entropy(
                n,
                vocab,
                &lg,
                &lse.slice(r0..r1),
                &mut entropy.slice_mut(r0..r1),
            ));
        });
        ok(self.dev.download(&entropy))
    }

    fn gather_rows(&self, x: &CudaBuf, idx: &[u32], width: usize) -> CudaBuf {
        let mut out = self.alloc(idx.len() * width);
        if idx.is_empty() || width == 0 {
            return out;
        }
        let ids = self.upload_ints(indices("gather_rows", idx, x.len / width));
        ok(self
            .dev
            .gather_rows(&x.view(), &ids, width, &mut out.view_mut()));
        out
    }

    fn scatter_add_rows(&self, dy: &CudaBuf, idx: &[u32], width: usize, dx: &mut CudaBuf) {
        if idx.is_empty() || width == 0 {
            return;
        }
        let ids = self.upload_ints(indices("scatter_add_rows", idx, dx.len / width));
        ok(self
            .dev
            .scatter_add_rows(&dy.view(), &ids, width, &mut dx.view_mut()));
    }

    fn adamw(
        &self,
        param: &mut CudaBuf,
        grad: &CudaBuf,
        m: &mut CudaBuf,
        v: &mut CudaBuf,
        h: AdamWStep,
    ) {
        if param.len == 0 {
            return;
        }
        // The kernel also writes a bf16 copy of the parameters for models
        // that read bf16 weights; the trait's parameters are the f32 master.
        let mut param16 = ok(self.dev.scratch::<bf16>(param.len));
        let unit = ok(self.dev.upload(&[1.0f32]));
        ok(self.dev.adamw_step(
            h,
            &mut param.view_mut(),
            &mut m.view_mut(),
            &mut v.view_mut(),
            &mut param16,
            &grad.view(),
            &unit,
        ));
    }

    fn sample(&self, logits: &CudaBuf, vocab: usize, how: Sampling, uniforms: &[f32]) -> Vec<u32> {
        Cpu.sample(&self.download(logits), vocab, how, uniforms)
    }
}
