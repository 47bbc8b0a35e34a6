//! `y = x W^T` for a few rows of `x`: a linear layer in a decode step, where
//! each sequence of the batch brings one row.
//!
//! The `gemm` crate copies ("packs") the weight into its tile layout on every
//! call. Over a prefill's hundreds of rows that copy is paid once for many
//! products; over a decode step's handful it is most of the work, and a
//! weight whose `k` exceeds one block of [`K_BLOCK`] is packed and its
//! output re-read once per block. This kernel reads each weight row once, in
//! place, against the at most [`LANES`] rows of `x` held transposed in a
//! small buffer: SmolLM2-135M's decode step went from 122 ms to 35 ms on two
//! cores (engine/PERF.md, "Decode steps on the CPU").
//!
//! It gives the same bits as the crate (`tests::skinny_matches_gemm_bit_for_bit`):
//! the crate's micro-kernel keeps one accumulator per output, starts it at
//! zero and adds the products in `k` order with fused multiply-adds, over
//! the blocks of at most [`K_BLOCK`] terms that [`super::matmul`] hands it
//! one at a time, and sums a block of one or two terms unfused (its `gevv`);
//! this kernel does the same sums in the same order and merges each block
//! into the output with the crate's own formulas. So which of the two runs a
//! product changes no result, and the row-invariance that [`super::matmul`]
//! guarantees still holds. It is built for x86-64 only and runs where the
//! crate's kernels are fused multiply-adds too (AVX2 and FMA).

use rayon::prelude::*;

use super::matmul::K_BLOCK;
use crate::backend::Gemm;

/// Rows of `x` one pass over the weight serves, one AVX-512 register of f32
/// (two AVX2 ones) per output, and so the most rows a product may have to
/// take this kernel: above it the crate's cache blocking wins
/// (engine/PERF.md, "Decode steps on the CPU").
pub const LANES: usize = 16;

/// Outputs (weight rows) that one task computes: a few hundred
/// microseconds of work.
const TASK_OUTPUTS: usize = 64;

/// The instructions [`linear`] runs the product `g` with, if it takes it:
/// a linear layer's form, few rows, on a CPU where it gives the crate's
/// bits. A single output column (a reward head) is left to the crate, which
/// sums it without transposing, in another order.
pub fn takes(g: &Gemm) -> Option<Isa> {
    if g.trans_a || !g.trans_b || g.m > LANES || g.n < 2 || g.k == 0 {
        return None;
    }
    Isa::detect()
}

/// The instruction sets the kernel is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Eight weight rows at a time, one ZMM register per output.
    Avx512,
    /// Four weight rows at a time, two YMM registers per output.
    Avx2,
}

impl Isa {
    /// The widest this CPU has; `None` without the fused multiply-adds
    /// the crate's kernels use.
    pub fn detect() -> Option<Isa> {
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            return None;
        }
        if std::is_x86_feature_detected!("avx512f") {
            return Some(Isa::Avx512);
        }
        Some(Isa::Avx2)
    }
}

/// `c[m, n] = alpha * a[m, k] w[n, k]^T + beta * c`, as
/// [`super::matmul::matmul`] computes it, with the instructions of `isa`
/// (which the CPU must have: see [`takes`]). The caller checked the
/// lengths.
pub fn linear(isa: Isa, a: &[f32], w: &[f32], c: &mut [f32], g: Gemm) {
    let Gemm { m, n, k, .. } = g;
    assert!(m <= LANES, "skinny: {m} rows > {LANES}");
    let mut xt = vec![[0.0f32; LANES]; k];
    for (l, row) in a.chunks_exact(k).enumerate() {
        for (p, &v) in row.iter().enumerate() {
            xt[p][l] = v;
        }
    }
    // Output transposed, `[n][LANES]`, so that each task owns whole rows.
    let mut ct = vec![[0.0f32; LANES]; n];
    if g.beta != 0.0 {
        for (j, out) in ct.iter_mut().enumerate() {
            for l in 0..m {
                out[l] = c[l * n + j];
            }
        }
    }
    let task = |(t, outs): (usize, &mut [[f32; LANES]])| {
        let j0 = t * TASK_OUTPUTS;
        outputs(isa, &xt, &w[j0 * k..(j0 + outs.len()) * k], k, outs, &g);
    };
    if m * n * k >= super::matmul::PARALLEL_MIN_WORK {
        ct.par_chunks_mut(TASK_OUTPUTS).enumerate().for_each(task);
    } else {
        ct.chunks_mut(TASK_OUTPUTS).enumerate().for_each(task);
    }
    for (j, out) in ct.iter().enumerate() {
        for l in 0..m {
            c[l * n + j] = out[l];
        }
    }
}

