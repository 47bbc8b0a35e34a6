//! Causal GQA attention, forward and flash-style backward (probabilities
//! recomputed from the saved logsumexp), as per-head GEMMs over blocks of
//! queries: one rayon task per (batch, head) forward and per (batch, kv
//! head) backward, so gradient writes to a key or value never race. A
//! block's scores `[QUERY_BLOCK, keys]` are the only quadratic buffer.
//!
//! A sequence's blocks start at its first query that sees a key, and its
//! keys at `kv_start`: left padding is skipped, not masked, so a sequence
//! gets the same bits alone or padded in a batch.

use rayon::prelude::*;

use super::math::{exp, exp_shifted_sum};
use super::matmul::matmul;
use crate::backend::{AttnShape, Gemm};

/// Queries per block: bounds the score buffer at `QUERY_BLOCK x kv_len`.
const QUERY_BLOCK: usize = 128;

/// Indices into the flat layouts of an [`AttnShape`].
struct Layout {
    s: AttnShape,
}

impl Layout {
    fn q(&self, b: usize, i: usize, h: usize) -> usize {
        ((b * self.s.q_len + i) * self.s.heads + h) * self.s.head_dim
    }
    fn kv(&self, b: usize, j: usize, h: usize) -> usize {
        ((b * self.s.kv_cap + j) * self.s.kv_heads + h) * self.s.head_dim
    }
    /// The keys query `i` of batch `b` sees.
    fn keys(&self, start: usize, i: usize) -> std::ops::Range<usize> {
        let end = (self.s.q_offset + i + 1).min(self.s.kv_len);
        start.min(end)..end
    }
    /// Keys any query of the block `i0..i1` sees end before this.
    fn block_keys(&self, i1: usize) -> usize {
        (self.s.q_offset + i1).min(self.s.kv_len)
    }
    /// Batch `b`'s first key, and its first query that sees one.
    fn starts(&self, kv_start: &[u32], b: usize) -> (usize, usize) {
        let start = (kv_start[b] as usize).min(self.s.kv_len);
        (
            start,
            start.saturating_sub(self.s.q_offset).min(self.s.q_len),
        )
    }
    fn group(&self) -> usize {
        self.s.heads / self.s.kv_heads
    }
    /// Head `h` of the queries (or outputs) of batch `b`, contiguous `[q_len, d]`.
    fn gather_q(&self, x: &[f32], b: usize, h: usize) -> Vec<f32> {
        let d = self.s.head_dim;
        let mut out = Vec::with_capacity(self.s.q_len * d);
        for i in 0..self.s.q_len {
            out.extend_from_slice(&x[self.q(b, i, h)..][..d]);
        }
        out
    }
    /// KV head `h` of batch `b`, contiguous `[kv_len, d]`.
    fn gather_kv(&self, x: &[f32], b: usize, h: usize) -> Vec<f32> {
        let d = self.s.head_dim;
        let mut out = Vec::with_capacity(self.s.kv_len * d);
        for j in 0..self.s.kv_len {
            out.extend_from_slice(&x[self.kv(b, j, h)..][..d]);
        }
        out
    }
}

/// Scaled scores of queries `i0..i0 + nq` against the first `nk` keys of `kh`.
fn scores(
    qh: &[f32],
    kh: &[f32],
    i0: usize,
    nq: usize,
    nk: usize,
    d: usize,
    scale: f32,
) -> Vec<f32> {
    let mut s = vec![0.0; nq * nk];
    let g = Gemm::linear(nq, nk, d).scaled(scale);
    matmul(&qh[i0 * d..(i0 + nq) * d], &kh[..nk * d], &mut s, g);
    s
}

pub fn forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: AttnShape,
    kv_start: &[u32],
) -> (Vec<f32>, Vec<f32>) {
    let l = Layout { s };
    let d = s.head_dim;
    let scale = 1.0 / (d as f32).sqrt();
    let per_head: Vec<(Vec<f32>, Vec<f32>)> = (0..s.batch * s.heads)
        .into_par_iter()
        .map(|bh| {
            let (b, h) = (bh / s.heads, bh % s.heads);
            let (start, first) = l.starts(kv_start, b);
            let kvh = h / l.group();
            let (qh, kh, vh) = (
                l.gather_q(q, b, h),
                l.gather_kv(k, b, kvh),
                l.gather_kv(v, b, kvh),
            );
            let mut out = vec![0.0; s.q_len * d];
            let mut lse = vec![f32::NEG_INFINITY; s.q_len];
            let (kh, vh) = (&kh[start * d..], &vh[start * d..]);
            for i0 in (first..s.q_len).step_by(QUERY_BLOCK) {
                let nq = QUERY_BLOCK.min(s.q_len - i0);
                let nk = l.block_keys(i0 + nq) - start;
                let mut p = scores(&qh, kh, i0, nq, nk, d, scale);
                for (r, row) in p.chunks_mut(nk).enumerate() {
                    let keys = l.keys(start, i0 + r);
                    let seen = keys.start - start..keys.end - start;
                    row[..seen.start].fill(0.0);
                    row[seen.end..].fill(0.0);
                    if seen.is_empty() {
                        continue;
                    }
                    let row = &mut row[seen];
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let sum = exp_shifted_sum(row, max);
                    for x in row.iter_mut() {
                        *x /= sum;
                    }
                    lse[i0 + r] = max + sum.ln();
                }
                matmul(
                    &p,
                    vh,
                    &mut out[i0 * d..(i0 + nq) * d],
                    Gemm::plain(nq, d, nk),
                );
            }
            (out, lse)
        })
        .collect();
    let mut out = vec![0.0; s.batch * s.q_len * s.heads * d];
    let mut lse = Vec::with_capacity(s.batch * s.heads * s.q_len);
    for (bh, (o, head_lse)) in per_head.into_iter().enumerate() {
        let (b, h) = (bh / s.heads, bh % s.heads);
        for i in 0..s.q_len {
            out[l.q(b, i, h)..][..d].copy_from_slice(&o[i * d..(i + 1) * d]);
        }
        lse.extend(head_lse);
    }
    (out, lse)
}

