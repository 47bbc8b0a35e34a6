//! References for the kernel tests. Every op the Backend trait has is the
//! CPU backend's own op (the crate's reference, with its finite-difference
//! tests in backend/cpu/tests.rs), adapted here to the kernels' layouts and
//! to f64 slices; only the per-chunk cross-entropy, which has no trait op of
//! its own (the trait fuses it with the LM head), is written out in f64.

use super::super::AttentionShape;
use crate::backend::{AdamWStep, AttnShape, Backend, Cpu, Gemm};

fn narrow(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

fn wide(x: Vec<f32>) -> Vec<f64> {
    x.into_iter().map(f64::from).collect()
}

fn trait_shape(s: AttentionShape) -> AttnShape {
    AttnShape::causal(s.batch, s.seq, s.q_heads, s.kv_heads, s.head_dim)
}

fn positions(pos: &[i32]) -> Vec<u32> {
    pos.iter().map(|&p| p as u32).collect()
}

/// Causal attention, returning (o, lse): `Cpu::attention`.
pub fn attention_fwd(
    s: AttentionShape,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    starts: &[u32],
) -> (Vec<f64>, Vec<f64>) {
    let (o, lse) = Cpu.attention(&narrow(q), &narrow(k), &narrow(v), trait_shape(s), starts);
    (wide(o), wide(lse))
}

/// Gradients (dq, dk, dv) of sum(o * d_o): `Cpu::attention_backward`.
pub fn attention_bwd(
    s: AttentionShape,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    d_o: &[f64],
    starts: &[u32],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (q, k, v) = (narrow(q), narrow(k), narrow(v));
    let (o, lse) = Cpu.attention(&q, &k, &v, trait_shape(s), starts);
    let (dq, dk, dv) =
        Cpu.attention_backward(&q, &k, &v, &o, &lse, &narrow(d_o), trait_shape(s), starts);
    (wide(dq), wide(dk), wide(dv))
}

/// One query per sequence over its first `lengths[b]` cache rows:
/// `Cpu::attention` per sequence, the query at position `lengths[b] - 1` of
/// a KV cache of `capacity` rows.
#[allow(clippy::too_many_arguments)]
pub fn decode(
    batch: usize,
    q_heads: usize,
    kv_heads: usize,
    d: usize,
    capacity: usize,
    q: &[f64],
    kc: &[f64],
    vc: &[f64],
    lengths: &[i32],
) -> Vec<f64> {
    let (q_row, kv_block) = (q_heads * d, capacity * kv_heads * d);
    let mut out = Vec::with_capacity(batch * q_row);
    for (b, &len) in lengths.iter().enumerate().take(batch) {
        let len = len as usize;
        let shape = AttnShape {
            batch: 1,
            q_len: 1,
            kv_len: len,
            kv_cap: capacity,
            q_offset: len - 1,
            heads: q_heads,
            kv_heads,
            head_dim: d,
        };
        let (o, _) = Cpu.attention(
            &narrow(&q[b * q_row..(b + 1) * q_row]),
            &narrow(&kc[b * kv_block..(b + 1) * kv_block]),
            &narrow(&vc[b * kv_block..(b + 1) * kv_block]),
            shape,
            &[0],
        );
        out.extend(wide(o));
    }
    out
}

/// y = w * x / rms(x) per row, and 1/rms: `Cpu::rms_norm`.
pub fn rmsnorm_fwd(x: &[f64], w: &[f64], eps: f64) -> (Vec<f64>, Vec<f64>) {
    let (y, inv) = Cpu.rms_norm(&narrow(x), &narrow(w), w.len(), eps as f32);
    (wide(y), wide(inv))
}

/// (dx, dw) of rmsnorm: `Cpu::rms_norm_backward`.
pub fn rmsnorm_bwd(x: &[f64], w: &[f64], dy: &[f64], eps: f64) -> (Vec<f64>, Vec<f64>) {
    let (x, w) = (narrow(x), narrow(w));
    let (_, inv) = Cpu.rms_norm(&x, &w, w.len(), eps as f32);
    let mut dw = vec![0.0; w.len()];
    let dx = Cpu.rms_norm_backward(&narrow(dy), &x, &w, &inv, w.len(), Some(&mut dw));
    (wide(dx), wide(dw))
}

/// Rotate-half RoPE; `sign` -1 is the inverse (backward): `Cpu::rope`.
pub fn rope(
    x: &[f64],
    heads: usize,
    d: usize,
    pos: &[i32],
    inv_freq: &[f32],
    sign: f64,
) -> Vec<f64> {
    assert_eq!(inv_freq.len(), d / 2, "one frequency per pair");
    let mut y = narrow(x);
    Cpu.rope(&mut y, &positions(pos), heads, inv_freq, sign < 0.0);
    wide(y)
}

/// silu(gate) * up: `Cpu::swiglu`.
pub fn swiglu_fwd(gate: &[f64], up: &[f64]) -> Vec<f64> {
    wide(Cpu.swiglu(&narrow(gate), &narrow(up)))
}

/// (dgate, dup): `Cpu::swiglu_backward`.
pub fn swiglu_bwd(gate: &[f64], up: &[f64], dout: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (dg, du) = Cpu.swiglu_backward(&narrow(gate), &narrow(up), &narrow(dout));
    (wide(dg), wide(du))
}

/// (lse, loss, dlogits) of masked cross-entropy. CPU backend: cross-entropy.
pub fn cross_entropy(
    logits: &[f64],
    vocab: usize,
    targets: &[i32],
    weights: &[f32],
    scale: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut lse = Vec::new();
    let mut loss = Vec::new();
    let mut grad = vec![0.0; logits.len()];
    for (r, row) in logits.chunks(vocab).enumerate() {
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let l = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        lse.push(l);
        let t = targets[r];
        let w = f64::from(weights[r]);
        let valid = w != 0.0 && t >= 0 && (t as usize) < vocab;
        loss.push(if valid {
            w * (l - row[t as usize])
        } else {
            0.0
        });
        if valid {
            for (v, x) in row.iter().enumerate() {
                let onehot = if v == t as usize { 1.0 } else { 0.0 };
                grad[r * vocab + v] = w * scale * ((x - l).exp() - onehot);
            }
        }
    }
    (lse, loss, grad)
}

/// One AdamW step on the gradient times `scale`, returning (master, m, v):
/// `Cpu::adamw`.
pub fn adamw(
    p: &[f64],
    m: &[f64],
    v: &[f64],
    g: &[f64],
    scale: f64,
    h: AdamWStep,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut p, mut m, mut v) = (narrow(p), narrow(m), narrow(v));
    let g: Vec<f32> = g.iter().map(|&x| (x * scale) as f32).collect();
    Cpu.adamw(&mut p, &g, &mut m, &mut v, h);
    (wide(p), wide(m), wide(v))
}

