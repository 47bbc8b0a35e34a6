//! The arithmetic of PPO for language models, on host vectors of one
//! response each: per-token rewards with a KL penalty against the reference
//! policy, generalised advantage estimation, the clipped surrogate and the
//! clipped value loss (as gradients the model's backward passes consume).
//! The moving average of the actor's weights is in `train::ema`.
//!
//! Kept apart from the stage so each formula is tested on its own against a
//! direct transcription of its definition.

/// Per-token rewards of one response: `-kl_coef * (logp - ref_logp)` at
/// every token, plus the sequence score (clipped to `[-clip, clip]`) on the
/// last token, as InstructGPT and DeepSpeed-Chat shape them. Returns the
/// rewards and the summed KL estimate `sum(logp - ref_logp)`.
pub fn shaped_rewards(
    logp: &[f32],
    ref_logp: &[f32],
    score: f32,
    kl_coef: f32,
    clip: f32,
) -> (Vec<f32>, f32) {
    let mut kl = 0.0;
    let mut rewards: Vec<f32> = logp
        .iter()
        .zip(ref_logp)
        .map(|(&l, &r)| {
            kl += l - r;
            -kl_coef * (l - r)
        })
        .collect();
    if let Some(last) = rewards.last_mut() {
        *last += score.clamp(-clip, clip);
    }
    (rewards, kl)
}

/// Generalised advantage estimation over one response (the value after
/// the last token is 0: the episode ends there). Returns advantages and
/// returns (`advantage + value`, the critic's targets).
pub fn gae(rewards: &[f32], values: &[f32], gamma: f32, lambda: f32) -> (Vec<f32>, Vec<f32>) {
    let n = rewards.len();
    let mut adv = vec![0.0; n];
    let mut running = 0.0;
    for t in (0..n).rev() {
        let next = if t + 1 < n { values[t + 1] } else { 0.0 };
        let delta = rewards[t] + gamma * next - values[t];
        running = delta + gamma * lambda * running;
        adv[t] = running;
    }
    let returns = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, returns)
}

/// Normalises the advantages of a batch to mean 0 and variance 1, so the
/// policy's step size does not depend on the scale of the rewards. Fewer
/// than two values are left as they are.
pub fn whiten(values: &mut [f32]) {
    let n = values.len();
    if n < 2 {
        return;
    }
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
    let var = values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n as f64;
    let inv = 1.0 / (var + 1e-8).sqrt();
    for v in values {
        *v = ((f64::from(*v) - mean) * inv) as f32;
    }
}

/// The clipped surrogate over `n` tokens: loss `mean(-min(r A, clip(r, 1 -
/// eps, 1 + eps) A))` with `r = exp(logp - old_logp)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Surrogate {
    pub loss: f32,
    /// Weights `w` such that the gradient of `sum(w * -logp)` (the model's
    /// `loss_backward`) is the gradient of `loss` with respect to `logp`:
    /// `r A / n` where the unclipped term is the minimum, else 0.
    pub weights: Vec<f32>,
    /// Share of tokens whose ratio was clipped.
    pub clip_fraction: f32,
}

pub fn surrogate(logp: &[f32], old_logp: &[f32], adv: &[f32], eps: f32) -> Surrogate {
    let n = logp.len().max(1) as f32;
    let (mut loss, mut clipped) = (0.0, 0usize);
    let weights = logp
        .iter()
        .zip(old_logp)
        .zip(adv)
        .map(|((&l, &o), &a)| {
            let r = (l - o).exp();
            let rc = r.clamp(1.0 - eps, 1.0 + eps);
            if rc != r {
                clipped += 1;
            }
            let (plain, cut) = (r * a, rc * a);
            if plain <= cut {
                loss -= plain;
                r * a / n
            } else {
                loss -= cut;
                0.0
            }
        })
        .collect();
    Surrogate {
        loss: loss / n,
        weights,
        clip_fraction: clipped as f32 / n,
    }
}

/// The clipped value loss `0.5 mean(max((v - R)^2, (v_c - R)^2))` with
/// `v_c = old + clip(v - old, -eps, eps)`, and its gradient in `v`.
pub fn value_loss(values: &[f32], old: &[f32], returns: &[f32], eps: f32) -> (f32, Vec<f32>) {
    let n = values.len().max(1) as f32;
    let mut loss = 0.0;
    let grad = values
        .iter()
        .zip(old)
        .zip(returns)
        .map(|((&v, &o), &r)| {
            let vc = o + (v - o).clamp(-eps, eps);
            let (plain, cut) = ((v - r).powi(2), (vc - r).powi(2));
            if plain >= cut {
                loss += 0.5 * plain;
                (v - r) / n
            } else {
                loss += 0.5 * cut;
                // v_c moves with v only inside the clip range.
                if (v - o).abs() < eps {
                    (vc - r) / n
                } else {
                    0.0
                }
            }
        })
        .collect();
    (loss / n, grad)
}

