//! Row-major GEMM on top of the `gemm` crate (which takes arbitrary
//! strides, so transposes cost nothing).

use crate::backend::Gemm;

/// Products smaller than this many multiply-adds run on one thread: the
/// rayon hand-off costs more than it saves.
const PARALLEL_MIN_WORK: usize = 1 << 18;

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
pub fn matmul(a: &[f32], b: &[f32], c: &mut [f32], g: Gemm) {
    let Gemm {
        m,
        n,
        k,
        trans_a,
        trans_b,
        alpha,
        beta,
    } = g;
    assert!(a.len() >= m * k, "matmul: a holds {} < {m}x{k}", a.len());
    assert!(b.len() >= k * n, "matmul: b holds {} < {k}x{n}", b.len());
    assert!(c.len() >= m * n, "matmul: c holds {} < {m}x{n}", c.len());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for x in &mut c[..m * n] {
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
    // SAFETY: the asserts above bound every index the strides reach:
    // a: (m-1, k-1) -> at most m*k-1, b likewise, c: (m-1, n-1) -> m*n-1.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            beta != 0.0,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
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