/// c = op(a) op(b), row-major: `Cpu::matmul`.
pub fn gemm(m: usize, n: usize, k: usize, a: &[f64], ta: bool, b: &[f64], tb: bool) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    let g = Gemm {
        m,
        n,
        k,
        trans_a: ta,
        trans_b: tb,
        alpha: 1.0,
        beta: 0.0,
    };
    Cpu.matmul(&narrow(a), &narrow(b), &mut c, g);
    wide(c)
}

#[cfg(test)]
mod finite_differences {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const H: f64 = 1e-6;

    fn random(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// d/dx_i of f at x, for a few i.
    fn numeric(f: &dyn Fn(&[f64]) -> f64, x: &[f64], i: usize) -> f64 {
        let (mut plus, mut minus) = (x.to_vec(), x.to_vec());
        plus[i] += H;
        minus[i] -= H;
        (f(&plus) - f(&minus)) / (2.0 * H)
    }

    fn check(what: &str, analytic: &[f64], f: &dyn Fn(&[f64]) -> f64, x: &[f64]) {
        for i in (0..x.len()).step_by(x.len().div_ceil(12)) {
            let n = numeric(f, x, i);
            assert!(
                (analytic[i] - n).abs() <= 1e-5 * (1.0 + n.abs()),
                "{what}[{i}]: analytic {} numeric {n}",
                analytic[i]
            );
        }
    }

    #[test]
    fn cross_entropy_gradient_is_the_gradient_of_the_loss() {
        let mut rng = ChaCha8Rng::seed_from_u64(15);
        let vocab = 11;
        let logits = random(&mut rng, 3 * vocab);
        let (targets, weights) = ([2, -100, 10], [0.5f32, 1.0, 1.0]);
        let (_, _, grad) = cross_entropy(&logits, vocab, &targets, &weights, 0.25);
        let loss = |x: &[f64]| {
            0.25 * cross_entropy(x, vocab, &targets, &weights, 0.25)
                .1
                .iter()
                .sum::<f64>()
        };
        check("dlogits", &grad, &loss, &logits);
    }
}
