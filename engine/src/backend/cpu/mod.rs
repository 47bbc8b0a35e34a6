//! The CPU backend: f32 everywhere, rayon across rows and heads, the `gemm`
//! crate for products. It is the reference every other backend is tested
//! against, so each op is written for clarity first.

mod attention;
mod layers;
mod loss;
mod math;
mod matmul;
mod mixed;
mod optim;
#[cfg(target_arch = "x86_64")]
mod skinny;
#[cfg(test)]
mod tests;

use std::ops::Range;

use super::{AdamWStep, AttnShape, Backend, Device, Dtype, Gemm, NllGrads, RowCopy, Sampling};

pub use loss::CHUNK as LOGITS_CHUNK_ROWS;
pub use matmul::warm_up;
pub use mixed::{CpuBf16, CpuBuf};

pub use layers::dropout_uniform;

/// The CPU backend. Threads come from rayon's global pool
/// (`RAYON_NUM_THREADS`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

impl Backend for Cpu {
    type Buf = Vec<f32>;

    fn device(&self) -> Device {
        Device::Cpu
    }

    fn weight_dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn dtype(&self, _buf: &Vec<f32>) -> Dtype {
        Dtype::F32
    }

    fn to_dtype(&self, buf: Vec<f32>, dtype: Dtype) -> Vec<f32> {
        assert_eq!(
            dtype,
            Dtype::F32,
            "the f32 CPU backend stores f32 only (CpuBf16 stores bf16)"
        );
        buf
    }

    fn upload(&self, data: &[f32]) -> Vec<f32> {
        data.to_vec()
    }

    fn download(&self, buf: &Vec<f32>) -> Vec<f32> {
        buf.clone()
    }

    fn zeros(&self, len: usize) -> Vec<f32> {
        vec![0.0; len]
    }

    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn set_zero(&self, buf: &mut Vec<f32>) {
        buf.fill(0.0);
    }

    fn duplicate(&self, buf: &Vec<f32>) -> Vec<f32> {
        buf.clone()
    }

    fn copy_rows(&self, src: &Vec<f32>, dst: &mut Vec<f32>, c: RowCopy) {
        for block in 0..c.count {
            let from = (block * c.src_block + c.src_row) * c.width;
            let to = (block * c.dst_block + c.dst_row) * c.width;
            let n = c.rows * c.width;
            dst[to..to + n].copy_from_slice(&src[from..from + n]);
        }
    }

    fn matmul(&self, a: &Vec<f32>, b: &Vec<f32>, c: &mut Vec<f32>, g: Gemm) {
        matmul::matmul(a, b, c, g);
    }

    fn weight_grad(
        &self,
        dy: &Vec<f32>,
        x: &Vec<f32>,
        dw: &mut Vec<f32>,
        g: Gemm,
        segments: &[Range<usize>],
    ) {
        matmul::weight_grad(dy, x, dw, g, segments);
    }

    fn axpy(&self, dst: &mut Vec<f32>, alpha: f32, src: &Vec<f32>) {
        assert_eq!(dst.len(), src.len(), "axpy: lengths differ");
        for (d, s) in dst.iter_mut().zip(src) {
            *d += alpha * s;
        }
    }

    fn scale(&self, buf: &mut Vec<f32>, alpha: f32) {
        for x in buf.iter_mut() {
            *x *= alpha;
        }
    }

    fn sum_squares(&self, buf: &Vec<f32>) -> f64 {
        buf.iter().map(|&x| (x as f64) * (x as f64)).sum()
    }

    fn embedding(&self, table: &Vec<f32>, ids: &[u32], dim: usize) -> Vec<f32> {
        layers::embedding(table, ids, dim)
    }

    fn embedding_backward(&self, dout: &Vec<f32>, ids: &[u32], dim: usize, dtable: &mut Vec<f32>) {
        layers::embedding_backward(dout, ids, dim, dtable);
    }

    fn rms_norm(&self, x: &Vec<f32>, w: &Vec<f32>, dim: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
        layers::rms_norm(x, w, dim, eps, |v| v)
    }

    fn rms_norm_backward(
        &self,
        dy: &Vec<f32>,
        x: &Vec<f32>,
        w: &Vec<f32>,
        inv_rms: &Vec<f32>,
        dim: usize,
        dw: Option<&mut Vec<f32>>,
    ) -> Vec<f32> {
        layers::rms_norm_backward(dy, x, w, inv_rms, dim, dw.map(|v| v.as_mut_slice()))
    }

    fn rope(
        &self,
        x: &mut Vec<f32>,
        positions: &[u32],
        heads: usize,
        inv_freq: &[f32],
        inverse: bool,
    ) {
        layers::rope(x, positions, heads, inv_freq, inverse);
    }

    fn attention(
        &self,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        shape: AttnShape,
        kv_start: &[u32],
    ) -> (Vec<f32>, Vec<f32>) {
        attention::forward(q, k, v, shape, kv_start)
    }

    fn attention_backward(
        &self,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        out: &Vec<f32>,
        lse: &Vec<f32>,
        dout: &Vec<f32>,
        shape: AttnShape,
        kv_start: &[u32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        attention::backward(q, k, v, out, lse, dout, shape, kv_start)
    }

    fn swiglu(&self, gate: &Vec<f32>, up: &Vec<f32>) -> Vec<f32> {
        layers::swiglu(gate, up)
    }

    fn swiglu_backward(
        &self,
        gate: &Vec<f32>,
        up: &Vec<f32>,
        dh: &Vec<f32>,
    ) -> (Vec<f32>, Vec<f32>) {
        layers::swiglu_backward(gate, up, dh)
    }

    fn dropout(&self, x: &Vec<f32>, p: f32, seed: u64, row_keys: &[u64]) -> Vec<f32> {
        layers::dropout(x, p, seed, row_keys)
    }

    fn token_nll(
        &self,
        h: &Vec<f32>,
        w: &Vec<f32>,
        dim: usize,
        targets: &[u32],
        weights: &[f32],
        grads: Option<NllGrads<'_, Vec<f32>>>,
    ) -> Vec<f32> {
        let grads = grads.map(|(dh, dw)| (dh, dw.map(|g| (g.dw.as_mut_slice(), g.segments))));
        loss::token_nll(h, w, dim, targets, weights, grads, false)
    }

    fn token_entropy(&self, h: &Vec<f32>, w: &Vec<f32>, dim: usize) -> Vec<f32> {
        loss::token_entropy(h, w, dim, false)
    }

    fn gather_rows(&self, x: &Vec<f32>, idx: &[u32], width: usize) -> Vec<f32> {
        layers::gather_rows(x, idx, width)
    }

    fn scatter_add_rows(&self, dy: &Vec<f32>, idx: &[u32], width: usize, dx: &mut Vec<f32>) {
        layers::scatter_add_rows(dy, idx, width, dx);
    }

    fn adamw(
        &self,
        param: &mut Vec<f32>,
        grad: &Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
        h: AdamWStep,
    ) {
        optim::adamw(param, grad, m, v, h);
    }

    fn sample(&self, logits: &Vec<f32>, vocab: usize, how: Sampling, uniforms: &[f32]) -> Vec<u32> {
        optim::sample(logits, vocab, how, uniforms)
    }
}
