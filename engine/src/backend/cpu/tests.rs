//! Every CPU op against a plain reference and, for the backward passes,
//! against central finite differences of a random linear functional of the
//! output, on fresh seeded random inputs.
//!
//! Tolerances: the ops are f32, the functionals summed in f64; with a step
//! of 1e-2 along a random unit-variance direction the central difference
//! agrees with the analytic directional derivative to ~1e-3 relative, so
//! checks use a relative error bound of 5e-3. When the terms `g_i d_i`
//! cancel, the derivative is small against the f32 rounding of the
//! functional, so the error is relative to the larger of the derivative and
//! a tenth of `sum |g_i d_i|`.

#![allow(clippy::unwrap_used, clippy::needless_range_loop)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::backend::WeightGrad;

fn rand_vec(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn dotf64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// Checks `grad` (the analytic gradient of `f` at `x`) along three random
/// directions.
fn check_fd(rng: &mut ChaCha8Rng, what: &str, x: &[f32], grad: &[f32], f: impl Fn(&[f32]) -> f64) {
    let eps = 1e-2f32;
    for _ in 0..3 {
        let dir = rand_vec(rng, x.len());
        let plus: Vec<f32> = x.iter().zip(&dir).map(|(a, d)| a + eps * d).collect();
        let minus: Vec<f32> = x.iter().zip(&dir).map(|(a, d)| a - eps * d).collect();
        let numeric = (f(&plus) - f(&minus)) / (2.0 * eps as f64);
        let analytic = dotf64(grad, &dir);
        let scale: f64 = grad
            .iter()
            .zip(&dir)
            .map(|(g, d)| (g * d).abs() as f64)
            .sum();
        let err = (numeric - analytic).abs() / analytic.abs().max(0.1 * scale).max(1e-6);
        assert!(
            err < 5e-3,
            "{what}: finite difference {numeric} vs analytic {analytic} (rel err {err})"
        );
    }
}

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let num: f32 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt();
    let den: f32 = b.iter().map(|y| y * y).sum::<f32>().sqrt();
    num / den.max(1e-12)
}

/// A row's product has the same bits however many rows share the call
/// (what makes a training step independent of its micro-batches): every
/// row of a product of `m` rows equals that row of a product of 300, on
/// both sides of the gemm crate's special paths (`m == 1`, `m * n <= 256`,
/// `k <= 2`, `n == 1`, K blocks of 512).
#[test]
fn a_rows_product_does_not_depend_on_the_other_rows() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let all_rows = 300;
    for k in [2, 7, 64, 512, 513, 1100] {
        for n in [1, 3, 8, 64, 65, 200] {
            for (trans_b, beta) in [(false, 0.0), (true, 0.0), (true, 1.0)] {
                let a = rand_vec(&mut rng, all_rows * k);
                let b = rand_vec(&mut rng, k * n);
                let c0 = rand_vec(&mut rng, all_rows * n);
                let g = |m| Gemm {
                    m,
                    n,
                    k,
                    trans_a: false,
                    trans_b,
                    alpha: 0.5,
                    beta,
                };
                let mut all = c0.clone();
                Cpu.matmul(&a, &b, &mut all, g(all_rows));
                for m in [1, 2, 3, 5, 31, 64, 65, 129] {
                    let mut part = c0[..m * n].to_vec();
                    Cpu.matmul(&a[..m * k].to_vec(), &b, &mut part, g(m));
                    let same = part
                        .iter()
                        .zip(&all)
                        .all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(
                        same,
                        "m {m} of {all_rows}, n {n}, k {k}, trans_b {trans_b}, beta {beta}"
                    );
                }
            }
        }
    }
}

