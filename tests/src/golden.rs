//! The HF golden fixtures of `tests/golden/llama`, as every test that checks
//! our LLaMA against them reads them: on the CPU and on CUDA.

use std::path::PathBuf;

use poker_pipe::backend::Cpu;
use poker_pipe::model::weights::TensorMap;
use poker_pipe::model::{Batch, Llama};

/// A fixture folder. POKER_PIPE_TESTS_DIR points at the tests crate when a
/// prebuilt test binary runs on another machine (kernels/gpu-suite.sh).
pub fn golden(name: &str) -> PathBuf {
    std::env::var_os("POKER_PIPE_TESTS_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("golden/llama")
        .join(name)
}

/// Relative L2 error of `a` against the reference `b`; infinite when `a`
/// holds a NaN, so no tolerance can pass it.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    if num.is_nan() {
        return f64::INFINITY;
    }
    (num / den.max(1e-30)).sqrt()
}

/// The token batch of a fixture and the SFT targets/weights of its loss:
/// row `(b, t)` predicts token `t + 1`, weighted by the mask / mask count.
pub fn sft_batch(expected: &TensorMap) -> (Batch, Vec<u32>, Vec<f32>) {
    let ids = &expected["input_ids"];
    let (b, t) = (ids.shape[0], ids.shape[1]);
    let ids: Vec<u32> = ids.data.iter().map(|&x| x as u32).collect();
    let mask = &expected["loss_mask"].data;
    let count: f32 = (0..b)
        .flat_map(|r| (1..t).map(move |j| (r, j)))
        .map(|(r, j)| mask[r * t + j])
        .sum();
    let mut targets = vec![0; b * t];
    let mut weights = vec![0.0; b * t];
    for r in 0..b {
        for j in 0..t - 1 {
            targets[r * t + j] = ids[r * t + j + 1];
            weights[r * t + j] = mask[r * t + j + 1] / count;
        }
    }
    (Batch::dense(ids, b), targets, weights)
}

/// A tiny deterministic generator of values in [-1, 1), so tests need no
/// random-number crate.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn uniform(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Checks the gradients `model` holds (from one backward of `loss`) for
/// each parameter in `names` against central differences of `loss` along
/// a random direction `rng` draws, `eps` either side: the relative error
/// must stay below `tol`.
pub fn assert_gradients_match_differences(
    model: &mut Llama<Cpu>,
    names: &[String],
    rng: &mut Lcg,
    eps: f32,
    tol: f64,
    loss: impl Fn(&Llama<Cpu>) -> f64,
) {
    for name in names {
        let grad = model
            .params_mut()
            .into_iter()
            .find(|p| &p.name == name)
            .and_then(|p| p.grad.clone())
            .unwrap_or_else(|| panic!("{name} has no gradient"));
        let dir: Vec<f32> = grad.iter().map(|_| rng.uniform()).collect();
        let shift = |m: &mut Llama<Cpu>, s: f32| {
            if let Some(p) = m.params_mut().into_iter().find(|p| &p.name == name) {
                p.value.iter_mut().zip(&dir).for_each(|(v, d)| *v += s * d);
            }
        };
        shift(model, eps);
        let plus = loss(model);
        shift(model, -2.0 * eps);
        let minus = loss(model);
        shift(model, eps);
        let numeric = (plus - minus) / (2.0 * f64::from(eps));
        let analytic: f64 = grad.iter().zip(&dir).map(|(g, d)| f64::from(g * d)).sum();
        let err = (numeric - analytic).abs() / analytic.abs().max(1e-4);
        assert!(
            err < tol,
            "{name}: differences {numeric} vs gradient {analytic}"
        );
    }
}