/// The outputs of weight rows `w` (`outs.len()` rows of `k`), merged into
/// `outs` (which hold the old `c` where `beta != 0`).
fn outputs(
    isa: Isa,
    xt: &[[f32; LANES]],
    w: &[f32],
    k: usize,
    outs: &mut [[f32; LANES]],
    g: &Gemm,
) {
    match isa {
        // SAFETY: `Isa::detect` found these features, or the caller of
        // `linear` promised them.
        Isa::Avx512 => unsafe { outputs_avx512(xt, w, k, outs, g) },
        Isa::Avx2 => unsafe { outputs_avx2(xt, w, k, outs, g) },
    }
}

/// Eight weight rows at a time: 8 accumulators of one ZMM register each.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn outputs_avx512(
    xt: &[[f32; LANES]],
    w: &[f32],
    k: usize,
    outs: &mut [[f32; LANES]],
    g: &Gemm,
) {
    outputs_with::<8>(Isa::Avx512, xt, w, k, outs, g)
}

/// Four weight rows at a time: 8 accumulators of one YMM register each,
/// which leaves AVX2's other 8 registers for `x` and the broadcasts.
#[target_feature(enable = "avx2,fma")]
unsafe fn outputs_avx2(
    xt: &[[f32; LANES]],
    w: &[f32],
    k: usize,
    outs: &mut [[f32; LANES]],
    g: &Gemm,
) {
    outputs_with::<4>(Isa::Avx2, xt, w, k, outs, g)
}

/// [`outputs`], `J` weight rows at a time, each group's last rows one by
/// one.
#[inline(always)]
fn outputs_with<const J: usize>(
    isa: Isa,
    xt: &[[f32; LANES]],
    w: &[f32],
    k: usize,
    outs: &mut [[f32; LANES]],
    g: &Gemm,
) {
    let full = outs.len() / J * J;
    let (head, tail) = outs.split_at_mut(full);
    for (group, rows) in head.chunks_exact_mut(J).zip(w.chunks_exact(J * k)) {
        rows_into::<J>(isa, xt, rows, k, group, g);
    }
    for (out, row) in tail.iter_mut().zip(w[full * k..].chunks_exact(k)) {
        rows_into::<1>(isa, xt, row, k, std::slice::from_mut(out), g);
    }
}

/// The outputs of `J` weight rows, block by block of `k`.
#[inline(always)]
fn rows_into<const J: usize>(
    isa: Isa,
    xt: &[[f32; LANES]],
    rows: &[f32],
    k: usize,
    outs: &mut [[f32; LANES]],
    g: &Gemm,
) {
    for k0 in (0..k).step_by(K_BLOCK) {
        let k1 = (k0 + K_BLOCK).min(k);
        let w: [&[f32]; J] = std::array::from_fn(|jj| &rows[jj * k + k0..jj * k + k1]);
        let beta = if k0 == 0 { g.beta } else { 1.0 };
        if k1 - k0 <= 2 {
            for (out, w) in outs.iter_mut().zip(w) {
                short_block(out, &xt[k0..k1], w, g.alpha, beta);
            }
            continue;
        }
        let acc = dot_rows::<J>(isa, &xt[k0..k1], w);
        for (out, acc) in outs.iter_mut().zip(&acc) {
            merge(out, acc, g.alpha, beta);
        }
    }
}

/// A block of one or two terms, as the crate sums it (its `gevv`, which
/// takes every product of depth at most 2): `x` scaled by `alpha` first,
/// then each term multiplied and added, unfused, onto `beta * c`.
#[inline(always)]
fn short_block(out: &mut [f32; LANES], xs: &[[f32; LANES]], w: &[f32], alpha: f32, beta: f32) {
    for l in 0..LANES {
        let mut terms = xs.iter().zip(w).map(|(x, &wv)| wv * (alpha * x[l]));
        let Some(first) = terms.next() else {
            continue;
        };
        let mut sum = if beta == 0.0 {
            first
        } else if beta == 1.0 {
            first + out[l]
        } else {
            first + beta * out[l]
        };
        for term in terms {
            sum += term;
        }
        out[l] = sum;
    }
}

