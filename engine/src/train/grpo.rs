//! The arithmetic of GRPO (DeepSeekMath's group relative policy
//! optimisation) on host vectors: advantages normalised within each group
//! of answers to the same prompt, so no critic is needed, and the clipped
//! surrogate of PPO with a KL penalty to the reference policy added to the
//! loss (Schulman's k3 estimator) rather than folded into the reward.
//!
//! The loss is a mean over every response token of the batch (the token
//! normalisation of DAPO and TRL's default), so a long answer weighs no
//! more per token than a short one.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ppo;

/// How each group's centred scores are scaled into advantages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase", from = "ScaleRewards")]
pub enum RewardScale {
    /// Divided by the group's own standard deviation (DeepSeekMath's
    /// advantage): every group that disagrees pushes equally hard.
    Group,
    /// Divided by the standard deviation of every score of the step (TRL's
    /// `"batch"`, PPO's whitening): a group whose answers differ by little
    /// pushes little, and the step's scale stays steady.
    Batch,
    /// Left in reward units (Dr. GRPO).
    None,
}

/// `scale_rewards` as a pipeline may write it: a scale by name, or the
/// boolean of TRL's first API (`true` is `group`, `false` is `none`). Both
/// spellings of one choice serialize alike, so they hash alike.
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ScaleRewards {
    Flag(bool),
    Named(NamedScale),
}

/// The scales by name, as `scale_rewards` accepts them.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NamedScale {
    Group,
    Batch,
    None,
}

impl From<ScaleRewards> for RewardScale {
    fn from(s: ScaleRewards) -> Self {
        match s {
            ScaleRewards::Flag(true) | ScaleRewards::Named(NamedScale::Group) => Self::Group,
            ScaleRewards::Named(NamedScale::Batch) => Self::Batch,
            ScaleRewards::Flag(false) | ScaleRewards::Named(NamedScale::None) => Self::None,
        }
    }
}

/// The sample standard deviation of `xs` (n - 1 in the divisor).
fn sample_sd(xs: &[f32]) -> f64 {
    let n = xs.len() as f64;
    let mean = xs.iter().map(|&s| f64::from(s)).sum::<f64>() / n;
    let var = xs
        .iter()
        .map(|&s| (f64::from(s) - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0).max(1.0);
    var.sqrt()
}

/// Advantages of `scores` taken in consecutive groups of `group_size`:
/// each score minus its group's mean, divided as `scale` says by a
/// standard deviation (the sample one, plus 1e-4). A group whose answers
/// all scored the same has no advantage to teach.
pub fn group_advantages(scores: &[f32], group_size: usize, scale: RewardScale) -> Vec<f32> {
    let batch_div = sample_sd(scores) + 1e-4;
    let mut out = Vec::with_capacity(scores.len());
    for group in scores.chunks(group_size.max(1)) {
        let mean = group.iter().map(|&s| f64::from(s)).sum::<f64>() / group.len() as f64;
        let div = match scale {
            RewardScale::Group => sample_sd(group) + 1e-4,
            RewardScale::Batch => batch_div,
            RewardScale::None => 1.0,
        };
        out.extend(group.iter().map(|&s| ((f64::from(s) - mean) / div) as f32));
    }
    out
}

/// The share of groups (consecutive `group_size` scores) whose answers all
/// scored the same, so that their advantages are zero and only the KL term
/// moves the policy on them (TRL's `frac_reward_zero_std`). A share near 1
/// says the sampling no longer explores: a higher `temperature` or a
/// larger `group_size` gives the groups something to compare.
pub fn zero_spread_share(scores: &[f32], group_size: usize) -> f64 {
    let groups = scores.chunks(group_size.max(1));
    let n = groups.len().max(1) as f64;
    let flat = groups.filter(|g| g.iter().all(|&s| s == g[0])).count();
    flat as f64 / n
}

/// The k3 estimate of KL(actor || reference) at one sampled token:
/// `exp(ref - logp) - (ref - logp) - 1`, unbiased and never negative.
pub fn k3(logp: f32, ref_logp: f32) -> f32 {
    let d = ref_logp - logp;
    d.exp() - d - 1.0
}

/// GRPO's loss over `n` response tokens: `mean(-min(r A, clip(r, 1 - eps,
/// 1 + eps) A) + beta * k3)` with `r = exp(logp - old_logp)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Loss {
    pub loss: f32,
    /// Weights `w` such that the gradient of `sum(w * -logp)` (the model's
    /// `loss_backward`) is the gradient of `loss` in `logp`.
    pub weights: Vec<f32>,
    /// Share of tokens whose ratio was clipped.
    pub clip_fraction: f32,
    /// Mean k3 per token.
    pub kl: f32,
}

