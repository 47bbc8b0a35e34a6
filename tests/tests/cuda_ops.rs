//! Every op of the Backend trait on CUDA against the CPU reference backend,
//! on fresh random inputs. Outputs the op writes into a caller's buffer are
//! poisoned (NaN) first, so an element the GPU never writes fails the test.
//! Tolerances are norm-wise relative errors ||gpu - cpu|| / ||cpu||: ops that
//! compute in bf16 (GEMM operands, RMSNorm, RoPE, SwiGLU, flash attention,
//! cross-entropy) < 1e-2; ops that stay in f32 (memory ops, axpy, scale, sum
//! of squares, dropout, the f32 attention, AdamW) < 1e-4.
//!
//! Without a GPU each test prints `SKIPPED` with the reason and passes: CI has
//! no GPU, kernels/gpu-suite.sh runs these on one. Inputs come from a seed
//! each test prints, or from POKER_PIPE_TEST_SEED to replay a failure.

#![allow(clippy::unwrap_used)]

use poker_pipe::backend::{
    AdamWStep, AttnShape, Backend, Cpu, CpuBf16, CudaBackend, Device, Dtype, Gemm, OnBackend,
    RowCopy, Sampling, WeightGrad, with_backend,
};

const BF16: f64 = 1e-2;
const F32: f64 = 1e-4;

fn gpu(test: &str) -> Option<CudaBackend> {
    match CudaBackend::open(0, Dtype::F32) {
        Ok(be) => Some(be),
        Err(e) => {
            eprintln!("SKIPPED {test}: no usable GPU ({e})");
            None
        }
    }
}

/// SplitMix64 over a printed seed: fresh inputs every run, replayable.
struct Rng(u64);

impl Rng {
    fn new(test: &str) -> Self {
        let seed = std::env::var("POKER_PIPE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("{test}: POKER_PIPE_TEST_SEED={seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-scale, scale).
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| ((self.next() >> 40) as f32 / 16_777_216.0 * 2.0 - 1.0) * scale)
            .collect()
    }

    fn ids(&mut self, n: usize, bound: usize) -> Vec<u32> {
        (0..n)
            .map(|_| (self.next() % bound as u64) as u32)
            .collect()
    }
}

fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
        .sum();
    let den: f64 = want.iter().map(|b| f64::from(*b).powi(2)).sum();
    if num.is_nan() {
        return f64::INFINITY;
    }
    (num / den.max(1e-30)).sqrt()
}

fn close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    let err = rel_err(got, want);
    assert!(err < tol, "{what}: relative error {err:.3e} >= {tol:.0e}");
}

fn poisoned(be: &CudaBackend, len: usize) -> <CudaBackend as Backend>::Buf {
    be.upload(&vec![f32::NAN; len])
}

