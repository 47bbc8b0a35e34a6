//! Row-major GEMM on top of the `gemm` crate (which takes arbitrary
//! strides, so transposes cost nothing).

use std::ops::Range;

use crate::backend::Gemm;

/// Products smaller than this many multiply-adds run on one thread: the
/// rayon hand-off costs more than it saves.
pub(super) const PARALLEL_MIN_WORK: usize = 1 << 18;

/// Makes every thread that may run a product (the caller and each rayon
/// worker) allocate its packing slab now. The gemm crate keeps one slab per
/// thread, the size of the L2 cache, for the life of the process, and
/// allocates it in the thread's first large product; done here, before any
/// model exists, those bytes sit under every measured baseline instead of
/// inside the first training step (they are the same for every model: L2 x
/// threads, 8 MiB on a 2-core machine with 4 MiB of L2).
pub fn warm_up() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| {
        // Each form of product the model uses (a transposed left operand,
        // weight gradients, is what packs into the slab), large enough to
        // run on the rayon workers and small enough to run on the calling
        // thread itself (below PARALLEL_MIN_WORK), which has a slab too.
        let one = || {
            for n in [256, 48] {
                let (a, b) = (vec![1.0f32; n * n], vec![1.0f32; n * n]);
                let mut c = vec![0.0f32; n * n];
                for g in [
                    Gemm::linear(n, n, n),
                    Gemm::plain(n, n, n),
                    Gemm::weight_grad(n, n, n),
                ] {
                    matmul(&a, &b, &mut c, g);
                }
            }
        };
        one();
        rayon::broadcast(|_| one());
    });
}

/// `c = alpha * op(a) op(b) + beta * c`, see [`Gemm`].
///
/// A row of `c` gets the same bits whatever the number of rows `m` (with
/// `op(a)` untransposed), which is what makes a sequence's activations, and
/// so a training step, independent of the micro-batch it shares. The gemm
/// crate does not promise that by itself: it sums products of `m * n <=
/// 256` with a horizontal kernel and `m == 1` as a matrix-vector product,
/// and picks its K blocking from `m` and `n` as well as `k`. So small
/// products run on at least [`min_rows`] rows (zero rows added), and the
/// sum over `k` is cut here into blocks of [`K_BLOCK`], each of which the
/// crate sums in one pass in every case.
pub fn matmul(a: &[f32], b: &[f32], c: &mut [f32], g: Gemm) {
    let Gemm { m, n, k, .. } = g;
    assert!(a.len() >= m * k, "matmul: a holds {} < {m}x{k}", a.len());
    assert!(b.len() >= k * n, "matmul: b holds {} < {k}x{n}", b.len());
    assert!(c.len() >= m * n, "matmul: c holds {} < {m}x{n}", c.len());
    if m == 0 || n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(isa) = super::skinny::takes(&g) {
        return super::skinny::linear(isa, &a[..m * k], &b[..n * k], &mut c[..m * n], g);
    }
    with_crate(a, b, c, g)
}

/// [`matmul`] by the `gemm` crate alone, for any shape: the reference that
/// [`super::skinny`] is tested against.
pub(super) fn with_crate(a: &[f32], b: &[f32], c: &mut [f32], g: Gemm) {
    let Gemm { m, n, k, .. } = g;
    let rows = min_rows(n);
    if g.trans_a || m >= rows {
        return blocked(a, b, &mut c[..m * n], g);
    }
    let mut padded_a = a[..m * k].to_vec();
    padded_a.resize(rows * k, 0.0);
    let mut padded_c = c[..m * n].to_vec();
    padded_c.resize(rows * n, 0.0);
    blocked(&padded_a, b, &mut padded_c, Gemm { m: rows, ..g });
    c[..m * n].copy_from_slice(&padded_c[..m * n]);
}

/// [`crate::backend::Backend::weight_grad`]: one product per segment of
/// rows, each added to `dw` in turn.
pub fn weight_grad(dy: &[f32], x: &[f32], dw: &mut [f32], g: Gemm, segments: &[Range<usize>]) {
    for rows in segments {
        let (dy, x) = (
            &dy[rows.start * g.m..rows.end * g.m],
            &x[rows.start * g.n..rows.end * g.n],
        );
        matmul(dy, x, dw, Gemm { k: rows.len(), ..g });
    }
}

/// Products of fewer rows than this (for `n` columns) take the crate's
/// special paths, see [`matmul`].
fn min_rows(n: usize) -> usize {
    (HORIZONTAL_MAX / n + 1).max(2)
}

/// The crate's horizontal kernel takes products of up to this many outputs.
const HORIZONTAL_MAX: usize = 256;

/// The longest sum over `k` one call to the crate makes; it sums up to 512
/// terms in one pass whatever the shape.
pub(super) const K_BLOCK: usize = 512;

/// [`matmul`] on bounds-checked slices, `k` cut into [`K_BLOCK`]s: the
/// first block applies `beta`, the others add to it.
fn blocked(a: &[f32], b: &[f32], c: &mut [f32], g: Gemm) {
    let Gemm {
        m,
        n,
        k,
        trans_a,
        trans_b,
        alpha,
        beta,
    } = g;
    if k == 0 {
        for x in c.iter_mut() {
            *x = if beta == 0.0 { 0.0 } else { *x * beta };
        }
        return;
    }
    let (a_rs, a_cs) = if trans_a { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if trans_b { (1, k) } else { (n, 1) };
    let parallelism = if m * n * k >= PARALLEL_MIN_WORK {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    for k0 in (0..k).step_by(K_BLOCK) {
        let depth = K_BLOCK.min(k - k0);
        let beta = if k0 == 0 { beta } else { 1.0 };
        // SAFETY: the caller checked a >= m*k, b >= k*n and c == m*n; this
        // block reads a at (i, k0 + p) -> i*a_rs + (k0 + p)*a_cs and b at
        // (k0 + p, j) -> (k0 + p)*b_rs + j*b_cs, p < depth <= k - k0, so the
        // largest indices are those of the whole product: m*k-1, k*n-1.
        unsafe {
            gemm::gemm(
                m,
                n,
                depth,
                c.as_mut_ptr(),
                1,
                n as isize,
                beta != 0.0,
                a.as_ptr().add(k0 * a_cs),
                a_cs as isize,
                a_rs as isize,
                b.as_ptr().add(k0 * b_rs),
                b_cs as isize,
                b_rs as isize,
                beta,
                alpha,
                false,
                false,
                false,
                parallelism,
            );
        }
    }
}