pub fn loss(
    logp: &[f32],
    old_logp: &[f32],
    ref_logp: &[f32],
    adv: &[f32],
    eps: f32,
    beta: f32,
) -> Loss {
    let s = ppo::surrogate(logp, old_logp, adv, eps);
    let n = logp.len().max(1) as f32;
    let mut kl = 0.0;
    // d k3 / d logp = 1 - exp(ref - logp), and w = -d loss / d logp.
    let weights = s
        .weights
        .iter()
        .zip(logp.iter().zip(ref_logp))
        .map(|(&w, (&l, &r))| {
            kl += k3(l, r);
            w + beta * ((r - l).exp() - 1.0) / n
        })
        .collect();
    Loss {
        loss: s.loss + beta * kl / n,
        weights,
        clip_fraction: s.clip_fraction,
        kl: kl / n,
    }
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
    fn group_advantages_are_standardised_within_each_group() {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let scores = random(&mut rng, 12, 3.0);
        let adv = group_advantages(&scores, 4, RewardScale::Group);
        for (g, (s, a)) in scores.chunks(4).zip(adv.chunks(4)).enumerate() {
            let mean: f64 = s.iter().map(|&x| f64::from(x)).sum::<f64>() / 4.0;
            let sd = (s
                .iter()
                .map(|&x| (f64::from(x) - mean).powi(2))
                .sum::<f64>()
                / 3.0)
                .sqrt();
            for (x, y) in s.iter().zip(a) {
                let want = (f64::from(*x) - mean) / (sd + 1e-4);
                assert!((f64::from(*y) - want).abs() < 1e-5, "group {g}");
            }
        }
        let plain = group_advantages(&scores, 4, RewardScale::None);
        let sum: f32 = plain[..4].iter().sum();
        assert!(sum.abs() < 1e-5);
        assert!((plain[0] - (scores[0] - scores[..4].iter().sum::<f32>() / 4.0)).abs() < 1e-5);
        // Batch scaling: the group's centred scores over the sd of all 12.
        let batch = group_advantages(&scores, 4, RewardScale::Batch);
        let all = sample_sd(&scores) + 1e-4;
        for (i, (a, p)) in batch.iter().zip(&plain).enumerate() {
            assert!((f64::from(*a) - f64::from(*p) / all).abs() < 1e-5, "{i}");
        }
        assert_eq!(zero_spread_share(&scores, 4), 0.0);
        let mut flat = scores.clone();
        flat[4..8].fill(-0.5);
        assert_eq!(zero_spread_share(&flat, 4), 1.0 / 3.0);
        assert_eq!(zero_spread_share(&flat[4..8], 2), 1.0);
        // One group of equal scores teaches nothing.
        for scale in [RewardScale::Group, RewardScale::Batch, RewardScale::None] {
            assert_eq!(group_advantages(&[1.5; 3], 3, scale), vec![0.0; 3]);
        }
    }

    #[test]
    fn both_spellings_of_a_scale_serialize_alike() {
        use serde_json::{Value, from_value, json, to_value};
        for (flag, name, scale) in [
            (Some(true), "group", RewardScale::Group),
            (None, "batch", RewardScale::Batch),
            (Some(false), "none", RewardScale::None),
        ] {
            let spellings = flag.map(Value::Bool).into_iter().chain([json!(name)]);
            for spelling in spellings {
                let read: RewardScale = from_value(spelling.clone()).unwrap();
                assert_eq!(read, scale, "{spelling}");
                assert_eq!(to_value(read).unwrap(), json!(name));
            }
        }
        assert!(from_value::<RewardScale>(json!("sometimes")).is_err());
    }

    #[test]
    fn k3_is_zero_at_the_reference_and_positive_elsewhere() {
        assert_eq!(k3(-1.3, -1.3), 0.0);
        let mut rng = ChaCha8Rng::seed_from_u64(22);
        for _ in 0..100 {
            let (l, r) = (rng.random_range(-5.0..0.0), rng.random_range(-5.0..0.0));
            let want = (f64::from(r) - f64::from(l)).exp() - (f64::from(r) - f64::from(l)) - 1.0;
            assert!((f64::from(k3(l, r)) - want).abs() < 1e-4 * want.max(1.0));
            assert!(k3(l, r) >= 0.0);
        }
    }

    #[test]
    fn loss_weights_are_the_gradient_of_the_loss() {
        let mut rng = ChaCha8Rng::seed_from_u64(23);
        let n = 40;
        let old = random(&mut rng, n, 2.0);
        let logp = ppo::ratios_off_the_kinks(&mut rng, &old);
        let refp: Vec<f32> = old
            .iter()
            .map(|&o| o + rng.random_range(-0.7..0.7))
            .collect();
        let adv = random(&mut rng, n, 1.5);
        let l = loss(&logp, &old, &refp, &adv, 0.2, 0.3);
        let h = 1e-3;
        for i in 0..n {
            let (mut up, mut down) = (logp.clone(), logp.clone());
            up[i] += h;
            down[i] -= h;
            let g = (loss(&up, &old, &refp, &adv, 0.2, 0.3).loss
                - loss(&down, &old, &refp, &adv, 0.2, 0.3).loss)
                / (2.0 * h);
            // The model minimises sum(w * -logp): d loss / d logp = -w.
            assert!((g + l.weights[i]).abs() < 2e-3, "{i}: {g} {}", l.weights[i]);
        }
        assert!(l.clip_fraction > 0.0 && l.clip_fraction < 1.0);
        assert!(l.kl > 0.0);
        // Without the penalty it is PPO's surrogate.
        let plain = loss(&logp, &old, &refp, &adv, 0.2, 0.0);
        assert_eq!(
            plain.weights,
            ppo::surrogate(&logp, &old, &adv, 0.2).weights
        );
    }
}
