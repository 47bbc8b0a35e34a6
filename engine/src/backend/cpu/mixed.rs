//! [`CpuBf16`]: the CPU backend with the CUDA backend's mixed precision.
//!
//! Frozen weights are stored in bfloat16 (half the bytes of the reference,
//! as on the GPU), everything trainable and every sum in f32, and each op
//! rounds its inputs and outputs to bf16 exactly where the CUDA backend
//! hands them to a bf16 kernel or gets them back from one:
//!
//! | op | rounded to bf16 |
//! |---|---|
//! | `matmul` | `a` and `b` (f32 accumulation and output; a bf16 `c` on store) |
//! | `rms_norm` | `x`, `w`, the normalised value and `y` (HF's `w * x_hat.to(bf16)`) |
//! | `rms_norm_backward` | `dy`, `x`, `w` and `dx` (`dw` stays f32) |
//! | `rope` | `x` before and after the rotation |
//! | `attention` on flash shapes ([`AttnShape::is_flash`]) | `q`, `k`, `v` and the output; the backward also `out`, `dout`, `dq`, `dk`, `dv` |
//! | `swiglu` and its backward | inputs and outputs |
//! | `token_nll` | `h`, `w`, each chunk's logits and their gradient |
//! | `token_entropy` | `h`, `w` and each chunk's logits |
//!
//! Everything else (residual adds, the embedding gather, dropout, the f32
//! attention of decoding, AdamW, sampling) is the f32
//! reference's own code on f32 buffers. The arithmetic between rounding
//! points is the reference's, not the GPU's (summation order and fused
//! multiply-adds differ), so the two agree to bf16 precision, not bitwise.

use std::borrow::Cow;
use std::ops::Range;

use half::bf16;

use super::{Cpu, attention, layers, loss, matmul};
use crate::backend::{
    AdamWStep, AttnShape, Backend, Device, Dtype, Gemm, NllGrads, RowCopy, Sampling, round_all,
    round_bf16,
};

/// The mixed-precision CPU backend. Threads come from rayon's global pool,
/// as for [`Cpu`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBf16;

/// A host buffer of [`CpuBf16`], in either format.
#[derive(Clone, Debug, PartialEq)]
pub enum CpuBuf {
    F32(Vec<f32>),
    Bf16(Vec<bf16>),
}

impl CpuBuf {
    /// The values of an f32 buffer. Ops other than the weight readers take
    /// f32 only; a bf16 buffer there is a programming error.
    fn f32(&self, op: &str) -> &Vec<f32> {
        match self {
            CpuBuf::F32(v) => v,
            CpuBuf::Bf16(_) => panic!("{op}: expects an f32 buffer, got bf16"),
        }
    }

    fn f32_mut(&mut self, op: &str) -> &mut Vec<f32> {
        match self {
            CpuBuf::F32(v) => v,
            CpuBuf::Bf16(_) => panic!("{op}: expects an f32 buffer, got bf16"),
        }
    }