/// The few-rows kernel of decode steps gives the `gemm` crate's bits, for
/// both instruction sets this CPU has, on shapes that cover a partial lane
/// group, several lane groups, partial weight-row groups and tasks, one and
/// several `k` blocks, and each of the crate's three ways of merging `beta *
/// c`. Exact equality, no tolerance: that is what lets `matmul` pick either
/// without changing a result.
#[cfg(target_arch = "x86_64")]
#[test]
fn skinny_matches_gemm_bit_for_bit() {
    let Some(widest) = skinny::Isa::detect() else {
        println!("SKIPPED: this CPU lacks AVX2 and FMA, so matmul never takes the few-rows kernel");
        return;
    };
    let isas = match widest {
        skinny::Isa::Avx512 => vec![skinny::Isa::Avx512, skinny::Isa::Avx2],
        skinny::Isa::Avx2 => vec![skinny::Isa::Avx2],
    };
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let shapes = [
        (1, 2, 1),
        (2, 5, 2),
        (1, 70, 7),
        (3, 9, 513),
        (4, 33, 514),
        (16, 64, 576),
        (13, 200, 1100),
        (5, 131, 2048),
        (16, 3, 40),
    ];
    let merges = [(1.0, 0.0), (1.0, 1.0), (0.5, 1.0), (-1.5, 0.0), (0.5, 2.0)];
    for (m, n, k) in shapes {
        for (alpha, beta) in merges {
            let a = rand_vec(&mut rng, m * k);
            let w = rand_vec(&mut rng, n * k);
            let c0 = rand_vec(&mut rng, m * n);
            let g = Gemm {
                alpha,
                beta,
                ..Gemm::linear(m, n, k)
            };
            assert!(
                skinny::takes(&g).is_some(),
                "{m}x{n}x{k} is a few-rows product"
            );
            assert!(skinny::takes(&Gemm { n: 1, ..g }).is_none(), "one column");
            let mut want = c0.clone();
            matmul::with_crate(&a, &w, &mut want, g);
            for &isa in &isas {
                let mut got = c0.clone();
                skinny::linear(isa, &a, &w, &mut got, g);
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{isa:?} {m}x{n}x{k} alpha {alpha} beta {beta}");
            }
        }
    }
}

#[test]
fn matmul_matches_naive_for_every_transpose() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (m, n, k) in [(3, 5, 7), (70, 90, 80)] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = rand_vec(&mut rng, m * k);
            let b = rand_vec(&mut rng, k * n);
            let c0 = rand_vec(&mut rng, m * n);
            let at = |i: usize, p: usize| if ta { a[p * m + i] } else { a[i * k + p] };
            let bt = |p: usize, j: usize| if tb { b[j * k + p] } else { b[p * n + j] };
            let mut want = vec![0.0; m * n];
            for i in 0..m {
                for j in 0..n {
                    let s: f32 = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
                    want[i * n + j] = 0.5 * s + 2.0 * c0[i * n + j];
                }
            }
            let mut c = c0.clone();
            let g = Gemm {
                m,
                n,
                k,
                trans_a: ta,
                trans_b: tb,
                alpha: 0.5,
                beta: 2.0,
            };
            Cpu.matmul(&a, &b, &mut c, g);
            assert!(rel_err(&c, &want) < 1e-5, "{m}x{n}x{k} {ta} {tb}");
            let mut poisoned = vec![f32::NAN; m * n];
            Cpu.matmul(&a, &b, &mut poisoned, Gemm { beta: 0.0, ..g });
            assert!(
                poisoned.iter().all(|x| x.is_finite()),
                "beta 0 must ignore c"
            );
        }
    }
}

#[test]
fn embedding_backward_is_the_adjoint() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (vocab, dim) = (11, 6);
    let table = rand_vec(&mut rng, vocab * dim);
    let ids: Vec<u32> = (0..9).map(|_| rng.random_range(0..vocab as u32)).collect();
    let r = rand_vec(&mut rng, ids.len() * dim);
    let mut dtable = vec![0.0; table.len()];
    Cpu.embedding_backward(&r, &ids, dim, &mut dtable);
    check_fd(&mut rng, "embedding", &table, &dtable, |t| {
        dotf64(&Cpu.embedding(&t.to_vec(), &ids, dim), &r)
    });
}

