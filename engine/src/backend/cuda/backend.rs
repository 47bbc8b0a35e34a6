//! `impl Backend for CudaBackend`: the model's ops on one GPU.
//!
//! Storage: every trait buffer is f32 on the device. The trait has one buffer
//! type for weights, activations, gradients and optimizer state, and the f32
//! copy is what keeps master weights and AdamW moments exact. Compute is bf16
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
//! device failure in the middle of a step (out of memory, a lost GPU) has no
//! recovery path, so both panic with the CUDA diagnostic. Everything a user
//! can get wrong (no driver, no GPU, a kernel that does not compile) is
//! reported by [`CudaBackend::open`] as an error value first.

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut};
use half::bf16;

use super::tensor::{F32AttnShape, RowBlocks};
use super::{AdamW, AttentionShape, CudaDevice, CudaError, GradRef, Transpose};
use crate::backend::{AdamWStep, AttnShape, Backend, Cpu, Device, Gemm, RowCopy, Sampling};

/// Rows of bf16 logits the fused cross-entropy holds at once: at most 2^27
/// values (256 MiB), e.g. 1046 rows of Llama 3's 128256-token vocabulary.
const CE_CHUNK_VALUES: usize = 1 << 27;

/// The CUDA backend over one opened GPU.
#[derive(Debug)]
pub struct CudaBackend {
    dev: CudaDevice,
}

/// An f32 buffer on the GPU. Empty buffers hold one unused element because
/// the driver does not allocate zero bytes.
pub struct CudaBuf {
    data: CudaSlice<f32>,
    len: usize,
}

impl std::fmt::Debug for CudaBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaBuf(f32 x {})", self.len)
    }
}

impl CudaBuf {
    fn view(&self) -> CudaView<'_, f32> {
        self.data.slice(..self.len)
    }

    fn view_mut(&mut self) -> CudaViewMut<'_, f32> {
        self.data.slice_mut(..self.len)
    }
}

