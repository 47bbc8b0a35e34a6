//! Direct preference optimisation: the policy learns from preference pairs
//! without a reward model, by raising the log-probability of the chosen
//! answer relative to the rejected one, measured against a frozen
//! reference (the SFT policy it starts from).
//!
//! With `h = (log π(c) - log π(r)) - (log ref(c) - log ref(r))` over the
//! answer tokens of a pair:
//! - `sigmoid` (DPO, Rafailov et al. 2023): `-log σ(β h)`;
//! - `ipo` (Azar et al. 2023): `(h - 1/(2β))²`.
//!
//! The reference log-probabilities are computed once, before training, from
//! the starting model (TRL's `precompute_ref_log_probs`): no second model is
//! held, for full fine-tuning as for LoRA, and a resumed run recomputes the
//! same numbers from the same SFT model.
//!
//! A step runs the policy forward once without a tape for `h`, then once
//! more with [`Llama::loss_backward`], weighting each answer token's
//! `-log p` by `-dL/d log π` of its sequence, which gives exactly the DPO
//! gradient.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::dataset::{self, Example};
use super::lm_loop::{LoopError, MicroStats, Objective};
use crate::backend::Backend;
use crate::model::llama::TrainPass;
use crate::model::{Batch, Llama};

/// The preference loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DpoLoss {
    /// `-log σ(β h)`: DPO.
    #[default]
    Sigmoid,
    /// `(h - 1/(2β))²`: IPO, which does not push `h` to infinity on
    /// pairs it already ranks right.
    Ipo,
}

/// A pair's loss and its derivative in `h`.
pub fn pair_loss(loss: DpoLoss, beta: f64, h: f64) -> (f64, f64) {
    match loss {
        DpoLoss::Sigmoid => {
            let z = beta * h;
            // -log σ(z) = softplus(-z), written to stay finite for large |z|.
            let value = if z > 0.0 {
                (-z).exp().ln_1p()
            } else {
                -z + z.exp().ln_1p()
            };
            (value, -beta / (1.0 + z.exp()))
        }
        DpoLoss::Ipo => {
            let d = h - 1.0 / (2.0 * beta);
            (d * d, 2.0 * d)
        }
    }
}

/// The batch of a set of pairs: each pair's chosen then rejected answer,
/// pair after pair (so sums over the batch's sequences run in the same
/// order however the pairs are cut into micro-batches), with next-token
/// targets and weight 1 on answer tokens.
fn pair_batch(pairs: &[&[Example; 2]], pad: u32) -> (Batch, Vec<u32>, Vec<f32>) {
    let examples: Vec<&Example> = pairs.iter().flat_map(|p| [&p[0], &p[1]]).collect();
    dataset::sft_batch(&examples, pad, 1.0)
}

/// Each sequence's log-probability of its answer tokens.
fn sequence_logprobs<B: Backend>(
    be: &B,
    model: &Llama<B>,
    batch: &Batch,
    targets: &[u32],
    weights: &[f32],
    seed: Option<u64>,
) -> Vec<f64> {
    let nll = model.token_nll(be, batch, targets, weights, seed);
    nll.chunks(batch.seq)
        .map(|rows| -rows.iter().map(|&x| f64::from(x)).sum::<f64>())
        .collect()
}

/// The reference log-probabilities `[chosen, rejected]` of every pair under
/// `model` (the starting policy), `micro` pairs at a time.
pub fn reference_logprobs<B: Backend>(
    be: &B,
    model: &Llama<B>,
    pairs: &[[Example; 2]],
    pad: u32,
    micro: usize,
) -> Vec<[f64; 2]> {
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(micro.max(1)) {
        let refs: Vec<&[Example; 2]> = chunk.iter().collect();
        let (batch, targets, weights) = pair_batch(&refs, pad);
        let logp = sequence_logprobs(be, model, &batch, &targets, &weights, None);
        let n = chunk.len();
        out.extend((0..n).map(|i| [logp[2 * i], logp[2 * i + 1]]));
    }
    out
}

/// The DPO objective over a set of pairs with their reference figures.
pub struct DpoObjective {
    pub pairs: Vec<[Example; 2]>,
    /// `[chosen, rejected]` log-probabilities under the reference.
    pub reference: Vec<[f64; 2]>,
    pub beta: f64,
    pub loss: DpoLoss,
    pub pad: u32,
}

/// Per pair of a micro-batch: `h`, the loss and `dL/dh`.
struct Terms {
    h: Vec<f64>,
    loss: Vec<f64>,
    slope: Vec<f64>,
    chosen: Vec<f64>,
    rejected: Vec<f64>,
}

/// DPO's figures on held-out pairs: the mean loss, the share of pairs
/// ranked right (`h > 0`) and the mean reward margin `β h`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeldOut {
    pub pairs: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub margin: f64,
}

impl DpoObjective {
    /// The objective over `pairs` with `model`, the starting policy, as the
    /// reference.
    pub fn new<B: Backend>(
        be: &B,
        model: &Llama<B>,
        pairs: Vec<[Example; 2]>,
        beta: f64,
        loss: DpoLoss,
        pad: u32,
        micro: usize,
    ) -> Self {
        let reference = reference_logprobs(be, model, &pairs, pad, micro);
        DpoObjective {
            pairs,
            reference,
            beta,
            loss,
            pad,
        }
    }

