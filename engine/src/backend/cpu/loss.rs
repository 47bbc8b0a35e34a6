//! Fused LM head + cross-entropy: logits exist for one chunk of rows at a
//! time, and masked rows (weight 0) are skipped entirely.

use std::ops::Range;

use rayon::prelude::*;

use super::math::exp_shifted_sum;
use super::matmul::matmul;
use crate::backend::{Gemm, round_all};

/// Rows per chunk: `CHUNK x vocab` floats at a time (128 x 128256 x 4 B =
/// 66 MB for Llama 3, a few KB for the tiny models). The memory planner
/// counts the same chunk.
pub const CHUNK: usize = 128;

/// `dh`, and the head's gradient with its segments (see
/// [`crate::backend::Backend::weight_grad`]) when the head trains.
pub type Grads<'a> = (
    &'a mut Vec<f32>,
    Option<(&'a mut [f32], &'a [Range<usize>])>,
);

/// With `bf16`, the logits and their gradient are rounded to bf16 where the
/// CUDA kernels store them in bf16 (the caller rounds `h` and `w`).
pub fn token_nll(
    h: &[f32],
    w: &[f32],
    dim: usize,
    targets: &[u32],
    weights: &[f32],
    mut grads: Option<Grads<'_>>,
    bf16: bool,
) -> Vec<f32> {
    let vocab = w.len() / dim;
    let rows = targets.len();
    let mut nll = vec![0.0; rows];
    if let Some((dh, _)) = grads.as_mut() {
        dh.clear();
        dh.resize(rows * dim, 0.0);
    }
    // With a head gradient, chunks never cross a segment (see
    // `Backend::weight_grad`); without one, all rows are one segment (the
    // values themselves are the same bits in any chunk).
    let all = 0..rows;
    let segments = match grads.as_ref().and_then(|(_, dw)| dw.as_ref()) {
        Some((_, segments)) => segments,
        None => std::slice::from_ref(&all),
    };
    debug_assert!(
        (0..rows).all(|r| weights[r] == 0.0 || segments.iter().any(|s| s.contains(&r))),
        "token_nll: a weighted row outside every segment"
    );
    let chunks: Vec<Vec<usize>> = segments
        .iter()
        .flat_map(|s| {
            let live: Vec<usize> = s.clone().filter(|&r| weights[r] != 0.0).collect();
            live.chunks(CHUNK)
                .map(<[usize]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect();
    for chunk in &chunks {
        let n = chunk.len();
        let mut hc = Vec::with_capacity(n * dim);
        for &r in chunk {
            hc.extend_from_slice(&h[r * dim..(r + 1) * dim]);
        }
        let mut logits = vec![0.0; n * vocab];
        matmul(&hc, w, &mut logits, Gemm::linear(n, vocab, dim));
        if bf16 {
            round_all(&mut logits);
        }
        let values: Vec<f32> = logits
            .par_chunks_mut(vocab)
            .zip(chunk.par_iter())
            .map(|(row, &r)| {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let target_logit = row[targets[r] as usize];
                // The row becomes exp(logit - max), then d value / d logits.
                let sum = exp_shifted_sum(row, max);
                let lse = max + sum.ln();
                let value = weights[r] * (lse - target_logit);
                let norm = weights[r] / sum;
                for x in row.iter_mut() {
                    *x *= norm;
                }
                row[targets[r] as usize] -= weights[r];
                value
            })
            .collect();
        for (&r, v) in chunk.iter().zip(values) {
            nll[r] = v;
        }
        if let Some((dh, dw)) = grads.as_mut() {
            if bf16 {
                round_all(&mut logits);
            }
            let mut dhc = vec![0.0; n * dim];
            matmul(&logits, w, &mut dhc, Gemm::plain(n, dim, vocab));
            for (i, &r) in chunk.iter().enumerate() {
                dh[r * dim..(r + 1) * dim].copy_from_slice(&dhc[i * dim..(i + 1) * dim]);
            }
            if let Some((dw, _)) = dw.as_mut() {
                matmul(&logits, &hc, dw, Gemm::weight_grad(vocab, dim, n));
            }
        }
    }
    nll
}

/// Per-row entropy of `softmax(h w^T)`, one chunk of logits at a time,
/// summed in f64. With `bf16`, the logits are rounded as the CUDA kernel
/// reads them (the caller rounds `h` and `w`).
pub fn token_entropy(h: &[f32], w: &[f32], dim: usize, bf16: bool) -> Vec<f32> {
    let vocab = w.len() / dim;
    let rows = h.len() / dim;
    let mut out = Vec::with_capacity(rows);
    for r0 in (0..rows).step_by(CHUNK) {
        let n = CHUNK.min(rows - r0);
        let mut logits = vec![0.0; n * vocab];
        matmul(
            &h[r0 * dim..(r0 + n) * dim],
            w,
            &mut logits,
            Gemm::linear(n, vocab, dim),
        );
        if bf16 {
            round_all(&mut logits);
        }
        out.par_extend(logits.par_chunks(vocab).map(entropy_of));
    }
    out
}

/// The entropy of the softmax of one row of logits.
pub fn entropy_of(row: &[f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let z: f64 = row.iter().map(|&x| f64::from(x - max).exp()).sum();
    let log_z = z.ln();
    let entropy: f64 = row
        .iter()
        .map(|&x| {
            let lp = f64::from(x - max) - log_z;
            -lp.exp() * lp
        })
        .sum();
    entropy as f32
}