/// Unwraps a device result inside a trait op (see the module docs).
fn ok<T>(result: Result<T, CudaError>) -> T {
    match result {
        Ok(value) => value,
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
    pub fn open(ordinal: usize) -> Result<Self, CudaError> {
        Ok(CudaBackend {
            dev: CudaDevice::open(ordinal)?,
        })
    }

    /// The device underneath, for benchmarks and kernel-level tests.
    pub fn device_handle(&self) -> &CudaDevice {
        &self.dev
    }

    fn alloc(&self, len: usize) -> CudaBuf {
        CudaBuf {
            data: ok(self.dev.zeros(len.max(1))),
            len,
        }
    }

    fn to_bf16(&self, x: &CudaBuf) -> CudaSlice<bf16> {
        let mut out = ok(self.dev.scratch::<bf16>(x.len));
        ok(self.dev.cast_to_bf16(&x.view(), &mut out));
        out
    }

    fn to_f32(&self, x: &CudaSlice<bf16>) -> CudaBuf {
        let mut out = CudaBuf {
            data: ok(self.dev.scratch::<f32>(x.len())),
            len: x.len(),
        };
        ok(self.dev.cast_to_f32(x, &mut out.view_mut()));
        out
    }

    fn upload_ints(&self, values: Vec<i32>) -> CudaSlice<i32> {
        ok(self.dev.upload(&values))
    }

    /// The flash kernels take square causal batches without padding and
    /// head dims 64 or 128.
    fn flash_shape(shape: AttnShape, kv_start: &[u32]) -> Option<AttentionShape> {
        let square = shape.q_offset == 0
            && shape.q_len == shape.kv_len
            && shape.kv_len == shape.kv_cap
            && kv_start.iter().all(|&s| s == 0);
        (square && matches!(shape.head_dim, 64 | 128)).then_some(AttentionShape {
            batch: shape.batch,
            seq: shape.q_len,
            q_heads: shape.heads,
            kv_heads: shape.kv_heads,
            head_dim: shape.head_dim,
        })
    }

    fn f32_shape(shape: AttnShape) -> F32AttnShape {
        F32AttnShape {
            batch: shape.batch,
            q_len: shape.q_len,
            kv_len: shape.kv_len,
            kv_cap: shape.kv_cap,
            q_offset: shape.q_offset,
            heads: shape.heads,
            kv_heads: shape.kv_heads,
            head_dim: shape.head_dim,
        }
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

    fn upload(&self, data: &[f32]) -> CudaBuf {
        if data.is_empty() {
            return self.alloc(0);
        }
        CudaBuf {
            data: ok(self.dev.upload(data)),
            len: data.len(),
        }
    }

    fn download(&self, buf: &CudaBuf) -> Vec<f32> {
        if buf.len == 0 {
            return Vec::new();
        }
        ok(self.dev.download(&buf.view()))
    }

    fn zeros(&self, len: usize) -> CudaBuf {
        self.alloc(len)
    }

    fn len(&self, buf: &CudaBuf) -> usize {
        buf.len
    }

    fn set_zero(&self, buf: &mut CudaBuf) {
        ok(self
            .dev
            .stream()
            .memset_zeros(&mut buf.data)
            .map_err(CudaError::driver("zeroing a buffer")));
    }

    fn duplicate(&self, buf: &CudaBuf) -> CudaBuf {
        CudaBuf {
            data: ok(self
                .dev
                .stream()
                .clone_dtod(&buf.data)
                .map_err(CudaError::driver("copying a buffer on the GPU"))),
            len: buf.len,
        }
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
        ok(self.dev.gemm::<f32>(
            (g.m, g.n, g.k),
            &a16,
            flag(g.trans_a),
            &b16,
            flag(g.trans_b),
            &mut c.view_mut(),
            g.alpha,
            g.beta,
        ));
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
            .grad_norm(&[GradRef::F32(&buf.data)], 0.0, &mut out));
        let norm = f64::from(ok(self.dev.download(&out))[0]);
        norm * norm
    }

    fn embedding(&self, table: &CudaBuf, ids: &[u32], dim: usize) -> CudaBuf {
        self.gather_rows(table, ids, dim)
    }

    fn embedding_backward(&self, dout: &CudaBuf, ids: &[u32], dim: usize, dtable: &mut CudaBuf) {
        self.scatter_add_rows(dout, ids, dim, dtable);
    }

    fn rms_norm(&self, x: &CudaBuf, w: &CudaBuf, dim: usize, eps: f32) -> (CudaBuf, CudaBuf) {
        let rows = x.len / dim;
        let (x16, w16) = (self.to_bf16(x), self.to_bf16(w));
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
        let mut x16 = self.to_bf16(x);
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
        if let Some(flash) = Self::flash_shape(shape, kv_start) {
            let (q16, k16, v16) = (self.to_bf16(q), self.to_bf16(k), self.to_bf16(v));
            let mut o = ok(self.dev.scratch::<bf16>(q.len));
            ok(self
                .dev
                .flash_attn_fwd(flash, &q16, &k16, &v16, &mut o, &mut lse.view_mut()));
            return (self.to_f32(&o), lse);
        }
        let starts = self.kv_starts(shape, kv_start);
        let mut out = self.alloc(q.len);
        ok(self.dev.attention_f32(
            Self::f32_shape(shape),
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
        if let Some(flash) = Self::flash_shape(shape, kv_start) {
            let (q16, k16, v16) = (self.to_bf16(q), self.to_bf16(k), self.to_bf16(v));
            let (o16, do16) = (self.to_bf16(out), self.to_bf16(dout));
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
                &mut dq,
                &mut dk,
                &mut dv,
            ));
            return (self.to_f32(&dq), self.to_f32(&dk), self.to_f32(&dv));
        }
        let starts = self.kv_starts(shape, kv_start);
        let (mut dq, mut dk, mut dv) = (self.alloc(q.len), self.alloc(k.len), self.alloc(v.len));
        ok(self.dev.attention_f32_bwd(
            Self::f32_shape(shape),
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
        let mut h = ok(self.dev.scratch::<bf16>(gate.len));
        ok(self.dev.swiglu_fwd(&g16, &u16, &mut h));
        self.to_f32(&h)
    }

    fn swiglu_backward(&self, gate: &CudaBuf, up: &CudaBuf, dh: &CudaBuf) -> (CudaBuf, CudaBuf) {
        let (g16, u16, d16) = (self.to_bf16(gate), self.to_bf16(up), self.to_bf16(dh));
        let mut dg = ok(self.dev.scratch::<bf16>(gate.len));
        let mut du = ok(self.dev.scratch::<bf16>(up.len));
        ok(self.dev.swiglu_bwd(&g16, &u16, &d16, &mut dg, &mut du));
        (self.to_f32(&dg), self.to_f32(&du))
    }

    fn dropout(&self, x: &CudaBuf, p: f32, seed: u64) -> CudaBuf {
        let mut y = self.alloc(x.len);
        if x.len > 0 {
            ok(self.dev.dropout(&x.view(), &mut y.view_mut(), p, seed));
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
        grads: Option<(&mut CudaBuf, Option<&mut CudaBuf>)>,
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
        let tgt = self.upload_ints(indices("token_nll", targets, vocab));
        let wts = ok(self.dev.upload(weights));
        let mut lse = ok(self.dev.scratch::<f32>(rows));
        let mut loss = ok(self.dev.scratch::<f32>(rows));
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
                &w16,
                Transpose::Yes,
                &mut lg,
                1.0,
                0.0,
            ));
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
                continue;
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
                &mut dh.data.slice_mut(r0 * dim..r1 * dim),
                1.0,
                0.0,
            ));
            if let Some(dw) = dw.as_mut() {
                ok(self.dev.gemm::<f32>(
                    (vocab, dim, n),
                    &lg,
                    Transpose::Yes,
                    &hc,
                    Transpose::No,
                    &mut dw.view_mut(),
                    1.0,
                    1.0,
                ));
            }
        }
        ok(self.dev.download(&loss))
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
        let hyper = AdamW {
            lr: h.lr,
            beta1: h.beta1,
            beta2: h.beta2,
            eps: h.eps,
            weight_decay: h.weight_decay,
            step: h.step,
        };
        // The kernel also writes a bf16 copy of the parameters for models
        // that read bf16 weights; the trait's parameters are the f32 master.
        let mut param16 = ok(self.dev.scratch::<bf16>(param.len));
        let unit = ok(self.dev.upload(&[1.0f32]));
        ok(self.dev.adamw_step(
            hyper,
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