#[test]
fn memory_ops_match_the_cpu() {
    let Some(be) = gpu("memory_ops_match_the_cpu") else {
        return;
    };
    let mut rng = Rng::new("memory_ops_match_the_cpu");
    let x = rng.vec(1000, 3.0);
    let gx = be.upload(&x);
    assert_eq!(be.download(&gx), x, "upload then download is exact");
    assert_eq!(be.len(&gx), 1000);
    assert_eq!(be.download(&be.duplicate(&gx)), x);
    assert!(be.download(&be.zeros(17)).iter().all(|&v| v == 0.0));
    let mut z = poisoned(&be, 33);
    be.set_zero(&mut z);
    assert!(be.download(&z).iter().all(|&v| v == 0.0));
    assert!(be.download(&be.upload(&[])).is_empty());

    // KV-cache write: 3 sequences, 2 new rows of width 8 into slots 5..7 of 10.
    let src = rng.vec(3 * 4 * 8, 1.0);
    let copy = RowCopy {
        count: 3,
        rows: 2,
        width: 8,
        src_block: 4,
        src_row: 1,
        dst_block: 10,
        dst_row: 5,
    };
    let base = rng.vec(3 * 10 * 8, 1.0);
    let mut want = base.clone();
    Cpu.copy_rows(&src, &mut want, copy);
    let mut got = be.upload(&base);
    be.copy_rows(&be.upload(&src), &mut got, copy);
    assert_eq!(be.download(&got), want);

    let y = rng.vec(1000, 1.0);
    let mut want = y.clone();
    Cpu.axpy(&mut want, -0.7, &x);
    Cpu.scale(&mut want, 1.3);
    let mut gy = be.upload(&y);
    be.axpy(&mut gy, -0.7, &gx);
    be.scale(&mut gy, 1.3);
    close("axpy + scale", &be.download(&gy), &want, F32);

    let (got, want) = (be.sum_squares(&gx), Cpu.sum_squares(&x));
    assert!(
        ((got - want) / want).abs() < F32,
        "sum of squares {got} vs {want}"
    );

    let table = rng.vec(50 * 12, 1.0);
    let ids = rng.ids(40, 50);
    close(
        "embedding",
        &be.download(&be.embedding(&be.upload(&table), &ids, 12)),
        &Cpu.embedding(&table, &ids, 12),
        F32,
    );
    let dout = rng.vec(40 * 12, 1.0);
    let mut want = rng.vec(50 * 12, 1.0);
    let mut got = be.upload(&want);
    Cpu.embedding_backward(&dout, &ids, 12, &mut want);
    be.embedding_backward(&be.upload(&dout), &ids, 12, &mut got);
    close("embedding backward", &be.download(&got), &want, F32);

    let idx = rng.ids(7, 50);
    close(
        "gather rows",
        &be.download(&be.gather_rows(&be.upload(&table), &idx, 12)),
        &Cpu.gather_rows(&table, &idx, 12),
        F32,
    );
    let dy = rng.vec(7 * 12, 1.0);
    let mut want = vec![0.0; 50 * 12];
    let mut got = be.zeros(50 * 12);
    Cpu.scatter_add_rows(&dy, &idx, 12, &mut want);
    be.scatter_add_rows(&be.upload(&dy), &idx, 12, &mut got);
    close("scatter-add rows", &be.download(&got), &want, F32);

    let seed = rng.next();
    let keys: Vec<u64> = (0..40).map(|_| rng.next()).collect();
    assert_eq!(
        be.download(&be.dropout(&gx, 0.3, seed, &keys)),
        Cpu.dropout(&x, 0.3, seed, &keys),
        "dropout keeps the same elements with the same scale"
    );
}

#[test]
fn matmul_matches_the_cpu_for_every_form() {
    let Some(be) = gpu("matmul_matches_the_cpu_for_every_form") else {
        return;
    };
    let mut rng = Rng::new("matmul_matches_the_cpu_for_every_form");
    let (m, n, k) = (37, 53, 96);
    for (trans_a, trans_b) in [(false, false), (false, true), (true, false), (true, true)] {
        let g = Gemm {
            m,
            n,
            k,
            trans_a,
            trans_b,
            alpha: 0.75,
            beta: 0.0,
        };
        let (a, b) = (rng.vec(m * k, 1.0), rng.vec(k * n, 1.0));
        let mut want = vec![0.0; m * n];
        Cpu.matmul(&a, &b, &mut want, g);
        let mut got = poisoned(&be, m * n);
        be.matmul(&be.upload(&a), &be.upload(&b), &mut got, g);
        close(
            &format!("matmul {trans_a}/{trans_b}"),
            &be.download(&got),
            &want,
            BF16,
        );

        let c = rng.vec(m * n, 1.0);
        let mut want = c.clone();
        Cpu.matmul(&a, &b, &mut want, g.accumulate());
        let mut got = be.upload(&c);
        be.matmul(&be.upload(&a), &be.upload(&b), &mut got, g.accumulate());
        close("matmul accumulate", &be.download(&got), &want, BF16);
    }
}