/// Log-probabilities near `old` whose ratios spread on both sides of a 0.2
/// clip range, away from its kinks (where finite differences break): the
/// inputs of the surrogate's gradient checks here and in GRPO's.
#[cfg(test)]
pub(crate) fn ratios_off_the_kinks(rng: &mut rand_chacha::ChaCha8Rng, old: &[f32]) -> Vec<f32> {
    use rand::Rng;
    old.iter()
        .map(|&o| {
            let mut d: f32 = rng.random_range(-0.5..0.5);
            while (d.exp() - 0.8).abs() < 0.01 || (d.exp() - 1.2).abs() < 0.01 {
                d += 0.05;
            }
            o + d
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-scale..scale)).collect()
    }

    #[test]
    fn gae_equals_the_discounted_sum_of_td_errors() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for n in [1, 2, 7, 20] {
            let r = random(&mut rng, n, 1.0);
            let v = random(&mut rng, n, 1.0);
            let (gamma, lambda) = (0.97, 0.9);
            let (adv, ret) = gae(&r, &v, gamma, lambda);
            for t in 0..n {
                let mut want = 0.0f64;
                for k in t..n {
                    let next = if k + 1 < n { v[k + 1] } else { 0.0 };
                    let delta = f64::from(r[k] + gamma * next - v[k]);
                    want += f64::from(gamma * lambda).powi((k - t) as i32) * delta;
                }
                assert!((f64::from(adv[t]) - want).abs() < 1e-5, "n {n} t {t}");
                assert!((ret[t] - adv[t] - v[t]).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn shaped_rewards_penalise_kl_and_add_the_clipped_score_last() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let logp = random(&mut rng, 5, 3.0);
        let refp = random(&mut rng, 5, 3.0);
        let (r, kl) = shaped_rewards(&logp, &refp, 9.0, 0.1, 5.0);
        for t in 0..5 {
            let want = -0.1 * (logp[t] - refp[t]) + if t == 4 { 5.0 } else { 0.0 };
            assert!((r[t] - want).abs() < 1e-6);
        }
        let want_kl: f32 = logp.iter().zip(&refp).map(|(a, b)| a - b).sum();
        assert!((kl - want_kl).abs() < 1e-5);
    }

    /// Central differences of `f` at `x`, coordinate by coordinate.
    fn numeric_grad(x: &[f32], f: impl Fn(&[f32]) -> f32) -> Vec<f32> {
        let h = 1e-3;
        (0..x.len())
            .map(|i| {
                let (mut up, mut down) = (x.to_vec(), x.to_vec());
                up[i] += h;
                down[i] -= h;
                (f(&up) - f(&down)) / (2.0 * h)
            })
            .collect()
    }

    #[test]
    fn surrogate_weights_are_the_gradient_of_the_clipped_loss() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let n = 40;
        let old = random(&mut rng, n, 2.0);
        let logp = ratios_off_the_kinks(&mut rng, &old);
        let adv = random(&mut rng, n, 1.5);
        let s = surrogate(&logp, &old, &adv, 0.2);
        // d loss / d logp = -w, since the model minimises sum(w * -logp).
        let g = numeric_grad(&logp, |l| surrogate(l, &old, &adv, 0.2).loss);
        for (i, (g, w)) in g.iter().zip(&s.weights).enumerate() {
            assert!((g + w).abs() < 2e-3, "{i}: {g} {w}");
        }
        assert!(s.clip_fraction > 0.0 && s.clip_fraction < 1.0);
    }

    #[test]
    fn value_loss_gradient_matches_finite_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(14);
        let n = 30;
        let old = random(&mut rng, n, 1.0);
        let values: Vec<f32> = old
            .iter()
            .map(|&o| {
                let mut d: f32 = rng.random_range(-0.6..0.6);
                if (d.abs() - 0.2).abs() < 0.01 {
                    d += 0.05;
                }
                o + d
            })
            .collect();
        let ret = random(&mut rng, n, 1.0);
        let (_, grad) = value_loss(&values, &old, &ret, 0.2);
        let g = numeric_grad(&values, |v| value_loss(v, &old, &ret, 0.2).0);
        for (i, (g, want)) in g.iter().zip(&grad).enumerate() {
            assert!((g - want).abs() < 2e-3, "{i}: {g} {want}");
        }
    }

    #[test]
    fn whitening_gives_zero_mean_unit_variance() {
        let mut rng = ChaCha8Rng::seed_from_u64(15);
        let mut v: Vec<f32> = random(&mut rng, 50, 4.0).iter().map(|x| x + 3.0).collect();
        whiten(&mut v);
        let mean: f32 = v.iter().sum::<f32>() / 50.0;
        let var: f32 = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / 50.0;
        assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4);
    }
}
