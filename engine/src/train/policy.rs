//! What every RL stage does with its policy, over one shared frozen base:
//! the actor (trainable adapter) and the reference (the SFT policy,
//! frozen), each an [`AdapterSet`] lent to the base for a call, so the base
//! weights are held once. PPO and GRPO sample [`Rollout`]s from it, read
//! the actor's and the reference's log-probabilities, and push their
//! per-token loss weights back through the actor. The reward model that
//! scores responses ([`Judge`]) lives here too: both methods can ask it.
//!
//! Every pass goes through in the memory preset's micro-batches, with the
//! same results whatever their size.

use std::ops::Range;

use crate::backend::{Backend, Sampling};
use crate::model::adapters::AdapterSet;
use crate::model::batch::Batch;
use crate::model::generate::{GenerateOptions, generate_per_prompt};
use crate::model::llama::{Llama, TrainPass};
use crate::model::param::Param;
use crate::model::reward::pooled_head;

/// The policy of an RL run: actor and reference over one base.
#[derive(Debug)]
pub struct Policy<B: Backend> {
    pub base: Llama<B>,
    pub actor: AdapterSet<B>,
    pub reference: AdapterSet<B>,
    /// Sequences per generation and per forward/backward pass (the memory
    /// preset's micro-batch).
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
    /// The actor's log-probabilities when it sampled.
    pub old_logp: Vec<f32>,
    /// The reference's log-probabilities.
    pub ref_logp: Vec<f32>,
    pub entropy: Vec<f32>,
}

