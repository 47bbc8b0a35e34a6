//! The four models of PPO over shared frozen bases: the actor (trainable
//! adapter) and the reference (the SFT policy, frozen) on the policy base;
//! the critic (trainable adapter and value head, initialised from the
//! reward model) and the reward model (frozen adapter and `score` head) on
//! the reward model's base, which is the policy base itself whenever the
//! weights are the same. Each role is an [`AdapterSet`] lent to its base for
//! a call, so the base weights are held once.
//!
//! A [`Rollout`] is one batch of prompts with their sampled responses, and
//! everything PPO needs per response token.

use std::ops::Range;

use crate::backend::{Backend, Gemm, Sampling};
use crate::model::adapters::AdapterSet;
use crate::model::batch::Batch;
use crate::model::generate::{GenerateOptions, generate_per_prompt};
use crate::model::llama::{Llama, TrainPass};
use crate::model::param::Param;

/// The models of a PPO run.
#[derive(Debug)]
pub struct Roles<B: Backend> {
    /// The policy base: actor and reference, and critic and reward model
    /// when `value_base` is `None`.
    pub policy: Llama<B>,
    /// The reward model's base when its weights differ from the policy's.
    pub value_base: Option<Llama<B>>,
    pub actor: AdapterSet<B>,
    pub reference: AdapterSet<B>,
    pub critic: AdapterSet<B>,
    pub reward: AdapterSet<B>,
    /// The critic's head `[1, hidden]`: a value per token.
    pub value_head: Param<B>,
    /// The reward model's `score` head `[1, hidden]`, frozen.
    pub reward_head: Param<B>,
    /// Sequences per generation and per forward/backward pass (the memory
    /// preset's micro-batch): the roll-out batch goes through in pieces
    /// this size, with the same results whatever the size.
    pub micro_batch: usize,
    /// Recompute activations in the backward passes (the preset's).
    pub activation_checkpointing: bool,
}

/// Sampled responses and their per-token quantities. Token quantities are
/// flat over the batch: response `i` owns `spans[i]`.
#[derive(Clone, Debug)]
pub struct Rollout {
    /// Prompt + response of every sequence, left-padded.
    pub batch: Batch,
    /// For every row of `batch`, the token after it (0 where unused).
    pub targets: Vec<u32>,
    /// The row whose logits predict each response token.
    pub rows: Vec<usize>,
    pub spans: Vec<Range<usize>>,
    pub responses: Vec<Vec<u32>>,
    pub old_logp: Vec<f32>,
    pub ref_logp: Vec<f32>,
    pub entropy: Vec<f32>,
    pub values: Vec<f32>,
    /// Reward model score of each sequence.
    pub scores: Vec<f32>,
}

impl Rollout {
    /// The rollout's sequences in micro-batches of `size`, each with the
    /// index of its first row in `batch`. A micro-batch keeps the whole
    /// batch's length, so its rows are the same rows.
    fn micro_batches(&self, size: usize) -> Vec<(Batch, usize)> {
        let n = self.batch.batch;
        (0..n)
            .step_by(size.max(1))
            .map(|first| {
                let end = (first + size.max(1)).min(n);
                (self.batch.sequences(first..end), first * self.batch.seq)
            })
            .collect()
    }

    /// Row weights that are `w[i]` on response token `i`'s row and 0
    /// elsewhere: the weights of [`Llama::loss_backward`].
    pub fn row_weights(&self, w: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; self.batch.rows()];
        for (&row, &v) in self.rows.iter().zip(w) {
            out[row] = v;
        }
        out
    }
}

/// What sampling a rollout uses.
#[derive(Clone, Debug)]
pub struct RolloutOptions {
    pub max_new_tokens: usize,
    pub temperature: f32,
    pub seed: u64,
}

/// The rows of `rows` (ascending, of the whole batch) that fall in the
/// micro-batch of `len` rows starting at row `first`, as its own row
/// indices.
fn local_rows(rows: &[usize], first: usize, len: usize) -> Vec<u32> {
    rows.iter()
        .filter(|&&r| (first..first + len).contains(&r))
        .map(|&r| (r - first) as u32)
        .collect()
}

/// A one-row head `[1, d]` applied to rows `local` of `hidden` on the
/// device: the gathered rows `[n, d]` (for the head's backward) and the
/// `n` values, the only numbers that come back to the host.
fn head_values<B: Backend>(
    be: &B,
    hidden: &B::Buf,
    local: &[u32],
    head: &B::Buf,
    d: usize,
) -> (B::Buf, Vec<f32>) {
    let pooled = be.gather_rows(hidden, local, d);
    if local.is_empty() {
        return (pooled, Vec::new());
    }
    let mut out = be.zeros(local.len());
    be.matmul(&pooled, head, &mut out, Gemm::linear(local.len(), 1, d));
    (pooled, be.download(&out))
}