#[test]
fn rms_norm_forward_and_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (rows, dim, eps) = (5, 16, 1e-5);
    let x = rand_vec(&mut rng, rows * dim);
    let w = rand_vec(&mut rng, dim);
    let (y, inv) = Cpu.rms_norm(&x, &w, dim, eps);
    for r in 0..rows {
        let row = &x[r * dim..(r + 1) * dim];
        let rms = (row.iter().map(|v| v * v).sum::<f32>() / dim as f32 + eps).sqrt();
        for i in 0..dim {
            assert!((y[r * dim + i] - w[i] * row[i] / rms).abs() < 1e-5);
        }
    }
    let dy = rand_vec(&mut rng, rows * dim);
    let mut dw = vec![0.0; dim];
    let dx = Cpu.rms_norm_backward(&dy, &x, &w, &inv, dim, Some(&mut dw));
    let loss =
        |x: &[f32], w: &[f32]| dotf64(&Cpu.rms_norm(&x.to_vec(), &w.to_vec(), dim, eps).0, &dy);
    check_fd(&mut rng, "rms_norm dx", &x, &dx, |x| loss(x, &w));
    check_fd(&mut rng, "rms_norm dw", &w, &dw, |w| loss(&x, w));
}

#[test]
fn rope_rotates_half_pairs_and_inverse_is_the_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (rows, heads, head_dim) = (4, 3, 8);
    let inv_freq: Vec<f32> = (0..head_dim / 2)
        .map(|i| 10000f32.powf(-((2 * i) as f32) / head_dim as f32))
        .collect();
    let positions = [0u32, 3, 7, 100];
    let x = rand_vec(&mut rng, rows * heads * head_dim);
    let mut y = x.clone();
    Cpu.rope(&mut y, &positions, heads, &inv_freq, false);
    // Reference: rotate-half with explicit cos/sin.
    for r in 0..rows {
        for h in 0..heads {
            let base = (r * heads + h) * head_dim;
            for i in 0..head_dim {
                let f = inv_freq[i % (head_dim / 2)];
                let (s, c) = (positions[r] as f32 * f).sin_cos();
                let rot = if i < head_dim / 2 {
                    -x[base + i + head_dim / 2]
                } else {
                    x[base + i - head_dim / 2]
                };
                assert!((y[base + i] - (x[base + i] * c + rot * s)).abs() < 1e-5);
            }
        }
    }
    let dy = rand_vec(&mut rng, x.len());
    let mut dx = dy.clone();
    Cpu.rope(&mut dx, &positions, heads, &inv_freq, true);
    check_fd(&mut rng, "rope", &x, &dx, |x| {
        let mut y = x.to_vec();
        Cpu.rope(&mut y, &positions, heads, &inv_freq, false);
        dotf64(&y, &dy)
    });
}

/// Attention by the definition: a dense masked softmax per (batch, head).
fn naive_attention(q: &[f32], k: &[f32], v: &[f32], s: AttnShape, kv_start: &[u32]) -> Vec<f32> {
    let d = s.head_dim;
    let mut out = vec![0.0; q.len()];
    for b in 0..s.batch {
        for h in 0..s.heads {
            let kvh = h / (s.heads / s.kv_heads);
            for i in 0..s.q_len {
                let qi = &q[((b * s.q_len + i) * s.heads + h) * d..][..d];
                let seen: Vec<usize> = (0..s.kv_len)
                    .filter(|&j| j >= kv_start[b] as usize && j <= s.q_offset + i)
                    .collect();
                if seen.is_empty() {
                    continue;
                }
                let kv = |buf: &[f32], j: usize| {
                    buf[((b * s.kv_cap + j) * s.kv_heads + kvh) * d..][..d].to_vec()
                };
                let sc: Vec<f64> = seen
                    .iter()
                    .map(|&j| dotf64(qi, &kv(k, j)) / (d as f64).sqrt())
                    .collect();
                let max = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = sc.iter().map(|x| (x - max).exp()).sum();
                for (p, &j) in sc.iter().zip(&seen) {
                    let w = ((p - max).exp() / z) as f32;
                    for (o, vv) in out[((b * s.q_len + i) * s.heads + h) * d..][..d]
                        .iter_mut()
                        .zip(kv(v, j))
                    {
                        *o += w * vv;
                    }
                }
            }
        }
    }
    out
}

