//! Causal GQA attention, forward and flash-style backward (probabilities
//! recomputed from the saved logsumexp). One rayon task per (batch, head)
//! forward and per (batch, kv head) backward, so gradient writes to a key
//! or value never race.

use rayon::prelude::*;

use crate::backend::AttnShape;

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

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
    fn keys(&self, kv_start: &[u32], b: usize, i: usize) -> std::ops::Range<usize> {
        let start = kv_start[b] as usize;
        let end = (self.s.q_offset + i + 1).min(self.s.kv_len);
        start..end.max(start)
    }
    fn group(&self) -> usize {
        self.s.heads / self.s.kv_heads
    }
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
            let kvh = h / l.group();
            let mut out = vec![0.0; s.q_len * d];
            let mut lse = vec![f32::NEG_INFINITY; s.q_len];
            let mut scores = Vec::with_capacity(s.kv_len);
            for i in 0..s.q_len {
                let keys = l.keys(kv_start, b, i);
                if keys.is_empty() {
                    continue;
                }
                let qi = &q[l.q(b, i, h)..][..d];
                scores.clear();
                scores.extend(
                    keys.clone()
                        .map(|j| dot(qi, &k[l.kv(b, j, kvh)..][..d]) * scale),
                );
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for x in &mut scores {
                    *x = (*x - max).exp();
                    sum += *x;
                }
                let o = &mut out[i * d..(i + 1) * d];
                for (p, j) in scores.iter().zip(keys) {
                    let vj = &v[l.kv(b, j, kvh)..][..d];
                    for (o, v) in o.iter_mut().zip(vj) {
                        *o += p * v;
                    }
                }
                for o in o.iter_mut() {
                    *o /= sum;
                }
                lse[i] = max + sum.ln();
            }
            (out, lse)
        })
        .collect();
    let mut out = vec![0.0; s.batch * s.q_len * s.heads * d];
    let mut lse = Vec::with_capacity(s.batch * s.heads * s.q_len);
    for (bh, (o, l_)) in per_head.into_iter().enumerate() {
        let (b, h) = (bh / s.heads, bh % s.heads);
        for i in 0..s.q_len {
            out[l.q(b, i, h)..][..d].copy_from_slice(&o[i * d..(i + 1) * d]);
        }
        lse.extend(l_);
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
            let mut dq = vec![0.0; g * s.q_len * d];
            let mut dk = vec![0.0; s.kv_len * d];
            let mut dv = vec![0.0; s.kv_len * d];
            for hg in 0..g {
                let h = kvh * g + hg;
                for i in 0..s.q_len {
                    let keys = l.keys(kv_start, b, i);
                    if keys.is_empty() {
                        continue;
                    }
                    let at = l.q(b, i, h);
                    let (qi, oi, doi) = (&q[at..][..d], &out[at..][..d], &dout[at..][..d]);
                    let lse_i = lse[(b * s.heads + h) * s.q_len + i];
                    let delta = dot(doi, oi);
                    let dqi = &mut dq[(hg * s.q_len + i) * d..][..d];
                    for j in keys {
                        let kj = &k[l.kv(b, j, kvh)..][..d];
                        let vj = &v[l.kv(b, j, kvh)..][..d];
                        let p = (dot(qi, kj) * scale - lse_i).exp();
                        let ds = p * (dot(doi, vj) - delta) * scale;
                        for (x, y) in dqi.iter_mut().zip(kj) {
                            *x += ds * y;
                        }
                        for (x, y) in dk[j * d..][..d].iter_mut().zip(qi) {
                            *x += ds * y;
                        }
                        for (x, y) in dv[j * d..][..d].iter_mut().zip(doi) {
                            *x += p * y;
                        }
                    }
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