/// `acc[j][l] = sum_p w[j][p] * xs[p][l]`, from zero, one fused
/// multiply-add at a time in `p` order (the crate's micro-kernel's sum),
/// the `J` rows interleaved so that their chains overlap.
#[inline(always)]
fn dot_rows<const J: usize>(isa: Isa, xs: &[[f32; LANES]], w: [&[f32]; J]) -> [[f32; LANES]; J] {
    let depth = xs.len();
    let w: [&[f32]; J] = w.map(|row| &row[..depth]);
    // SAFETY: the callers hold `isa` only where the CPU has it, and every
    // row of `w` is `depth` long.
    match isa {
        Isa::Avx512 => unsafe { dot_avx512::<J>(xs, w) },
        Isa::Avx2 => unsafe { dot_avx2::<J>(xs, w) },
    }
}

/// [`dot_rows`] with one ZMM accumulator per weight row.
///
/// # Safety
/// The CPU has AVX-512F, and every row of `w` holds `xs.len()` values.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn dot_avx512<const J: usize>(xs: &[[f32; LANES]], w: [&[f32]; J]) -> [[f32; LANES]; J] {
    use std::arch::x86_64::{__m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps};
    use std::arch::x86_64::{_mm512_setzero_ps, _mm512_storeu_ps};
    let mut acc: [__m512; J] = [_mm512_setzero_ps(); J];
    for (p, x) in xs.iter().enumerate() {
        // SAFETY: `x` is 16 f32; `p < xs.len()`, the length of every row.
        let x = unsafe { _mm512_loadu_ps(x.as_ptr()) };
        for jj in 0..J {
            let wv = _mm512_set1_ps(unsafe { *w[jj].get_unchecked(p) });
            acc[jj] = _mm512_fmadd_ps(wv, x, acc[jj]);
        }
    }
    let mut out = [[0.0f32; LANES]; J];
    for (o, a) in out.iter_mut().zip(acc) {
        // SAFETY: `o` holds 16 f32.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), a) };
    }
    out
}

/// [`dot_rows`] with two YMM accumulators per weight row.
///
/// # Safety
/// The CPU has AVX2 and FMA, and every row of `w` holds `xs.len()` values.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dot_avx2<const J: usize>(xs: &[[f32; LANES]], w: [&[f32]; J]) -> [[f32; LANES]; J] {
    use std::arch::x86_64::{__m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps};
    use std::arch::x86_64::{_mm256_setzero_ps, _mm256_storeu_ps};
    let mut lo: [__m256; J] = [_mm256_setzero_ps(); J];
    let mut hi: [__m256; J] = [_mm256_setzero_ps(); J];
    for (p, x) in xs.iter().enumerate() {
        // SAFETY: `x` is 16 f32; `p < xs.len()`, the length of every row.
        let (xl, xh) = unsafe {
            (
                _mm256_loadu_ps(x.as_ptr()),
                _mm256_loadu_ps(x.as_ptr().add(8)),
            )
        };
        for jj in 0..J {
            let wv = _mm256_set1_ps(unsafe { *w[jj].get_unchecked(p) });
            lo[jj] = _mm256_fmadd_ps(wv, xl, lo[jj]);
            hi[jj] = _mm256_fmadd_ps(wv, xh, hi[jj]);
        }
    }
    let mut out = [[0.0f32; LANES]; J];
    for ((o, l), h) in out.iter_mut().zip(lo).zip(hi) {
        // SAFETY: `o` holds 16 f32.
        unsafe {
            _mm256_storeu_ps(o.as_mut_ptr(), l);
            _mm256_storeu_ps(o.as_mut_ptr().add(8), h);
        }
    }
    out
}

/// Folds one `k` block's sums into the output as the crate's micro-kernel
/// writes its tile, with `beta` the block's scale on the old output (the
/// caller's for the first block, 1 after): multiplied, fused or added, by
/// the crate's three cases.
#[inline(always)]
fn merge(out: &mut [f32; LANES], acc: &[f32; LANES], alpha: f32, beta: f32) {
    for l in 0..LANES {
        out[l] = if beta == 0.0 {
            alpha * acc[l]
        } else if beta == 1.0 {
            alpha.mul_add(acc[l], out[l])
        } else {
            beta * out[l] + alpha * acc[l]
        };
    }
}
