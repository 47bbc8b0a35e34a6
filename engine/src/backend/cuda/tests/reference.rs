//! Plain f64 references for the kernel tests, written for clarity over speed.
//! Layouts match the kernels. Once the CPU backend exists, each switches to
//! the CPU op named in its doc comment.

use super::super::AttentionShape;

/// Causal attention, returning (o, lse). CPU backend: attention forward.
pub fn attention_fwd(s: AttentionShape, q: &[f64], k: &[f64], v: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (d, group) = (s.head_dim, s.q_heads / s.kv_heads);
    let scale = 1.0 / (d as f64).sqrt();
    let mut o = vec![0.0; s.q_len()];
    let mut lse = vec![0.0; s.lse_len()];
    for b in 0..s.batch {
        for h in 0..s.q_heads {
            let hk = h / group;
            for i in 0..s.seq {
                let qi = &q[((b * s.seq + i) * s.q_heads + h) * d..][..d];
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        let kj = &k[((b * s.seq + j) * s.kv_heads + hk) * d..][..d];
                        qi.iter().zip(kj).map(|(x, y)| x * y).sum::<f64>() * scale
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = scores.iter().map(|x| (x - max).exp()).sum();
                lse[(b * s.q_heads + h) * s.seq + i] = max + sum.ln();
                let out = &mut o[((b * s.seq + i) * s.q_heads + h) * d..][..d];
                for (j, sc) in scores.iter().enumerate() {
                    let p = (sc - max).exp() / sum;
                    let vj = &v[((b * s.seq + j) * s.kv_heads + hk) * d..][..d];
                    for (o, x) in out.iter_mut().zip(vj) {
                        *o += p * x;
                    }
                }
            }
        }
    }
    (o, lse)
}

/// Gradients (dq, dk, dv) of sum(o * d_o) for causal attention.
/// CPU backend: attention backward.
pub fn attention_bwd(
    s: AttentionShape,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    d_o: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (d, group) = (s.head_dim, s.q_heads / s.kv_heads);
    let scale = 1.0 / (d as f64).sqrt();
    let (mut dq, mut dk, mut dv) = (
        vec![0.0; s.q_len()],
        vec![0.0; s.kv_len()],
        vec![0.0; s.kv_len()],
    );
    let qi = |b: usize, t: usize, h: usize| ((b * s.seq + t) * s.q_heads + h) * d;
    let ki = |b: usize, t: usize, h: usize| ((b * s.seq + t) * s.kv_heads + h) * d;
    for b in 0..s.batch {
        for h in 0..s.q_heads {
            let hk = h / group;
            for i in 0..s.seq {
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        (0..d)
                            .map(|x| q[qi(b, i, h) + x] * k[ki(b, j, hk) + x])
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = scores.iter().map(|x| (x - max).exp()).sum();
                let p: Vec<f64> = scores.iter().map(|x| (x - max).exp() / sum).collect();
                let dp: Vec<f64> = (0..=i)
                    .map(|j| {
                        (0..d)
                            .map(|x| d_o[qi(b, i, h) + x] * v[ki(b, j, hk) + x])
                            .sum()
                    })
                    .collect();
                let dot: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                for j in 0..=i {
                    let ds = p[j] * (dp[j] - dot) * scale;
                    for x in 0..d {
                        dv[ki(b, j, hk) + x] += p[j] * d_o[qi(b, i, h) + x];
                        dq[qi(b, i, h) + x] += ds * k[ki(b, j, hk) + x];
                        dk[ki(b, j, hk) + x] += ds * q[qi(b, i, h) + x];
                    }
                }
            }
        }
    }
    (dq, dk, dv)
}