#[test]
fn attention_matches_definition_with_gqa_padding_and_offset() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let cases = [
        // MHA training shape, no padding.
        (AttnShape::causal(2, 6, 4, 4, 8), vec![0, 0]),
        // More queries than one block, padding past the first block.
        (AttnShape::causal(2, 131, 2, 1, 4), vec![0, 129]),
        // GQA 4:1 with left padding of 2 on the second row.
        (AttnShape::causal(2, 5, 8, 2, 4), vec![0, 2]),
        // Decoding 2 new tokens at positions 5, 6 in a cache of 9.
        (
            AttnShape {
                batch: 2,
                q_len: 2,
                kv_len: 7,
                kv_cap: 9,
                q_offset: 5,
                heads: 4,
                kv_heads: 2,
                head_dim: 4,
            },
            vec![1, 0],
        ),
    ];
    for (s, start) in cases {
        let q = rand_vec(&mut rng, s.batch * s.q_len * s.heads * s.head_dim);
        let k = rand_vec(&mut rng, s.batch * s.kv_cap * s.kv_heads * s.head_dim);
        let v = rand_vec(&mut rng, k.len());
        let (out, lse) = Cpu.attention(&q, &k, &v, s, &start);
        assert!(
            rel_err(&out, &naive_attention(&q, &k, &v, s, &start)) < 1e-5,
            "{s:?}"
        );
        let dout = rand_vec(&mut rng, out.len());
        let (dq, dk, dv) = Cpu.attention_backward(&q, &k, &v, &out, &lse, &dout, s, &start);
        let f = |q: &[f32], k: &[f32], v: &[f32]| {
            dotf64(
                &Cpu.attention(&q.to_vec(), &k.to_vec(), &v.to_vec(), s, &start)
                    .0,
                &dout,
            )
        };
        check_fd(&mut rng, "attention dq", &q, &dq, |x| f(x, &k, &v));
        check_fd(&mut rng, "attention dk", &k, &dk, |x| f(&q, x, &v));
        check_fd(&mut rng, "attention dv", &v, &dv, |x| f(&q, &k, x));
    }
}

#[test]
fn decode_rows_equal_the_full_causal_rows() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let full = AttnShape::causal(1, 7, 4, 2, 8);
    let q = rand_vec(&mut rng, 7 * 4 * 8);
    let k = rand_vec(&mut rng, 7 * 2 * 8);
    let v = rand_vec(&mut rng, k.len());
    let (want, _) = Cpu.attention(&q, &k, &v, full, &[0]);
    let step = AttnShape {
        q_len: 1,
        q_offset: 4,
        kv_len: 5,
        ..full
    };
    let (got, _) = Cpu.attention(&q[4 * 32..5 * 32].to_vec(), &k, &v, step, &[0]);
    assert!(rel_err(&got, &want[4 * 32..5 * 32]) < 1e-6);
}

#[test]
fn swiglu_forward_and_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let g = rand_vec(&mut rng, 40);
    let u = rand_vec(&mut rng, 40);
    let h = Cpu.swiglu(&g, &u);
    for i in 0..40 {
        assert!((h[i] - g[i] / (1.0 + (-g[i]).exp()) * u[i]).abs() < 1e-6);
    }
    let dh = rand_vec(&mut rng, 40);
    let (dg, du) = Cpu.swiglu_backward(&g, &u, &dh);
    check_fd(&mut rng, "swiglu dgate", &g, &dg, |x| {
        dotf64(&Cpu.swiglu(&x.to_vec(), &u), &dh)
    });
    check_fd(&mut rng, "swiglu dup", &u, &du, |x| {
        dotf64(&Cpu.swiglu(&g, &x.to_vec()), &dh)
    });
}

#[test]
fn dropout_keeps_the_expected_fraction_and_is_its_own_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let x = rand_vec(&mut rng, 20_000);
    let keys: Vec<u64> = (0..200).map(|_| rng.random()).collect();
    let y = Cpu.dropout(&x, 0.25, 42, &keys);
    let kept = y.iter().filter(|v| **v != 0.0).count() as f64 / x.len() as f64;
    assert!((kept - 0.75).abs() < 0.02, "kept {kept}");
    assert!(
        y.iter()
            .zip(&x)
            .all(|(y, x)| *y == 0.0 || (y - x / 0.75).abs() < 1e-6)
    );
    let dy = rand_vec(&mut rng, x.len());
    let dx = Cpu.dropout(&dy, 0.25, 42, &keys);
    check_fd(&mut rng, "dropout", &x, &dx, |x| {
        dotf64(&Cpu.dropout(&x.to_vec(), 0.25, 42, &keys), &dy)
    });
    // A row's mask is its key's: the same row alone, or among others in
    // another order, is dropped the same way.
    let (row, width) = (&x[700..800], 100);
    let alone = Cpu.dropout(&row.to_vec(), 0.25, 42, &keys[7..8]);
    assert_eq!(alone, y[700..800]);
    let mut swapped = x[..2 * width].to_vec();
    swapped.rotate_left(width);
    let both = Cpu.dropout(&swapped, 0.25, 42, &[keys[1], keys[0]]);
    assert_eq!(both[..width], y[width..2 * width]);
    assert_ne!(Cpu.dropout(&row.to_vec(), 0.25, 43, &keys[7..8]), alone);
}