#[test]
fn layers_match_the_cpu() {
    let Some(be) = gpu("layers_match_the_cpu") else {
        return;
    };
    let mut rng = Rng::new("layers_match_the_cpu");
    let (rows, dim) = (24, 256);
    let x = rng.vec(rows * dim, 2.0);
    let w = rng.vec(dim, 1.0);
    let (y, inv) = Cpu.rms_norm(&x, &w, dim, 1e-5);
    let (gy, ginv) = be.rms_norm(&be.upload(&x), &be.upload(&w), dim, 1e-5);
    close("rms_norm", &be.download(&gy), &y, BF16);
    close("rms_norm 1/rms", &be.download(&ginv), &inv, BF16);
    let dy = rng.vec(rows * dim, 1.0);
    let dw0 = rng.vec(dim, 1.0);
    let mut dw = dw0.clone();
    let dx = Cpu.rms_norm_backward(&dy, &x, &w, &inv, dim, Some(&mut dw));
    let mut gdw = be.upload(&dw0);
    let gdx = be.rms_norm_backward(
        &be.upload(&dy),
        &be.upload(&x),
        &be.upload(&w),
        &ginv,
        dim,
        Some(&mut gdw),
    );
    close("rms_norm backward dx", &be.download(&gdx), &dx, BF16);
    close("rms_norm backward dw", &be.download(&gdw), &dw, BF16);

    let (heads, head_dim) = (4, 64);
    let positions: Vec<u32> = rng.ids(rows, 4096);
    let inv_freq: Vec<f32> = (0..head_dim / 2)
        .map(|i| 500_000f32.powf(-2.0 * i as f32 / head_dim as f32))
        .collect();
    for inverse in [false, true] {
        let x = rng.vec(rows * heads * head_dim, 1.0);
        let mut want = x.clone();
        Cpu.rope(&mut want, &positions, heads, &inv_freq, inverse);
        let mut got = be.upload(&x);
        be.rope(&mut got, &positions, heads, &inv_freq, inverse);
        close(
            &format!("rope inverse={inverse}"),
            &be.download(&got),
            &want,
            BF16,
        );
    }

    let (gate, up, dh) = (
        rng.vec(rows * dim, 3.0),
        rng.vec(rows * dim, 1.0),
        rng.vec(rows * dim, 1.0),
    );
    let (gg, gu, gd) = (be.upload(&gate), be.upload(&up), be.upload(&dh));
    close(
        "swiglu",
        &be.download(&be.swiglu(&gg, &gu)),
        &Cpu.swiglu(&gate, &up),
        BF16,
    );
    let (dg, du) = Cpu.swiglu_backward(&gate, &up, &dh);
    let (gdg, gdu) = be.swiglu_backward(&gg, &gu, &gd);
    close("swiglu backward dgate", &be.download(&gdg), &dg, BF16);
    close("swiglu backward dup", &be.download(&gdu), &du, BF16);
}

/// One attention shape forward and backward against the CPU.
fn attention_case(be: &CudaBackend, rng: &mut Rng, s: AttnShape, kv_start: &[u32], tol: f64) {
    let q = rng.vec(s.batch * s.q_len * s.heads * s.head_dim, 1.0);
    let k = rng.vec(s.batch * s.kv_cap * s.kv_heads * s.head_dim, 1.0);
    let v = rng.vec(s.batch * s.kv_cap * s.kv_heads * s.head_dim, 1.0);
    let dout = rng.vec(q.len(), 1.0);
    let (out, lse) = Cpu.attention(&q, &k, &v, s, kv_start);
    let (gq, gk, gv) = (be.upload(&q), be.upload(&k), be.upload(&v));
    let (gout, glse) = be.attention(&gq, &gk, &gv, s, kv_start);
    close(&format!("attention {s:?}"), &be.download(&gout), &out, tol);
    let finite = |x: Vec<f32>| -> Vec<f32> {
        x.into_iter()
            .map(|v| if v.is_finite() { v } else { 0.0 })
            .collect()
    };
    let (glse_host, lse_host) = (be.download(&glse), lse.clone());
    assert_eq!(
        glse_host.iter().map(|v| v.is_finite()).collect::<Vec<_>>(),
        lse_host.iter().map(|v| v.is_finite()).collect::<Vec<_>>(),
        "attention lse: the same rows see no key"
    );
    close("attention lse", &finite(glse_host), &finite(lse_host), tol);
    let (dq, dk, dv) = Cpu.attention_backward(&q, &k, &v, &out, &lse, &dout, s, kv_start);
    let (gdq, gdk, gdv) =
        be.attention_backward(&gq, &gk, &gv, &gout, &glse, &be.upload(&dout), s, kv_start);
    close("attention dq", &be.download(&gdq), &dq, tol);
    close("attention dk", &be.download(&gdk), &dk, tol);
    close("attention dv", &be.download(&gdv), &dv, tol);
}