    /// The values as f32: borrowed when stored so, widened (exactly) when
    /// bf16.
    fn wide(&self) -> Cow<'_, [f32]> {
        match self {
            CpuBuf::F32(v) => Cow::Borrowed(v),
            CpuBuf::Bf16(v) => Cow::Owned(widen(v)),
        }
    }

    /// A copy of the values rounded to bf16, held as f32: what a bf16
    /// kernel reads.
    fn rounded(&self) -> Vec<f32> {
        match self {
            CpuBuf::F32(v) => v.iter().map(|&x| round_bf16(x)).collect(),
            CpuBuf::Bf16(v) => widen(v),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            CpuBuf::F32(v) => v.len(),
            CpuBuf::Bf16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn widen(v: &[bf16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

fn narrow(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}

/// Runs `f` on `c`'s values in f32; a bf16 `c` (a frozen weight a LoRA
/// product folds into) is widened first and rounded back on store.
fn into(c: &mut CpuBuf, f: impl FnOnce(&mut [f32])) {
    match c {
        CpuBuf::F32(c) => f(c),
        CpuBuf::Bf16(c16) => {
            let mut c = widen(c16);
            f(&mut c);
            *c16 = narrow(&c);
        }
    }
}

/// An op's f32 result, rounded to bf16 as the kernel stores it.
fn rounded_out(mut v: Vec<f32>) -> CpuBuf {
    round_all(&mut v);
    CpuBuf::F32(v)
}

impl Backend for CpuBf16 {
    type Buf = CpuBuf;

    fn device(&self) -> Device {
        Device::Cpu
    }

    fn weight_dtype(&self) -> Dtype {
        Dtype::Bf16
    }

    fn dtype(&self, buf: &CpuBuf) -> Dtype {
        match buf {
            CpuBuf::F32(_) => Dtype::F32,
            CpuBuf::Bf16(_) => Dtype::Bf16,
        }
    }

    fn to_dtype(&self, buf: CpuBuf, dtype: Dtype) -> CpuBuf {
        match (buf, dtype) {
            (CpuBuf::F32(v), Dtype::Bf16) => CpuBuf::Bf16(narrow(&v)),
            (CpuBuf::Bf16(v), Dtype::F32) => CpuBuf::F32(widen(&v)),
            (same, _) => same,
        }
    }

    fn upload_weight(&self, data: &[f32]) -> CpuBuf {
        CpuBuf::Bf16(narrow(data))
    }

    fn upload(&self, data: &[f32]) -> CpuBuf {
        CpuBuf::F32(data.to_vec())
    }

    fn download(&self, buf: &CpuBuf) -> Vec<f32> {
        buf.wide().into_owned()
    }

    fn zeros(&self, len: usize) -> CpuBuf {
        CpuBuf::F32(vec![0.0; len])
    }

    fn len(&self, buf: &CpuBuf) -> usize {
        buf.len()
    }

    fn set_zero(&self, buf: &mut CpuBuf) {
        match buf {
            CpuBuf::F32(v) => v.fill(0.0),
            CpuBuf::Bf16(v) => v.fill(bf16::ZERO),
        }
    }

    fn duplicate(&self, buf: &CpuBuf) -> CpuBuf {
        buf.clone()
    }

    fn copy_rows(&self, src: &CpuBuf, dst: &mut CpuBuf, c: RowCopy) {
        Cpu.copy_rows(src.f32("copy_rows"), dst.f32_mut("copy_rows"), c);
    }

    fn matmul(&self, a: &CpuBuf, b: &CpuBuf, c: &mut CpuBuf, g: Gemm) {
        let (a, b) = (a.rounded(), b.rounded());
        into(c, |c| matmul::matmul(&a, &b, c, g));
    }

    fn weight_grad(
        &self,
        dy: &CpuBuf,
        x: &CpuBuf,
        dw: &mut CpuBuf,
        g: Gemm,
        segments: &[Range<usize>],
    ) {
        let (dy, x) = (dy.rounded(), x.rounded());
        into(dw, |dw| matmul::weight_grad(&dy, &x, dw, g, segments));
    }

    fn axpy(&self, dst: &mut CpuBuf, alpha: f32, src: &CpuBuf) {
        Cpu.axpy(dst.f32_mut("axpy"), alpha, src.f32("axpy"));
    }

    fn scale(&self, buf: &mut CpuBuf, alpha: f32) {
        Cpu.scale(buf.f32_mut("scale"), alpha);
    }

    fn sum_squares(&self, buf: &CpuBuf) -> f64 {
        Cpu.sum_squares(buf.f32("sum_squares"))
    }

    fn embedding(&self, table: &CpuBuf, ids: &[u32], dim: usize) -> CpuBuf {
        match table {
            CpuBuf::F32(t) => CpuBuf::F32(layers::embedding(t, ids, dim)),
            CpuBuf::Bf16(t) => {
                let mut out = Vec::with_capacity(ids.len() * dim);
                for &id in ids {
                    let id = id as usize;
                    out.extend(t[id * dim..(id + 1) * dim].iter().map(|x| x.to_f32()));
                }
                CpuBuf::F32(out)
            }
        }
    }

    fn embedding_backward(&self, dout: &CpuBuf, ids: &[u32], dim: usize, dtable: &mut CpuBuf) {
        layers::embedding_backward(
            dout.f32("embedding_backward"),
            ids,
            dim,
            dtable.f32_mut("embedding_backward"),
        );
    }

    fn rms_norm(&self, x: &CpuBuf, w: &CpuBuf, dim: usize, eps: f32) -> (CpuBuf, CpuBuf) {
        let (y, inv) = layers::rms_norm(&x.rounded(), &w.rounded(), dim, eps, round_bf16);
        (CpuBuf::F32(y), CpuBuf::F32(inv))
    }

    fn rms_norm_backward(
        &self,
        dy: &CpuBuf,
        x: &CpuBuf,
        w: &CpuBuf,
        inv_rms: &CpuBuf,
        dim: usize,
        dw: Option<&mut CpuBuf>,
    ) -> CpuBuf {
        rounded_out(layers::rms_norm_backward(
            &dy.rounded(),
            &x.rounded(),
            &w.rounded(),
            inv_rms.f32("rms_norm_backward"),
            dim,
            dw.map(|d| d.f32_mut("rms_norm_backward").as_mut_slice()),
        ))
    }

    fn rope(
        &self,
        x: &mut CpuBuf,
        positions: &[u32],
        heads: usize,
        inv_freq: &[f32],
        inverse: bool,
    ) {
        let x = x.f32_mut("rope");
        round_all(x);
        layers::rope(x, positions, heads, inv_freq, inverse);
        round_all(x);
    }

    fn attention(
        &self,
        q: &CpuBuf,
        k: &CpuBuf,
        v: &CpuBuf,
        shape: AttnShape,
        kv_start: &[u32],
    ) -> (CpuBuf, CpuBuf) {
        let op = "attention";
        if !shape.is_flash() {
            let (out, lse) = attention::forward(q.f32(op), k.f32(op), v.f32(op), shape, kv_start);
            return (CpuBuf::F32(out), CpuBuf::F32(lse));
        }
        let (out, lse) =
            attention::forward(&q.rounded(), &k.rounded(), &v.rounded(), shape, kv_start);
        (rounded_out(out), CpuBuf::F32(lse))
    }

    fn attention_backward(
        &self,
        q: &CpuBuf,
        k: &CpuBuf,
        v: &CpuBuf,
        out: &CpuBuf,
        lse: &CpuBuf,
        dout: &CpuBuf,
        shape: AttnShape,
        kv_start: &[u32],
    ) -> (CpuBuf, CpuBuf, CpuBuf) {
        let op = "attention_backward";
        let lse = lse.f32(op);
        if !shape.is_flash() {
            let (dq, dk, dv) = attention::backward(
                q.f32(op),
                k.f32(op),
                v.f32(op),
                out.f32(op),
                lse,
                dout.f32(op),
                shape,
                kv_start,
            );
            return (CpuBuf::F32(dq), CpuBuf::F32(dk), CpuBuf::F32(dv));
        }
        let (dq, dk, dv) = attention::backward(
            &q.rounded(),
            &k.rounded(),
            &v.rounded(),
            &out.rounded(),
            lse,
            &dout.rounded(),
            shape,
            kv_start,
        );
        (rounded_out(dq), rounded_out(dk), rounded_out(dv))
    }

    fn swiglu(&self, gate: &CpuBuf, up: &CpuBuf) -> CpuBuf {
        rounded_out(layers::swiglu(&gate.rounded(), &up.rounded()))
    }

    fn swiglu_backward(&self, gate: &CpuBuf, up: &CpuBuf, dh: &CpuBuf) -> (CpuBuf, CpuBuf) {
        let (dg, du) = layers::swiglu_backward(&gate.rounded(), &up.rounded(), &dh.rounded());
        (rounded_out(dg), rounded_out(du))
    }

    fn dropout(&self, x: &CpuBuf, p: f32, seed: u64, row_keys: &[u64]) -> CpuBuf {
        CpuBuf::F32(layers::dropout(x.f32("dropout"), p, seed, row_keys))
    }

    fn token_nll(
        &self,
        h: &CpuBuf,
        w: &CpuBuf,
        dim: usize,
        targets: &[u32],
        weights: &[f32],
        grads: Option<NllGrads<'_, CpuBuf>>,
    ) -> Vec<f32> {
        let op = "token_nll";
        let grads = grads.map(|(dh, dw)| {
            if let CpuBuf::Bf16(_) = dh {
                *dh = CpuBuf::F32(Vec::new());
            }
            let dw = dw.map(|g| (g.dw.f32_mut(op).as_mut_slice(), g.segments));
            (dh.f32_mut(op), dw)
        });
        loss::token_nll(
            &h.rounded(),
            &w.rounded(),
            dim,
            targets,
            weights,
            grads,
            true,
        )
    }

    fn token_entropy(&self, h: &CpuBuf, w: &CpuBuf, dim: usize) -> Vec<f32> {
        loss::token_entropy(&h.rounded(), &w.rounded(), dim, true)
    }

    fn gather_rows(&self, x: &CpuBuf, idx: &[u32], width: usize) -> CpuBuf {
        CpuBuf::F32(layers::gather_rows(x.f32("gather_rows"), idx, width))
    }

    fn scatter_add_rows(&self, dy: &CpuBuf, idx: &[u32], width: usize, dx: &mut CpuBuf) {
        layers::scatter_add_rows(
            dy.f32("scatter_add_rows"),
            idx,
            width,
            dx.f32_mut("scatter_add_rows"),
        );
    }

    fn adamw(
        &self,
        param: &mut CpuBuf,
        grad: &CpuBuf,
        m: &mut CpuBuf,
        v: &mut CpuBuf,
        h: AdamWStep,
    ) {
        let op = "adamw";
        Cpu.adamw(
            param.f32_mut(op),
            grad.f32(op),
            m.f32_mut(op),
            v.f32_mut(op),
            h,
        );
    }

    fn sample(&self, logits: &CpuBuf, vocab: usize, how: Sampling, uniforms: &[f32]) -> Vec<u32> {
        Cpu.sample(logits.f32("sample"), vocab, how, uniforms)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Each op of [`CpuBf16`] on fresh random inputs, two ways: bitwise
    //! against the f32 reference run on inputs rounded where the CUDA
    //! kernels read bf16 and outputs rounded where they write it (the
    //! rounding points of the module table), and against the f32 reference
    //! on the raw inputs within bf16 precision (relative L2 error below
    //! 1e-2: one rounding is at most 2^-9 relative, a few add up).

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::backend::WeightGrad;

    fn rand_vec(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    fn r(v: &[f32]) -> Vec<f32> {
        v.iter().map(|&x| round_bf16(x)).collect()
    }

    fn f(v: &[f32]) -> CpuBuf {
        CpuBuf::F32(v.to_vec())
    }

    fn rel_err(a: &[f32], b: &[f32]) -> f32 {
        let num: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
        let den: f32 = b.iter().map(|y| y * y).sum();
        (num / den.max(1e-24)).sqrt()
    }

    /// Bitwise equal, and within bf16 precision of the f32 reference.
    fn check(what: &str, got: &[f32], emulated: &[f32], reference: &[f32]) {
        assert_eq!(got, emulated, "{what}: not rounded where CUDA rounds");
        let err = rel_err(got, reference);
        assert!(err < 1e-2, "{what}: {err} from the f32 reference");
    }

    #[test]
    fn frozen_weights_are_stored_in_bf16_and_convert_both_ways() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let w = rand_vec(&mut rng, 1000);
        let be = CpuBf16;
        let stored = be.upload_weight(&w);
        assert_eq!(be.dtype(&stored), Dtype::Bf16);
        let CpuBuf::Bf16(bits) = &stored else {
            unreachable!()
        };
        assert_eq!(std::mem::size_of_val(bits.as_slice()), 2 * w.len());
        assert_eq!(be.download(&stored), r(&w));
        let master = be.to_dtype(stored, Dtype::F32);
        assert_eq!(be.dtype(&master), Dtype::F32);
        assert_eq!(be.download(&master), r(&w));
        assert_eq!(be.dtype(&be.upload(&w)), Dtype::F32);
        assert_eq!(be.download(&be.upload(&w)), w);
    }

    #[test]
    fn matmul_rounds_its_operands_and_a_bf16_result() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (m, n, k) = (7, 33, 65);
        let (a, b, c0) = (
            rand_vec(&mut rng, m * k),
            rand_vec(&mut rng, n * k),
            rand_vec(&mut rng, m * n),
        );
        let g = Gemm::linear(m, n, k).scaled(0.5).accumulate();
        let mut c = f(&c0);
        CpuBf16.matmul(&f(&a), &CpuBf16.upload_weight(&b), &mut c, g);
        let (mut emulated, mut reference) = (c0.clone(), c0.clone());
        Cpu.matmul(&r(&a), &r(&b), &mut emulated, g);
        Cpu.matmul(&a, &b, &mut reference, g);
        check("matmul", &CpuBf16.download(&c), &emulated, &reference);

        // Folding a LoRA product into a frozen bf16 weight rounds on store.
        let mut c = CpuBf16.upload_weight(&c0);
        CpuBf16.matmul(&f(&a), &f(&b), &mut c, g);
        assert_eq!(CpuBf16.dtype(&c), Dtype::Bf16);
        let mut emulated = r(&c0);
        Cpu.matmul(&r(&a), &r(&b), &mut emulated, g);
        check(
            "matmul into bf16",
            &CpuBf16.download(&c),
            &r(&emulated),
            &reference,
        );
    }

    #[test]
    fn rms_norm_rounds_the_normalised_value_and_the_output() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (rows, dim) = (5, 96);
        let (x, w, dy) = (
            rand_vec(&mut rng, rows * dim),
            rand_vec(&mut rng, dim),
            rand_vec(&mut rng, rows * dim),
        );
        let (y, inv) = CpuBf16.rms_norm(&f(&x), &CpuBf16.upload_weight(&w), dim, 1e-5);
        let (emulated, inv_emulated) = layers::rms_norm(&r(&x), &r(&w), dim, 1e-5, round_bf16);
        let (reference, _) = Cpu.rms_norm(&x, &w, dim, 1e-5);
        check("rms_norm", &CpuBf16.download(&y), &emulated, &reference);
        assert_eq!(CpuBf16.download(&inv), inv_emulated);

        let mut dw = f(&vec![0.0; dim]);
        let dx = CpuBf16.rms_norm_backward(&f(&dy), &f(&x), &f(&w), &inv, dim, Some(&mut dw));
        let mut dw_emulated = vec![0.0; dim];
        let dx_emulated = layers::rms_norm_backward(
            &r(&dy),
            &r(&x),
            &r(&w),
            &inv_emulated,
            dim,
            Some(&mut dw_emulated),
        );
        let (_, inv_ref) = Cpu.rms_norm(&x, &w, dim, 1e-5);
        let mut dw_ref = vec![0.0; dim];
        let dx_ref = Cpu.rms_norm_backward(&dy, &x, &w, &inv_ref, dim, Some(&mut dw_ref));
        check(
            "rms_norm dx",
            &CpuBf16.download(&dx),
            &r(&dx_emulated),
            &dx_ref,
        );
        check("rms_norm dw", &CpuBf16.download(&dw), &dw_emulated, &dw_ref);
    }

    #[test]
    fn rope_and_swiglu_round_inputs_and_outputs() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let (tokens, heads, head_dim) = (6, 3, 16);
        let x = rand_vec(&mut rng, tokens * heads * head_dim);
        let positions: Vec<u32> = (0..tokens as u32).map(|p| 3 * p + 1).collect();
        let inv_freq: Vec<f32> = (0..head_dim / 2)
            .map(|i| 10000f32.powf(-((2 * i) as f32) / head_dim as f32))
            .collect();
        let mut got = f(&x);
        CpuBf16.rope(&mut got, &positions, heads, &inv_freq, false);
        let mut emulated = r(&x);
        Cpu.rope(&mut emulated, &positions, heads, &inv_freq, false);
        let mut reference = x.clone();
        Cpu.rope(&mut reference, &positions, heads, &inv_freq, false);
        check("rope", &CpuBf16.download(&got), &r(&emulated), &reference);

        let n = 999;
        let (g, u, dh) = (
            rand_vec(&mut rng, n),
            rand_vec(&mut rng, n),
            rand_vec(&mut rng, n),
        );
        let h = CpuBf16.swiglu(&f(&g), &f(&u));
        let emulated = r(&Cpu.swiglu(&r(&g), &r(&u)));
        check(
            "swiglu",
            &CpuBf16.download(&h),
            &emulated,
            &Cpu.swiglu(&g, &u),
        );
        let (dg, du) = CpuBf16.swiglu_backward(&f(&g), &f(&u), &f(&dh));
        let (dg_e, du_e) = Cpu.swiglu_backward(&r(&g), &r(&u), &r(&dh));
        let (dg_r, du_r) = Cpu.swiglu_backward(&g, &u, &dh);
        check("swiglu dgate", &CpuBf16.download(&dg), &r(&dg_e), &dg_r);
        check("swiglu dup", &CpuBf16.download(&du), &r(&du_e), &du_r);
    }

    #[test]
    fn attention_rounds_on_flash_shapes_only() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let shape = AttnShape::causal(2, 9, 4, 2, 64);
        let (q, k, v, dout) = (
            rand_vec(&mut rng, 2 * 9 * 4 * 64),
            rand_vec(&mut rng, 2 * 9 * 2 * 64),
            rand_vec(&mut rng, 2 * 9 * 2 * 64),
            rand_vec(&mut rng, 2 * 9 * 4 * 64),
        );
        assert!(shape.is_flash());
        // Unpadded and left-padded batches both go to the flash kernels.
        for starts in [[0, 0], [0, 3]] {
            let (o, lse) = CpuBf16.attention(&f(&q), &f(&k), &f(&v), shape, &starts);
            let (o_e, lse_e) = Cpu.attention(&r(&q), &r(&k), &r(&v), shape, &starts);
            let (o_r, lse_r) = Cpu.attention(&q, &k, &v, shape, &starts);
            check("attention", &CpuBf16.download(&o), &r(&o_e), &o_r);
            assert_eq!(CpuBf16.download(&lse), lse_e);
            let (dq, dk, dv) = CpuBf16.attention_backward(
                &f(&q),
                &f(&k),
                &f(&v),
                &o,
                &lse,
                &f(&dout),
                shape,
                &starts,
            );
            let o16 = CpuBf16.download(&o);
            let (dq_e, dk_e, dv_e) = Cpu.attention_backward(
                &r(&q),
                &r(&k),
                &r(&v),
                &o16,
                &lse_e,
                &r(&dout),
                shape,
                &starts,
            );
            let (dq_r, dk_r, dv_r) =
                Cpu.attention_backward(&q, &k, &v, &o_r, &lse_r, &dout, shape, &starts);
            check("attention dq", &CpuBf16.download(&dq), &r(&dq_e), &dq_r);
            check("attention dk", &CpuBf16.download(&dk), &r(&dk_e), &dk_r);
            check("attention dv", &CpuBf16.download(&dv), &r(&dv_e), &dv_r);
        }

        // Decoding against a cache goes to CUDA's f32 kernel: the reference
        // exactly.
        let decode = AttnShape {
            q_len: 1,
            q_offset: 8,
            ..shape
        };
        assert!(!decode.is_flash());
        let q1 = q[..2 * 4 * 64].to_vec();
        let (o, _) = CpuBf16.attention(&f(&q1), &f(&k), &f(&v), decode, &[0, 3]);
        assert_eq!(
            CpuBf16.download(&o),
            Cpu.attention(&q1, &k, &v, decode, &[0, 3]).0
        );
    }

    #[test]
    fn token_nll_rounds_logits_and_their_gradient() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let (rows, dim, vocab) = (11, 32, 50);
        let (h, w) = (
            rand_vec(&mut rng, rows * dim),
            rand_vec(&mut rng, vocab * dim),
        );
        let targets: Vec<u32> = (0..rows)
            .map(|_| rng.random_range(0..vocab as u32))
            .collect();
        let weights: Vec<f32> = (0..rows)
            .map(|i| if i % 4 == 3 { 0.0 } else { 0.1 })
            .collect();
        let (mut dh, mut dw) = (CpuBf16.zeros(0), f(&vec![0.0; vocab * dim]));
        let segments: Vec<Range<usize>> = std::iter::once(0..rows).collect();
        let head = WeightGrad {
            dw: &mut dw,
            segments: &segments,
        };
        let nll = CpuBf16.token_nll(
            &f(&h),
            &CpuBf16.upload_weight(&w),
            dim,
            &targets,
            &weights,
            Some((&mut dh, Some(head))),
        );
        let (mut dh_e, mut dw_e) = (Vec::new(), vec![0.0; vocab * dim]);
        let nll_e = loss::token_nll(
            &r(&h),
            &r(&w),
            dim,
            &targets,
            &weights,
            Some((&mut dh_e, Some((&mut dw_e[..], &segments[..])))),
            true,
        );
        let (mut dh_r, mut dw_r) = (Vec::new(), vec![0.0; vocab * dim]);
        let nll_r = Cpu.token_nll(
            &h,
            &w,
            dim,
            &targets,
            &weights,
            Some((
                &mut dh_r,
                Some(WeightGrad {
                    dw: &mut dw_r,
                    segments: &segments,
                }),
            )),
        );
        check("token_nll", &nll, &nll_e, &nll_r);
        check("token_nll dh", &CpuBf16.download(&dh), &dh_e, &dh_r);
        check("token_nll dw", &CpuBf16.download(&dw), &dw_e, &dw_r);
        // The logits themselves are rounded: without that the values move.
        let (mut dh_u, mut dw_u) = (Vec::new(), vec![0.0; vocab * dim]);
        let unrounded = loss::token_nll(
            &r(&h),
            &r(&w),
            dim,
            &targets,
            &weights,
            Some((&mut dh_u, Some((&mut dw_u[..], &segments[..])))),
            false,
        );
        assert_ne!(unrounded, nll_e);
    }

    #[test]
    fn token_entropy_rounds_logits_over_several_chunks() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let (rows, dim, vocab) = (300, 16, 40);
        let (h, w) = (
            rand_vec(&mut rng, rows * dim),
            rand_vec(&mut rng, vocab * dim),
        );
        let got = CpuBf16.token_entropy(&f(&h), &CpuBf16.upload_weight(&w), dim);
        let emulated = loss::token_entropy(&r(&h), &r(&w), dim, true);
        check(
            "token_entropy",
            &got,
            &emulated,
            &Cpu.token_entropy(&h, &w, dim),
        );
    }

    #[test]
    fn embedding_reads_bf16_rows_exactly() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (vocab, dim) = (20, 12);
        let table = rand_vec(&mut rng, vocab * dim);
        let ids = [3, 3, 0, 19, 7];
        let out = CpuBf16.embedding(&CpuBf16.upload_weight(&table), &ids, dim);
        assert_eq!(CpuBf16.download(&out), Cpu.embedding(&r(&table), &ids, dim));
    }
}