/// One query per sequence over its first `lengths[b]` cache rows.
/// CPU backend: decode attention with KV cache.
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
    let group = q_heads / kv_heads;
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = vec![0.0; batch * q_heads * d];
    for b in 0..batch {
        for h in 0..q_heads {
            let hk = h / group;
            let qv = &q[(b * q_heads + h) * d..][..d];
            let len = lengths[b] as usize;
            let row = |j: usize| ((b * capacity + j) * kv_heads + hk) * d;
            let scores: Vec<f64> = (0..len)
                .map(|j| {
                    qv.iter()
                        .zip(&kc[row(j)..row(j) + d])
                        .map(|(a, b)| a * b)
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = scores.iter().map(|x| (x - max).exp()).sum();
            for (j, sc) in scores.iter().enumerate() {
                let p = (sc - max).exp() / sum;
                for x in 0..d {
                    out[(b * q_heads + h) * d + x] += p * vc[row(j) + x];
                }
            }
        }
    }
    out
}

/// y = w * x / rms(x) per row, and 1/rms. CPU backend: rmsnorm forward.
pub fn rmsnorm_fwd(x: &[f64], w: &[f64], eps: f64) -> (Vec<f64>, Vec<f64>) {
    let h = w.len();
    let mut y = vec![0.0; x.len()];
    let mut rstd = Vec::new();
    for (xr, yr) in x.chunks(h).zip(y.chunks_mut(h)) {
        let r = 1.0 / (xr.iter().map(|v| v * v).sum::<f64>() / h as f64 + eps).sqrt();
        for i in 0..h {
            yr[i] = w[i] * xr[i] * r;
        }
        rstd.push(r);
    }
    (y, rstd)
}

/// (dx, dw) of rmsnorm. CPU backend: rmsnorm backward.
pub fn rmsnorm_bwd(x: &[f64], w: &[f64], dy: &[f64], eps: f64) -> (Vec<f64>, Vec<f64>) {
    let h = w.len();
    let (_, rstd) = rmsnorm_fwd(x, w, eps);
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; h];
    for (row, r) in rstd.iter().enumerate() {
        let xr = &x[row * h..][..h];
        let gr = &dy[row * h..][..h];
        let mean: f64 = (0..h).map(|i| gr[i] * w[i] * xr[i] * r).sum::<f64>() / h as f64;
        for i in 0..h {
            dx[row * h + i] = r * (gr[i] * w[i] - xr[i] * r * mean);
            dw[i] += gr[i] * xr[i] * r;
        }
    }
    (dx, dw)
}

/// Rotate-half RoPE; `sign` -1 is the inverse (backward).
/// CPU backend: rope forward / backward.
pub fn rope(
    x: &[f64],
    heads: usize,
    d: usize,
    pos: &[i32],
    inv_freq: &[f32],
    sign: f64,
) -> Vec<f64> {
    let half = d / 2;
    let mut y = x.to_vec();
    for (t, &p) in pos.iter().enumerate() {
        for h in 0..heads {
            let base = (t * heads + h) * d;
            for i in 0..half {
                // The angle is formed in f32, as HF and the kernel do.
                let angle = f64::from(p as f32 * inv_freq[i]);
                let (s, c) = (angle.sin() * sign, angle.cos());
                let (a, b) = (x[base + i], x[base + i + half]);
                y[base + i] = a * c - b * s;
                y[base + i + half] = b * c + a * s;
            }
        }
    }
    y
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// silu(gate) * up. CPU backend: swiglu forward.
pub fn swiglu_fwd(gate: &[f64], up: &[f64]) -> Vec<f64> {
    gate.iter()
        .zip(up)
        .map(|(g, u)| g * sigmoid(*g) * u)
        .collect()
}

/// (dgate, dup). CPU backend: swiglu backward.
pub fn swiglu_bwd(gate: &[f64], up: &[f64], dout: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut dg = Vec::new();
    let mut du = Vec::new();
    for ((g, u), d) in gate.iter().zip(up).zip(dout) {
        let s = sigmoid(*g);
        du.push(d * g * s);
        dg.push(d * u * s * (1.0 + g * (1.0 - s)));
    }
    (dg, du)
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

/// One AdamW step in f64, returning (master, m, v). CPU backend: AdamW.
#[allow(clippy::too_many_arguments)]
pub fn adamw(
    p: &[f64],
    m: &[f64],
    v: &[f64],
    g: &[f64],
    scale: f64,
    h: super::super::AdamW,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (lr, b1, b2, eps, wd) = (
        f64::from(h.lr),
        f64::from(h.beta1),
        f64::from(h.beta2),
        f64::from(h.eps),
        f64::from(h.weight_decay),
    );
    let t = h.step as i32;
    let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
    let mut out = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..p.len() {
        let gi = g[i] * scale;
        let pi = p[i] * (1.0 - lr * wd);
        let mi = b1 * m[i] + (1.0 - b1) * gi;
        let vi = b2 * v[i] + (1.0 - b2) * gi * gi;
        out.0
            .push(pi - lr / bc1 * mi / (vi.sqrt() / bc2.sqrt() + eps));
        out.1.push(mi);
        out.2.push(vi);
    }
    out
}

/// c = op(a) op(b), row-major. CPU backend: matmul.
pub fn gemm(m: usize, n: usize, k: usize, a: &[f64], ta: bool, b: &[f64], tb: bool) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k)
                .map(|x| {
                    let av = if ta { a[x * m + i] } else { a[i * k + x] };
                    let bv = if tb { b[j * k + x] } else { b[x * n + j] };
                    av * bv
                })
                .sum();
        }
    }
    c
}