#[test]
fn flash_attention_matches_the_cpu() {
    let Some(be) = gpu("flash_attention_matches_the_cpu") else {
        return;
    };
    let mut rng = Rng::new("flash_attention_matches_the_cpu");
    for (seq, heads, kv_heads, head_dim) in [(77, 8, 2, 128), (64, 4, 4, 64), (130, 6, 3, 64)] {
        let s = AttnShape::causal(2, seq, heads, kv_heads, head_dim);
        attention_case(&be, &mut rng, s, &[0, 0], BF16);
    }
}

#[test]
fn padded_and_cached_attention_match_the_cpu() {
    let Some(be) = gpu("padded_and_cached_attention_match_the_cpu") else {
        return;
    };
    let mut rng = Rng::new("padded_and_cached_attention_match_the_cpu");
    // Left padding, an odd head dim, and decoding 3 then 1 tokens against a
    // cache with spare capacity.
    let padded = AttnShape::causal(2, 19, 4, 2, 48);
    attention_case(&be, &mut rng, padded, &[0, 6], F32);
    for (q_len, q_offset) in [(3, 10), (1, 16)] {
        let s = AttnShape {
            batch: 2,
            q_len,
            kv_len: q_offset + q_len,
            kv_cap: 24,
            q_offset,
            heads: 8,
            kv_heads: 2,
            head_dim: 64,
        };
        attention_case(&be, &mut rng, s, &[2, 0], F32);
    }
}

#[test]
fn token_nll_and_its_gradients_match_the_cpu() {
    let Some(be) = gpu("token_nll_and_its_gradients_match_the_cpu") else {
        return;
    };
    let mut rng = Rng::new("token_nll_and_its_gradients_match_the_cpu");
    let (rows, dim, vocab) = (45, 64, 1000);
    let h = rng.vec(rows * dim, 1.0);
    let w = rng.vec(vocab * dim, 0.5);
    let targets = rng.ids(rows, vocab);
    let weights: Vec<f32> = (0..rows)
        .map(|r| if r % 5 == 4 { 0.0 } else { 1.0 / 36.0 })
        .collect();
    let mut dh = Vec::new();
    let dw0 = rng.vec(vocab * dim, 0.1);
    let mut dw = dw0.clone();
    let segments = [0..20, 20..rows];
    let head = WeightGrad {
        dw: &mut dw,
        segments: &segments,
    };
    let nll = Cpu.token_nll(&h, &w, dim, &targets, &weights, Some((&mut dh, Some(head))));
    let mut gdh = poisoned(&be, 3);
    let mut gdw = be.upload(&dw0);
    let head = WeightGrad {
        dw: &mut gdw,
        segments: &segments,
    };
    let got = be.token_nll(
        &be.upload(&h),
        &be.upload(&w),
        dim,
        &targets,
        &weights,
        Some((&mut gdh, Some(head))),
    );
    close("token_nll", &got, &nll, BF16);
    close("token_nll dh", &be.download(&gdh), &dh, BF16);
    let delta = |x: Vec<f32>| -> Vec<f32> { x.iter().zip(&dw0).map(|(a, b)| a - b).collect() };
    close(
        "token_nll dw (accumulated part)",
        &delta(be.download(&gdw)),
        &delta(dw),
        BF16,
    );
    let plain = be.token_nll(
        &be.upload(&h),
        &be.upload(&w),
        dim,
        &targets,
        &weights,
        None,
    );
    assert_eq!(
        plain, got,
        "the loss does not depend on asking for gradients"
    );
}

#[test]
fn adamw_and_sampling_match_the_cpu() {
    let Some(be) = gpu("adamw_and_sampling_match_the_cpu") else {
        return;
    };
    let mut rng = Rng::new("adamw_and_sampling_match_the_cpu");
    let n = 4099;
    let (mut p, mut m, mut v) = (rng.vec(n, 1.0), rng.vec(n, 0.1), rng.vec(n, 0.01));
    for x in v.iter_mut() {
        *x = x.abs();
    }
    let (mut gp, mut gm, mut gv) = (be.upload(&p), be.upload(&m), be.upload(&v));
    for step in 1..=3 {
        let g = rng.vec(n, 1.0);
        let h = AdamWStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            step,
        };
        Cpu.adamw(&mut p, &g, &mut m, &mut v, h);
        be.adamw(&mut gp, &be.upload(&g), &mut gm, &mut gv, h);
    }
    close("adamw param", &be.download(&gp), &p, F32);
    close("adamw m", &be.download(&gm), &m, F32);
    close("adamw v", &be.download(&gv), &v, F32);

    let (rows, vocab) = (6, 500);
    let logits = rng.vec(rows * vocab, 4.0);
    let uniforms: Vec<f32> = rng.vec(rows, 0.5).iter().map(|u| u + 0.5).collect();
    let gl = be.upload(&logits);
    for how in [
        Sampling::GREEDY,
        Sampling {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.9,
        },
    ] {
        assert_eq!(
            be.sample(&gl, vocab, how, &uniforms),
            Cpu.sample(&logits, vocab, how, &uniforms),
            "{how:?}"
        );
    }
}

