//! Row-wise LLaMA layers: embedding, RMSNorm, RoPE, SwiGLU, dropout and row
//! gathers. Each is a plain loop over rows, parallel with rayon.

use rayon::prelude::*;

use super::math::exp;
use crate::backend::splitmix64;

pub fn embedding(table: &[f32], ids: &[u32], dim: usize) -> Vec<f32> {
    let mut out = vec![0.0; ids.len() * dim];
    out.par_chunks_mut(dim).zip(ids).for_each(|(row, &id)| {
        let id = id as usize;
        row.copy_from_slice(&table[id * dim..(id + 1) * dim]);
    });
    out
}

pub fn embedding_backward(dout: &[f32], ids: &[u32], dim: usize, dtable: &mut [f32]) {
    for (row, &id) in dout.chunks(dim).zip(ids) {
        let id = id as usize;
        for (d, g) in dtable[id * dim..(id + 1) * dim].iter_mut().zip(row) {
            *d += g;
        }
    }
}

/// `narrow` is applied where the CUDA kernel rounds to bf16, to the
/// normalised value and to the output (HF's `w * x_hat.to(bf16)`); the f32
/// reference passes the identity.
pub fn rms_norm(
    x: &[f32],
    w: &[f32],
    dim: usize,
    eps: f32,
    narrow: impl Fn(f32) -> f32 + Sync,
) -> (Vec<f32>, Vec<f32>) {
    let rows = x.len() / dim;
    let mut y = vec![0.0; x.len()];
    let mut inv = vec![0.0; rows];
    y.par_chunks_mut(dim)
        .zip(inv.par_iter_mut())
        .zip(x.par_chunks(dim))
        .for_each(|((y, inv), x)| {
            let mean = x.iter().map(|v| v * v).sum::<f32>() / dim as f32;
            *inv = 1.0 / (mean + eps).sqrt();
            for ((y, x), w) in y.iter_mut().zip(x).zip(w) {
                *y = narrow(w * narrow(x * *inv));
            }
        });
    (y, inv)
}

/// `dx = r (w dy) - x r^3 mean(w dy x)`, `dw += sum_rows dy x r`.
pub fn rms_norm_backward(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    inv: &[f32],
    dim: usize,
    dw: Option<&mut [f32]>,
) -> Vec<f32> {
    let mut dx = vec![0.0; x.len()];
    dx.par_chunks_mut(dim)
        .zip(dy.par_chunks(dim))
        .zip(x.par_chunks(dim))
        .zip(inv.par_iter())
        .for_each(|(((dx, dy), x), &r)| {
            let dot: f32 = dy.iter().zip(w).zip(x).map(|((g, w), x)| g * w * x).sum();
            let c = r * r * r * dot / dim as f32;
            for (((dx, g), w), x) in dx.iter_mut().zip(dy).zip(w).zip(x) {
                *dx = r * g * w - c * x;
            }
        });
    if let Some(dw) = dw {
        for ((dy, x), &r) in dy.chunks(dim).zip(x.chunks(dim)).zip(inv) {
            for ((dw, g), x) in dw.iter_mut().zip(dy).zip(x) {
                *dw += g * x * r;
            }
        }
    }
    dx
}

pub fn rope(x: &mut [f32], positions: &[u32], heads: usize, inv_freq: &[f32], inverse: bool) {
    let half = inv_freq.len();
    let head_dim = 2 * half;
    let width = heads * head_dim;
    let sign = if inverse { -1.0 } else { 1.0 };
    x.par_chunks_mut(width)
        .zip(positions)
        .for_each(|(row, &pos)| {
            let (sin, cos): (Vec<f32>, Vec<f32>) =
                inv_freq.iter().map(|f| (pos as f32 * f).sin_cos()).unzip();
            for head in row.chunks_mut(head_dim) {
                let (lo, hi) = head.split_at_mut(half);
                for i in 0..half {
                    let (a, b) = (lo[i], hi[i]);
                    let s = sign * sin[i];
                    lo[i] = a * cos[i] - b * s;
                    hi[i] = b * cos[i] + a * s;
                }
            }
        });
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// Elements per parallel task of the elementwise SwiGLU loops: rayon's
/// per-element iterators cost more than the arithmetic, and a plain loop
/// over a slice this long vectorises (`exp` is branch-free).
const ELEMENTWISE_CHUNK: usize = 8192;

pub fn swiglu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    let mut h = vec![0.0; gate.len()];
    h.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(gate.par_chunks(ELEMENTWISE_CHUNK))
        .zip(up.par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|((h, gate), up)| {
            for ((h, &g), &u) in h.iter_mut().zip(gate).zip(up) {
                *h = silu(g) * u;
            }
        });
    h
}

pub fn swiglu_backward(gate: &[f32], up: &[f32], dh: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (mut dgate, mut dup) = (vec![0.0; gate.len()], vec![0.0; gate.len()]);
    dgate
        .par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(dup.par_chunks_mut(ELEMENTWISE_CHUNK))
        .zip(gate.par_chunks(ELEMENTWISE_CHUNK))
        .zip(
            up.par_chunks(ELEMENTWISE_CHUNK)
                .zip(dh.par_chunks(ELEMENTWISE_CHUNK)),
        )
        .for_each(|(((dgate, dup), gate), (up, dh))| {
            let outs = dgate.iter_mut().zip(dup.iter_mut());
            for ((dg, du), ((&g, &u), &d)) in outs.zip(gate.iter().zip(up).zip(dh)) {
                let s = sigmoid(g);
                let dsilu = s * (1.0 + g * (1.0 - s));
                *dg = d * u * dsilu;
                *du = d * g * s;
            }
        });
    (dgate, dup)
}

/// The counter-based uniform of [`crate::backend::Backend::dropout`].
pub fn dropout_uniform(seed: u64, index: u64) -> f32 {
    (splitmix64(seed ^ index) >> 40) as f32 / (1u64 << 24) as f32
}

/// [`crate::backend::Backend::dropout`]: rows of `x.len() / row_keys.len()`.
pub fn dropout(x: &[f32], p: f32, seed: u64, row_keys: &[u64]) -> Vec<f32> {
    let keep = 1.0 / (1.0 - p);
    let width = x.len().checked_div(row_keys.len()).unwrap_or(0);
    assert_eq!(
        width * row_keys.len(),
        x.len(),
        "dropout: rows do not divide x"
    );
    let mut y = vec![0.0; x.len()];
    y.par_chunks_mut(width.max(1))
        .zip(x.par_chunks(width.max(1)))
        .zip(row_keys.par_iter())
        .for_each(|((y, x), &key)| {
            for (c, (y, &v)) in y.iter_mut().zip(x).enumerate() {
                if dropout_uniform(seed ^ key, c as u64) >= p {
                    *y = v * keep;
                }
            }
        });
    y
}

pub fn gather_rows(x: &[f32], idx: &[u32], width: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(idx.len() * width);
    for &i in idx {
        let i = i as usize;
        out.extend_from_slice(&x[i * width..(i + 1) * width]);
    }
    out
}

pub fn scatter_add_rows(dy: &[f32], idx: &[u32], width: usize, dx: &mut [f32]) {
    for (row, &i) in dy.chunks(width).zip(idx) {
        let i = i as usize;
        for (d, g) in dx[i * width..(i + 1) * width].iter_mut().zip(row) {
            *d += g;
        }
    }
}