#[test]
fn token_nll_matches_log_softmax_and_its_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    // More rows than one chunk, so chunking is exercised.
    let (rows, dim, vocab) = (300, 8, 13);
    let h = rand_vec(&mut rng, rows * dim);
    let w = rand_vec(&mut rng, vocab * dim);
    let targets: Vec<u32> = (0..rows)
        .map(|_| rng.random_range(0..vocab as u32))
        .collect();
    let weights: Vec<f32> = (0..rows)
        .map(|r| {
            if r % 5 == 0 {
                0.0
            } else {
                rng.random_range(0.1..1.0)
            }
        })
        .collect();
    let mut dh = Vec::new();
    let mut dw = vec![0.0; w.len()];
    // Segments of other lengths than a chunk: a chunk never crosses one.
    let segments = [0..130, 130..131, 131..300];
    let head = WeightGrad {
        dw: &mut dw,
        segments: &segments,
    };
    let nll = Cpu.token_nll(&h, &w, dim, &targets, &weights, Some((&mut dh, Some(head))));
    for r in 0..rows {
        let logits: Vec<f64> = (0..vocab)
            .map(|v| dotf64(&h[r * dim..][..dim], &w[v * dim..][..dim]))
            .collect();
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + logits.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        let want = weights[r] as f64 * (lse - logits[targets[r] as usize]);
        assert!(
            (nll[r] as f64 - want).abs() < 1e-5 * want.abs().max(1.0),
            "row {r}"
        );
    }
    let total = |h: &[f32], w: &[f32]| {
        Cpu.token_nll(&h.to_vec(), &w.to_vec(), dim, &targets, &weights, None)
            .iter()
            .map(|&x| x as f64)
            .sum::<f64>()
    };
    check_fd(&mut rng, "token_nll dh", &h, &dh, |x| total(x, &w));
    check_fd(&mut rng, "token_nll dw", &w, &dw, |x| total(&h, x));
}

#[test]
fn gather_and_scatter_are_adjoint() {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let x = rand_vec(&mut rng, 6 * 4);
    let idx = [5u32, 0, 5];
    let dy = rand_vec(&mut rng, 3 * 4);
    let mut dx = vec![0.0; x.len()];
    Cpu.scatter_add_rows(&dy, &idx, 4, &mut dx);
    check_fd(&mut rng, "gather", &x, &dx, |x| {
        dotf64(&Cpu.gather_rows(&x.to_vec(), &idx, 4), &dy)
    });
}