impl<B: Backend> Roles<B> {
    fn pad_id(&self) -> u32 {
        let cfg = &self.policy.cfg;
        cfg.pad_token_id
            .or_else(|| cfg.eos_token_ids.first().copied())
            .unwrap_or(0)
    }

    /// Samples responses to `prompts` from the actor and scores them with
    /// every role.
    pub fn rollout(&mut self, be: &B, prompts: &[Vec<u32>], opts: &RolloutOptions) -> Rollout {
        let gen_opts = GenerateOptions {
            max_new_tokens: opts.max_new_tokens,
            sampling: Sampling {
                temperature: opts.temperature,
                top_k: 0,
                top_p: 1.0,
            },
            seed: opts.seed,
            eos: self.policy.cfg.eos_token_ids.clone(),
            pad_id: self.pad_id(),
        };
        // One random stream per prompt, so the micro-batch size never
        // changes what is sampled.
        let seeds: Vec<u64> = (0..prompts.len() as u64)
            .map(|i| opts.seed ^ (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        let size = self.micro_batch.max(1);
        let mut responses = Vec::with_capacity(prompts.len());
        for (chunk, seeds) in prompts.chunks(size).zip(seeds.chunks(size)) {
            responses.extend(self.actor.with(&mut self.policy, |m| {
                generate_per_prompt(be, m, chunk, &gen_opts, seeds)
            }));
        }
        let seqs: Vec<Vec<u32>> = prompts
            .iter()
            .zip(&responses)
            .map(|(p, r)| [p.as_slice(), r.as_slice()].concat())
            .collect();
        let batch = Batch::left_padded(&seqs, self.pad_id());
        let mut targets = vec![0u32; batch.rows()];
        let (mut rows, mut spans) = (Vec::new(), Vec::new());
        for (b, (p, r)) in prompts.iter().zip(&responses).enumerate() {
            let start = b * batch.seq + batch.pad[b] as usize + p.len();
            let first = rows.len();
            for (j, &t) in r.iter().enumerate() {
                let row = start + j - 1;
                targets[row] = t;
                rows.push(row);
            }
            spans.push(first..rows.len());
        }
        let mut rollout = Rollout {
            batch,
            targets,
            rows,
            spans,
            responses,
            old_logp: Vec::new(),
            ref_logp: Vec::new(),
            entropy: Vec::new(),
            values: Vec::new(),
            scores: Vec::new(),
        };
        rollout.old_logp = self.actor_logp(be, &rollout);
        rollout.ref_logp = self.policy_logp(be, &rollout, false);
        rollout.entropy = {
            let mut entropy = Vec::with_capacity(rollout.batch.rows());
            for (part, _) in rollout.micro_batches(self.micro_batch) {
                entropy.extend(self.actor.with(&mut self.policy, |m| m.entropy(be, &part)));
            }
            rollout.rows.iter().map(|&r| entropy[r]).collect()
        };
        rollout.values = self.values(be, &rollout);
        rollout.scores = self.scores(be, &rollout.batch);
        rollout
    }

    /// The actor's log-probability of every response token.
    pub fn actor_logp(&mut self, be: &B, rollout: &Rollout) -> Vec<f32> {
        self.policy_logp(be, rollout, true)
    }

    /// Log-probabilities of every response token under the actor or the
    /// reference, a micro-batch at a time.
    fn policy_logp(&mut self, be: &B, rollout: &Rollout, actor: bool) -> Vec<f32> {
        let ones = rollout.row_weights(&vec![1.0; rollout.rows.len()]);
        let mut nll = Vec::with_capacity(rollout.batch.rows());
        for (part, first) in rollout.micro_batches(self.micro_batch) {
            let rows = first..first + part.rows();
            let (targets, weights) = (&rollout.targets[rows.clone()], &ones[rows]);
            let set = if actor {
                &mut self.actor
            } else {
                &mut self.reference
            };
            nll.extend(set.with(&mut self.policy, |m| {
                m.token_nll(be, &part, targets, weights, None)
            }));
        }
        rollout.rows.iter().map(|&r| -nll[r]).collect()
    }

    /// The critic's value at every response token's predicting row. The
    /// head runs on the device; only the values come back.
    pub fn values(&mut self, be: &B, rollout: &Rollout) -> Vec<f32> {
        let d = self.policy.cfg.hidden_size;
        let model = self.value_base.as_mut().unwrap_or(&mut self.policy);
        let mut values = Vec::with_capacity(rollout.rows.len());
        for (part, first) in rollout.micro_batches(self.micro_batch) {
            let local = local_rows(&rollout.rows, first, part.rows());
            let hidden = self.critic.with(model, |m| m.forward(be, &part, None));
            values.extend(head_values(be, &hidden, &local, &self.value_head.value, d).1);
        }
        values
    }

    /// The reward model's score of each sequence of a left-padded batch,
    /// pooled at its last position (always a real token), a micro-batch at
    /// a time, the head on the device.
    pub fn scores(&mut self, be: &B, batch: &Batch) -> Vec<f32> {
        let d = self.policy.cfg.hidden_size;
        let model = self.value_base.as_mut().unwrap_or(&mut self.policy);
        let size = self.micro_batch.max(1);
        let mut scores = Vec::with_capacity(batch.batch);
        for first in (0..batch.batch).step_by(size) {
            let part = batch.sequences(first..(first + size).min(batch.batch));
            let h = self.reward.with(model, |m| m.forward(be, &part, None));
            let last: Vec<u32> = (0..part.batch)
                .map(|b| (b * part.seq + part.seq - 1) as u32)
                .collect();
            scores.extend(head_values(be, &h, &last, &self.reward_head.value, d).1);
        }
        scores
    }

    /// The training pass of a backward: the step's seed, and checkpointing
    /// as the preset says.
    fn pass(&self, pass: TrainPass) -> TrainPass {
        TrainPass {
            checkpoint: self.activation_checkpointing,
            ..pass
        }
    }

    /// Accumulates the actor's gradient of the clipped surrogate, given its
    /// per-token weights (see [`super::ppo::Surrogate::weights`]), a
    /// micro-batch at a time.
    pub fn actor_backward(&mut self, be: &B, rollout: &Rollout, weights: &[f32], pass: TrainPass) {
        let w = rollout.row_weights(weights);
        let pass = self.pass(pass);
        for (part, first) in rollout.micro_batches(self.micro_batch) {
            let rows = first..first + part.rows();
            let (targets, w) = (&rollout.targets[rows.clone()], &w[rows]);
            self.actor.with(&mut self.policy, |m| {
                m.loss_backward(be, &part, targets, w, pass);
            });
        }
    }

    /// Forward and backward of the critic: `grad(values)` comes from the
    /// value loss of the values this returns, so the caller passes a
    /// closure that turns values into their gradient and a loss. With
    /// several micro-batches the values are computed first (the loss needs
    /// them all), then each micro-batch runs forward and backward again.
    pub fn critic_backward(
        &mut self,
        be: &B,
        rollout: &Rollout,
        pass: TrainPass,
        loss: impl FnOnce(&[f32]) -> (f32, Vec<f32>),
    ) -> f32 {
        let d = self.policy.cfg.hidden_size;
        let pass = self.pass(pass);
        let parts = rollout.micro_batches(self.micro_batch);
        let mut loss = Some(loss);
        let mut result = None;
        if parts.len() > 1
            && let Some(loss) = loss.take()
        {
            result = Some(loss(&self.values(be, rollout)));
        }
        let model = self.value_base.as_mut().unwrap_or(&mut self.policy);
        let value_head = &mut self.value_head;
        // Index into `rollout.rows` (ascending) of the micro-batch's first
        // response row.
        let mut seen = 0;
        for (part, first) in parts {
            let local = local_rows(&rollout.rows, first, part.rows());
            self.critic.with(model, |m| {
                let (h, tape) = m.forward_train(be, &part, pass);
                let (pooled, values) = head_values(be, &h, &local, &value_head.value, d);
                if let Some(loss) = loss.take() {
                    result = Some(loss(&values));
                }
                let grad = result.as_ref().map_or(&[][..], |(_, g)| g.as_slice());
                let mut dh = be.zeros(part.rows() * d);
                if let Some(g) = grad.get(seen..seen + local.len())
                    && !local.is_empty()
                {
                    // d(values) -> d(hidden) of those rows and d(head).
                    let dv = be.upload(g);
                    let mut dpooled = be.zeros(local.len() * d);
                    be.matmul(
                        &dv,
                        &value_head.value,
                        &mut dpooled,
                        Gemm::plain(local.len(), d, 1),
                    );
                    if let Some(dw) = value_head.grad.as_mut() {
                        be.matmul(&dv, &pooled, dw, Gemm::weight_grad(1, d, local.len()));
                    }
                    be.scatter_add_rows(&dpooled, &local, d, &mut dh);
                }
                m.backward_from_hidden(be, &part, tape, &dh);
            });
            seen += local.len();
        }
        result.map_or(0.0, |(value, _)| value)
    }
}