/// Reports which device the work ran on and a sum computed there.
struct WhereAndSum(Vec<f32>);

impl OnBackend for WhereAndSum {
    type Output = (Device, f64);

    fn run<B: Backend>(self, be: &B) -> (Device, f64) {
        (be.device(), be.sum_squares(&be.upload(&self.0)))
    }
}

/// `with_backend` runs on the device it is given; `cuda` without a GPU is an
/// error value naming the problem, not a panic.
#[test]
fn with_backend_runs_on_the_named_device_or_says_why_not() {
    let data = vec![1.0, -2.0, 3.0];
    let (device, sum) = with_backend(Device::Cpu, Dtype::F32, WhereAndSum(data.clone())).unwrap();
    assert_eq!((device, sum), (Device::Cpu, 14.0));
    match with_backend(Device::Cuda(0), Dtype::F32, WhereAndSum(data)) {
        Ok((device, sum)) => {
            assert_eq!(device, Device::Cuda(0));
            assert!((sum - 14.0).abs() < 1e-4, "{sum}");
        }
        Err(e) => {
            let text = e.to_string();
            eprintln!("no GPU here: {text}");
            assert!(
                text.contains("cuda") || text.contains("CUDA") || text.contains("NVRTC"),
                "the error names the CUDA problem: {text}"
            );
        }
    }
    let missing = with_backend(Device::Cuda(4096), Dtype::F32, WhereAndSum(vec![1.0]));
    assert!(missing.is_err(), "GPU 4096 does not exist anywhere");
}

/// Opened with bf16 weights, the GPU stores frozen weights in bf16, reads
/// them in place, and agrees with the CPU's emulation of its rounding
/// ([`CpuBf16`]); the entropy never leaves the device as logits.
#[test]
fn bf16_weights_and_entropy_match_the_cpu_emulation() {
    let be = match CudaBackend::open(0, Dtype::Bf16) {
        Ok(be) => be,
        Err(e) => {
            eprintln!(
                "SKIPPED bf16_weights_and_entropy_match_the_cpu_emulation: no usable GPU ({e})"
            );
            return;
        }
    };
    let mut rng = Rng::new("bf16_weights_and_entropy_match_the_cpu_emulation");
    let (rows, dim, vocab) = (300, 64, 1000);
    let h = rng.vec(rows * dim, 1.0);
    let w = rng.vec(vocab * dim, 0.5);
    let (gw, cw) = (be.upload_weight(&w), CpuBf16.upload_weight(&w));
    assert_eq!(be.dtype(&gw), Dtype::Bf16);
    assert_eq!(be.download(&gw), CpuBf16.download(&cw), "same rounding");
    let (gh, ch) = (be.upload(&h), CpuBf16.upload(&h));
    close(
        "entropy",
        &be.token_entropy(&gh, &gw, dim),
        &CpuBf16.token_entropy(&ch, &cw, dim),
        F32 * 10.0,
    );
    let g = Gemm::linear(rows, vocab, dim);
    let (mut gy, mut cy) = (be.zeros(rows * vocab), CpuBf16.zeros(rows * vocab));
    be.matmul(&gh, &gw, &mut gy, g);
    CpuBf16.matmul(&ch, &cw, &mut cy, g);
    close(
        "matmul on a bf16 weight",
        &be.download(&gy),
        &CpuBf16.download(&cy),
        F32,
    );
    let ids = rng.ids(17, vocab);
    assert_eq!(
        be.download(&be.embedding(&gw, &ids, dim)),
        CpuBf16.download(&CpuBf16.embedding(&cw, &ids, dim)),
        "embedding rows of a bf16 table are exact"
    );
}