/// The backward references are checked against central finite differences
/// of their forward references, on the CPU, so a GPU run compares kernels
/// with gradients that are known to be right.
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

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
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
    fn attention_backward_is_the_gradient_of_forward() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let s = AttentionShape {
            batch: 1,
            seq: 5,
            q_heads: 4,
            kv_heads: 2,
            head_dim: 64,
        };
        let (q, k, v, g) = (
            random(&mut rng, s.q_len()),
            random(&mut rng, s.kv_len()),
            random(&mut rng, s.kv_len()),
            random(&mut rng, s.q_len()),
        );
        let (dq, dk, dv) = attention_bwd(s, &q, &k, &v, &g);
        check("dq", &dq, &|x| dot(&attention_fwd(s, x, &k, &v).0, &g), &q);
        check("dk", &dk, &|x| dot(&attention_fwd(s, &q, x, &v).0, &g), &k);
        check("dv", &dv, &|x| dot(&attention_fwd(s, &q, &k, x).0, &g), &v);
    }

    #[test]
    fn rmsnorm_backward_is_the_gradient_of_forward() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let (x, w, g) = (
            random(&mut rng, 3 * 16),
            random(&mut rng, 16),
            random(&mut rng, 3 * 16),
        );
        let (dx, dw) = rmsnorm_bwd(&x, &w, &g, 1e-5);
        check("dx", &dx, &|x| dot(&rmsnorm_fwd(x, &w, 1e-5).0, &g), &x);
        check("dw", &dw, &|w| dot(&rmsnorm_fwd(&x, w, 1e-5).0, &g), &w);
    }

    #[test]
    fn swiglu_backward_is_the_gradient_of_forward() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let (a, b, g) = (
            random(&mut rng, 40),
            random(&mut rng, 40),
            random(&mut rng, 40),
        );
        let (da, db) = swiglu_bwd(&a, &b, &g);
        check("dgate", &da, &|x| dot(&swiglu_fwd(x, &b), &g), &a);
        check("dup", &db, &|x| dot(&swiglu_fwd(&a, x), &g), &b);
    }

    #[test]
    fn rope_backward_is_the_transpose_of_forward() {
        let mut rng = ChaCha8Rng::seed_from_u64(14);
        let inv_freq = crate::backend::cuda::rope_inv_freq(8, 10_000.0, None);
        let pos = [0, 3, 17];
        let (x, g) = (random(&mut rng, 3 * 2 * 8), random(&mut rng, 3 * 2 * 8));
        let back = rope(&g, 2, 8, &pos, &inv_freq, -1.0);
        check(
            "dx",
            &back,
            &|x| dot(&rope(x, 2, 8, &pos, &inv_freq, 1.0), &g),
            &x,
        );
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

    #[test]
    fn adamw_first_step_moves_by_lr_against_the_gradient_sign() {
        let h = crate::backend::cuda::AdamW {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 0.0,
            weight_decay: 0.0,
            step: 1,
        };
        let (p, _, _) = adamw(&[1.0, 1.0], &[0.0, 0.0], &[0.0, 0.0], &[3.0, -0.5], 1.0, h);
        assert!(
            (p[0] - 0.9).abs() < 1e-7 && (p[1] - 1.1).abs() < 1e-7,
            "{p:?}"
        );
    }
}