#[allow(clippy::too_many_arguments)]
pub fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    s: AttnShape,
    kv_start: &[u32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let l = Layout { s };
    let d = s.head_dim;
    let g = l.group();
    let scale = 1.0 / (d as f32).sqrt();
    // Per (batch, kv head): dq of its query heads [g, q_len, d], dk and dv
    // of its keys [kv_len, d].
    type Part = (Vec<f32>, Vec<f32>, Vec<f32>);
    let parts: Vec<Part> = (0..s.batch * s.kv_heads)
        .into_par_iter()
        .map(|bk| {
            let (b, kvh) = (bk / s.kv_heads, bk % s.kv_heads);
            let (start, first) = l.starts(kv_start, b);
            let (kh, vh) = (l.gather_kv(k, b, kvh), l.gather_kv(v, b, kvh));
            let (kh, vh) = (&kh[start * d..], &vh[start * d..]);
            let mut dq = vec![0.0; g * s.q_len * d];
            let mut dk = vec![0.0; s.kv_len * d];
            let mut dv = vec![0.0; s.kv_len * d];
            for hg in 0..g {
                let h = kvh * g + hg;
                let (qh, oh, doh) = (
                    l.gather_q(q, b, h),
                    l.gather_q(out, b, h),
                    l.gather_q(dout, b, h),
                );
                let head_lse = &lse[(b * s.heads + h) * s.q_len..][..s.q_len];
                for i0 in (first..s.q_len).step_by(QUERY_BLOCK) {
                    let nq = QUERY_BLOCK.min(s.q_len - i0);
                    let nk = l.block_keys(i0 + nq) - start;
                    let rows = i0 * d..(i0 + nq) * d;
                    let mut p = scores(&qh, kh, i0, nq, nk, d, scale);
                    for (r, row) in p.chunks_mut(nk).enumerate() {
                        let keys = l.keys(start, i0 + r);
                        let seen = keys.start - start..keys.end - start;
                        let shift = head_lse[i0 + r];
                        row[..seen.start].fill(0.0);
                        row[seen.end..].fill(0.0);
                        for x in &mut row[seen] {
                            *x = exp(*x - shift);
                        }
                    }
                    let keys = start * d..(start + nk) * d;
                    matmul(
                        &p,
                        &doh[rows.clone()],
                        &mut dv[keys.clone()],
                        Gemm::weight_grad(nk, d, nq),
                    );
                    let mut ds = vec![0.0; nq * nk];
                    matmul(
                        &doh[rows.clone()],
                        &vh[..nk * d],
                        &mut ds,
                        Gemm::linear(nq, nk, d),
                    );
                    for (r, (ds_row, p_row)) in ds.chunks_mut(nk).zip(p.chunks(nk)).enumerate() {
                        let at = (i0 + r) * d;
                        let delta: f32 = doh[at..at + d]
                            .iter()
                            .zip(&oh[at..at + d])
                            .map(|(x, y)| x * y)
                            .sum();
                        for (x, &pj) in ds_row.iter_mut().zip(p_row) {
                            *x = pj * (*x - delta) * scale;
                        }
                    }
                    let dq_rows = (hg * s.q_len + i0) * d..(hg * s.q_len + i0 + nq) * d;
                    matmul(&ds, &kh[..nk * d], &mut dq[dq_rows], Gemm::plain(nq, d, nk));
                    matmul(&ds, &qh[rows], &mut dk[keys], Gemm::weight_grad(nk, d, nq));
                }
            }
            (dq, dk, dv)
        })
        .collect();
    let mut dq = vec![0.0; q.len()];
    let mut dk = vec![0.0; k.len()];
    let mut dv = vec![0.0; v.len()];
    for (bk, (pq, pk, pv)) in parts.into_iter().enumerate() {
        let (b, kvh) = (bk / s.kv_heads, bk % s.kv_heads);
        for hg in 0..g {
            for i in 0..s.q_len {
                dq[l.q(b, i, kvh * g + hg)..][..d]
                    .copy_from_slice(&pq[(hg * s.q_len + i) * d..][..d]);
            }
        }
        for j in 0..s.kv_len {
            dk[l.kv(b, j, kvh)..][..d].copy_from_slice(&pk[j * d..][..d]);
            dv[l.kv(b, j, kvh)..][..d].copy_from_slice(&pv[j * d..][..d]);
        }
    }
    (dq, dk, dv)
}