impl Rollout {
    /// The rollout's sequences in micro-batches of `size`, each with the
    /// index of its first row in `batch`. A micro-batch keeps the whole
    /// batch's length, so its rows are the same rows.
    pub fn micro_batches(&self, size: usize) -> Vec<(Batch, usize)> {
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

    /// Mean entropy per response token and response tokens per sequence:
    /// the figures PPO and GRPO both log.
    pub fn entropy_and_length(&self) -> (f64, f64) {
        let n = self.rows.len();
        let entropy = self.entropy.iter().map(|&e| f64::from(e)).sum::<f64>() / n.max(1) as f64;
        (entropy, n as f64 / self.spans.len().max(1) as f64)
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
pub fn local_rows(rows: &[usize], first: usize, len: usize) -> Vec<u32> {
    rows.iter()
        .filter(|&&r| (first..first + len).contains(&r))
        .map(|&r| (r - first) as u32)
        .collect()
}

/// A one-row head `[1, d]` applied to rows `local` of `hidden` on the
/// device: the gathered rows `[n, d]` (for the head's backward) and the
/// `n` values, the only numbers that come back to the host.
pub fn head_values<B: Backend>(
    be: &B,
    hidden: &B::Buf,
    local: &[u32],
    head: &Param<B>,
) -> (B::Buf, Vec<f32>) {
    if local.is_empty() {
        return (be.zeros(0), Vec::new());
    }
    let (pooled, out) = pooled_head(be, hidden, local, head);
    (pooled, be.download(&out))
}

impl<B: Backend> Policy<B> {
    fn pad_id(&self) -> u32 {
        let cfg = &self.base.cfg;
        cfg.pad_token_id
            .or_else(|| cfg.eos_token_ids.first().copied())
            .unwrap_or(0)
    }

    /// Samples a response to each of `prompts` from the actor (a prompt
    /// may appear several times: each sequence has its own random stream)
    /// and reads the actor's and the reference's log-probabilities and the
    /// actor's entropy of every response token.
    pub fn rollout(&mut self, be: &B, prompts: &[Vec<u32>], opts: &RolloutOptions) -> Rollout {
        let gen_opts = GenerateOptions {
            max_new_tokens: opts.max_new_tokens,
            sampling: Sampling {
                temperature: opts.temperature,
                top_k: 0,
                top_p: 1.0,
            },
            seed: opts.seed,
            eos: self.base.cfg.eos_token_ids.clone(),
            pad_id: self.pad_id(),
        };
        // One random stream per sequence, so the micro-batch size never
        // changes what is sampled.
        let seeds: Vec<u64> = (0..prompts.len() as u64)
            .map(|i| opts.seed ^ (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        let size = self.micro_batch.max(1);
        let mut responses = Vec::with_capacity(prompts.len());
        for (chunk, seeds) in prompts.chunks(size).zip(seeds.chunks(size)) {
            responses.extend(self.actor.with(&mut self.base, |m| {
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
        };
        (rollout.old_logp, rollout.entropy) = self.logp(be, &rollout, true, true);
        rollout.ref_logp = self.logp(be, &rollout, false, false).0;
        rollout
    }

    /// The actor's log-probability of every response token.
    pub fn actor_logp(&mut self, be: &B, rollout: &Rollout) -> Vec<f32> {
        self.logp(be, rollout, true, false).0
    }

    /// Log-probabilities of every response token under the actor or the
    /// reference and, with `entropy`, the entropy there, a micro-batch at
    /// a time.
    fn logp(
        &mut self,
        be: &B,
        rollout: &Rollout,
        actor: bool,
        entropy: bool,
    ) -> (Vec<f32>, Vec<f32>) {
        let (mut logp, mut ent) = (Vec::new(), Vec::new());
        for (part, first) in rollout.micro_batches(self.micro_batch) {
            let local = local_rows(&rollout.rows, first, part.rows());
            let targets: Vec<u32> = local
                .iter()
                .map(|&r| rollout.targets[first + r as usize])
                .collect();
            let set = if actor {
                &mut self.actor
            } else {
                &mut self.reference
            };
            let (l, e) = set.with(&mut self.base, |m| {
                m.row_logp(be, &part, &local, &targets, entropy)
            });
            logp.extend(l);
            ent.extend(e);
        }
        (logp, ent)
    }

    /// The training pass of a backward: the step's seed, and checkpointing
    /// as the preset says.
    pub fn pass(&self, pass: TrainPass) -> TrainPass {
        TrainPass {
            checkpoint: self.activation_checkpointing,
            ..pass
        }
    }

    /// Accumulates the actor's gradient of a loss whose derivative in each
    /// response token's log-probability is `-weights[i]` (see
    /// [`super::ppo::Surrogate::weights`]), a micro-batch at a time.
    pub fn actor_backward(&mut self, be: &B, rollout: &Rollout, weights: &[f32], pass: TrainPass) {
        let w = rollout.row_weights(weights);
        let pass = self.pass(pass);
        for (part, first) in rollout.micro_batches(self.micro_batch) {
            let rows = first..first + part.rows();
            let (targets, w) = (&rollout.targets[rows.clone()], &w[rows]);
            self.actor.with(&mut self.base, |m| {
                m.loss_backward(be, &part, targets, w, pass);
            });
        }
    }
}

/// A frozen reward model: an adapter and a `score` head `[1, hidden]` over
/// the policy's base, or over its own when its weights differ.
#[derive(Debug)]
pub struct Judge<B: Backend> {
    /// The reward model's base when its weights differ from the policy's.
    pub own_base: Option<Llama<B>>,
    pub adapter: AdapterSet<B>,
    pub head: Param<B>,
}

impl<B: Backend> Judge<B> {
    /// The base the judge (and PPO's critic) runs on.
    pub fn base<'a>(&'a mut self, policy: &'a mut Llama<B>) -> &'a mut Llama<B> {
        self.own_base.as_mut().unwrap_or(policy)
    }

    /// The score of each sequence of a left-padded batch, pooled at its
    /// last position (always a real token), `micro_batch` sequences at a
    /// time, the head on the device.
    pub fn scores(
        &mut self,
        be: &B,
        policy: &mut Llama<B>,
        batch: &Batch,
        micro_batch: usize,
    ) -> Vec<f32> {
        let Judge {
            own_base,
            adapter,
            head,
        } = self;
        let model = own_base.as_mut().unwrap_or(policy);
        let size = micro_batch.max(1);
        let mut scores = Vec::with_capacity(batch.batch);
        for first in (0..batch.batch).step_by(size) {
            let part = batch.sequences(first..(first + size).min(batch.batch));
            let h = adapter.with(model, |m| m.forward(be, &part, None));
            let last: Vec<u32> = (0..part.batch)
                .map(|b| (b * part.seq + part.seq - 1) as u32)
                .collect();
            scores.extend(head_values(be, &h, &last, head).1);
        }
        scores
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::model::config::small_test_config;
    use crate::model::lora::{self, LoraConfig};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// `log_softmax(logits / temperature)` at `target`.
    fn logp_at(logits: &[f32], target: u32, temperature: f32) -> f32 {
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let sum: f32 = logits
            .iter()
            .map(|&x| ((x - max) / temperature).exp())
            .sum();
        (logits[target as usize] - max) / temperature - sum.ln()
    }

    /// Whatever the sampling temperature, a roll-out's log-probabilities
    /// are the untempered actor's and reference's (those the update, the
    /// ratio and the KL read, and the greedy player's), checked against
    /// full forwards of a model carrying the actor's adapter and of the
    /// bare base; and the micro-batch size changes nothing.
    #[test]
    fn rollout_logps_are_the_untempered_policies() {
        let be = Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(41);
        let mut base = Llama::random(&be, small_test_config(40), 5).unwrap();
        let cfg = LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout: 0.0,
            targets: vec!["q_proj".into(), "v_proj".into(), "up_proj".into()],
            rslora: false,
        };
        lora::attach_nonzero(&be, &mut base, &cfg, 6).unwrap();
        let reference = AdapterSet::bare(&base);
        let actor = AdapterSet::take(&mut base);
        let mut policy = Policy {
            base,
            actor,
            reference,
            micro_batch: 5,
            activation_checkpointing: false,
        };
        let prompts: Vec<Vec<u32>> = [3, 7, 5, 7, 2, 6]
            .iter()
            .map(|&len| (0..len).map(|_| rng.random_range(1..40)).collect())
            .collect();
        let temperature = 2.5;
        let opts = RolloutOptions {
            max_new_tokens: 5,
            temperature,
            seed: 17,
        };
        let rollout = policy.rollout(&be, &prompts, &opts);
        let vocab = policy.base.cfg.vocab_size;
        let mut tempered_gap = 0.0f32;
        for (actor, want) in [(true, &rollout.old_logp), (false, &rollout.ref_logp)] {
            let set = if actor {
                &mut policy.actor
            } else {
                &mut policy.reference
            };
            let logits = set.with(&mut policy.base, |m| m.logits(&be, &rollout.batch));
            for (i, &row) in rollout.rows.iter().enumerate() {
                let z = &logits[row * vocab..(row + 1) * vocab];
                let target = rollout.targets[row];
                let plain = logp_at(z, target, 1.0);
                assert!(
                    (want[i] - plain).abs() < 1e-4,
                    "token {i}: {} against {plain}",
                    want[i]
                );
                tempered_gap = tempered_gap.max((plain - logp_at(z, target, temperature)).abs());
            }
        }
        assert!(tempered_gap > 0.1, "the temperature changed nothing here");
        assert_ne!(rollout.old_logp, rollout.ref_logp);
        policy.micro_batch = 2;
        let again = policy.rollout(&be, &prompts, &opts);
        assert_eq!(again.responses, rollout.responses);
        assert_eq!(again.old_logp, rollout.old_logp);
        assert_eq!(again.ref_logp, rollout.ref_logp);
    }
}