    fn terms(&self, indices: &[usize], policy: &[f64]) -> Terms {
        let n = indices.len();
        let mut t = Terms {
            h: Vec::with_capacity(n),
            loss: Vec::with_capacity(n),
            slope: Vec::with_capacity(n),
            chosen: Vec::with_capacity(n),
            rejected: Vec::with_capacity(n),
        };
        for (k, &i) in indices.iter().enumerate() {
            let [ref_c, ref_r] = self.reference[i];
            let (c, r) = (policy[2 * k] - ref_c, policy[2 * k + 1] - ref_r);
            let h = c - r;
            let (loss, slope) = pair_loss(self.loss, self.beta, h);
            t.h.push(h);
            t.loss.push(loss);
            t.slope.push(slope);
            t.chosen.push(self.beta * c);
            t.rejected.push(self.beta * r);
        }
        t
    }

    /// The pairs `indices` through the policy without a tape: their batch
    /// (for a backward) and their terms.
    fn forward<B: Backend>(
        &self,
        be: &B,
        model: &Llama<B>,
        indices: &[usize],
        seed: Option<u64>,
    ) -> ((Batch, Vec<u32>, Vec<f32>), Terms) {
        let pairs: Vec<&[Example; 2]> = indices.iter().map(|&i| &self.pairs[i]).collect();
        let (batch, targets, weights) = pair_batch(&pairs, self.pad);
        let policy = sequence_logprobs(be, model, &batch, &targets, &weights, seed);
        let terms = self.terms(indices, &policy);
        ((batch, targets, weights), terms)
    }

    /// The loss of the pairs `indices` (their mean), forward only: what a
    /// training step's gradient is the gradient of, for checks.
    pub fn loss_of<B: Backend>(
        &self,
        be: &B,
        model: &Llama<B>,
        indices: &[usize],
        seed: Option<u64>,
    ) -> f64 {
        let (_, terms) = self.forward(be, model, indices, seed);
        terms.loss.iter().sum::<f64>() / indices.len().max(1) as f64
    }

    /// The held-out figures of every pair under `model`, `micro` at a time.
    pub fn evaluate<B: Backend>(&self, be: &B, model: &Llama<B>, micro: usize) -> HeldOut {
        let all: Vec<usize> = (0..self.pairs.len()).collect();
        let (mut loss, mut right, mut margin) = (0.0, 0usize, 0.0);
        for indices in all.chunks(micro.max(1)) {
            let (_, t) = self.forward(be, model, indices, None);
            loss += t.loss.iter().sum::<f64>();
            right += t.h.iter().filter(|&&h| h > 0.0).count();
            margin += t.h.iter().sum::<f64>() * self.beta;
        }
        let n = self.pairs.len().max(1) as f64;
        HeldOut {
            pairs: self.pairs.len(),
            loss: loss / n,
            accuracy: right as f64 / n,
            margin: margin / n,
        }
    }
}

impl<B: Backend> Objective<B> for DpoObjective {
    fn step_total(&self, indices: &[usize]) -> f64 {
        indices.len().max(1) as f64
    }

    fn accumulate(
        &mut self,
        be: &B,
        model: &mut Llama<B>,
        indices: &[usize],
        total: f64,
        pass: TrainPass,
    ) -> Result<MicroStats, LoopError> {
        let ((batch, targets, mut weights), t) = self.forward(be, model, indices, Some(pass.seed));
        // d L / d log π(c) = slope, d L / d log π(r) = -slope; the loss
        // backward computes the gradient of sum w (-log p), so an answer
        // token's weight is minus its sequence's derivative.
        for (row, w) in weights.iter_mut().enumerate() {
            let b = row / batch.seq;
            let (k, sign) = (b / 2, if b % 2 == 0 { 1.0 } else { -1.0 });
            *w *= (-sign * t.slope[k] / total) as f32;
        }
        model.loss_backward(be, &batch, &targets, &weights, pass);
        let share = |v: &[f64]| v.iter().map(|x| x / total).collect::<Vec<f64>>();
        let right: Vec<f64> = t.h.iter().map(|&h| f64::from(u8::from(h > 0.0))).collect();
        let margins: Vec<f64> = t
            .chosen
            .iter()
            .zip(&t.rejected)
            .map(|(c, r)| c - r)
            .collect();
        Ok(MicroStats {
            loss: share(&t.loss),
            tokens: batch.real_tokens(),
            figures: vec![
                ("accuracy", share(&right)),
                ("reward_chosen", share(&t.chosen)),
                ("reward_rejected", share(&t.rejected)),
                ("margin", share(&margins)),
            ],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The closed forms against central differences, both losses, over a
    /// range of `h` and `beta`.
    #[test]
    fn pair_loss_slopes_match_differences() {
        for loss in [DpoLoss::Sigmoid, DpoLoss::Ipo] {
            for beta in [0.05, 0.1, 0.5, 2.0] {
                for h in [-40.0, -3.0, -0.2, 0.0, 0.7, 5.0, 60.0] {
                    let (value, slope) = pair_loss(loss, beta, h);
                    assert!(value.is_finite() && value >= 0.0, "{loss:?} {beta} {h}");
                    let e = 1e-5;
                    let numeric = (pair_loss(loss, beta, h + e).0 - pair_loss(loss, beta, h - e).0)
                        / (2.0 * e);
                    assert!(
                        (numeric - slope).abs() <= 1e-6 * slope.abs().max(1.0),
                        "{loss:?} beta {beta} h {h}: {slope} vs {numeric}"
                    );
                }
            }
        }
        // DPO at h = 0 is log 2 whatever beta.
        assert!((pair_loss(DpoLoss::Sigmoid, 0.3, 0.0).0 - 2f64.ln()).abs() < 1e-12);
    }
}