#[test]
fn sampling_is_greedy_at_zero_temperature_and_follows_the_distribution() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let vocab = 7;
    let logits = rand_vec(&mut rng, 3 * vocab);
    let greedy = Cpu.sample(&logits, vocab, Sampling::GREEDY, &[0.3, 0.9, 0.1]);
    for (r, &t) in greedy.iter().enumerate() {
        let row = &logits[r * vocab..][..vocab];
        assert!(row.iter().all(|&x| x <= row[t as usize]));
    }
    let top1 = Sampling {
        temperature: 1.0,
        top_k: 1,
        top_p: 1.0,
    };
    assert_eq!(Cpu.sample(&logits, vocab, top1, &[0.99, 0.5, 0.0]), greedy);
    // A tie for the top goes to the lower id, greedy or top-1.
    let mut tied = logits.clone();
    for r in 0..3 {
        let top = greedy[r] as usize;
        let other = (top + 1 + r) % vocab;
        tied[r * vocab + other] = tied[r * vocab + top];
    }
    let lower: Vec<u32> = (0..3)
        .map(|r| (greedy[r] as usize).min((greedy[r] as usize + 1 + r) % vocab) as u32)
        .collect();
    assert_eq!(Cpu.sample(&tied, vocab, Sampling::GREEDY, &[0.3; 3]), lower);
    assert_eq!(Cpu.sample(&tied, vocab, top1, &[0.99, 0.5, 0.0]), lower);
    // Frequencies over many uniforms follow softmax(logits / T).
    let row = logits[..vocab].to_vec();
    let how = Sampling {
        temperature: 0.7,
        top_k: 0,
        top_p: 1.0,
    };
    let n = 20_000;
    let us: Vec<f32> = (0..n).map(|_| rng.random()).collect();
    let rows: Vec<f32> = (0..n).flat_map(|_| row.clone()).collect();
    let drawn = Cpu.sample(&rows, vocab, how, &us);
    let z: f64 = row.iter().map(|&x| (x as f64 / 0.7).exp()).sum();
    for t in 0..vocab {
        let freq = drawn.iter().filter(|&&d| d as usize == t).count() as f64 / n as f64;
        let p = (row[t] as f64 / 0.7).exp() / z;
        assert!((freq - p).abs() < 0.015, "token {t}: {freq} vs {p}");
    }
    // top-p keeps the smallest head of the distribution reaching p.
    let how = Sampling {
        temperature: 1.0,
        top_k: 0,
        top_p: 0.5,
    };
    let mut order: Vec<usize> = (0..vocab).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    let z: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
    let mut cum = 0.0;
    let allowed: Vec<usize> = order
        .iter()
        .take_while(|&&t| {
            let before = cum;
            cum += (row[t] as f64).exp() / z;
            before < 0.5
        })
        .copied()
        .collect();
    let drawn = Cpu.sample(&rows, vocab, how, &us);
    assert!(drawn.iter().all(|d| allowed.contains(&(*d as usize))));
}

#[test]
fn adamw_matches_the_scalar_formula() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let mut p = rand_vec(&mut rng, 50);
    let mut m = vec![0.0; 50];
    let mut v = vec![0.0; 50];
    let (mut p_ref, mut m_ref, mut v_ref) = (
        p.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        vec![0f64; 50],
        vec![0f64; 50],
    );
    for step in 1..=5 {
        let g = rand_vec(&mut rng, 50);
        let h = AdamWStep {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            step,
        };
        Cpu.adamw(&mut p, &g, &mut m, &mut v, h);
        for i in 0..50 {
            let gi = g[i] as f64;
            p_ref[i] *= 1.0 - 1e-2 * 0.1;
            m_ref[i] = 0.9 * m_ref[i] + 0.1 * gi;
            v_ref[i] = 0.95 * v_ref[i] + 0.05 * gi * gi;
            let mh = m_ref[i] / (1.0 - 0.9f64.powi(step as i32));
            let vh = v_ref[i] / (1.0 - 0.95f64.powi(step as i32));
            p_ref[i] -= 1e-2 * mh / (vh.sqrt() + 1e-8);
        }
    }
    for i in 0..50 {
        assert!((p[i] as f64 - p_ref[i]).abs() < 1e-5, "param {i}");
    }
}

/// The entropy of each row of the softmax, against its definition, over
/// more rows than one chunk of logits.
#[test]
fn token_entropy_matches_the_softmax_definition_per_row() {
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    let (rows, dim, vocab) = (300, 8, 37);
    let h: Vec<f32> = rand_vec(&mut rng, rows * dim)
        .iter()
        .map(|x| 3.0 * x)
        .collect();
    let w = rand_vec(&mut rng, vocab * dim);
    let got = Cpu.token_entropy(&h, &w, dim);
    assert_eq!(got.len(), rows);
    for (r, &e) in got.iter().enumerate() {
        let logits: Vec<f64> = (0..vocab)
            .map(|v| dotf64(&h[r * dim..(r + 1) * dim], &w[v * dim..(v + 1) * dim]))
            .collect();
        let z: f64 = logits.iter().map(|x| x.exp()).sum();
        let want: f64 = logits
            .iter()
            .map(|x| {
                let p = x.exp() / z;
                -p * p.ln()
            })
            .sum();
        assert!((f64::from(e) - want).abs() < 1e-4, "row {r}: {e} vs {want}");
    }
}
