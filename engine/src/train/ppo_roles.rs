//! The four models of PPO over shared frozen bases: the actor and the
//! reference ([`Policy`]), the reward model ([`Judge`]) and the critic
//! (trainable adapter and value head, initialised from the reward model)
//! on the reward model's base, which is the policy base itself whenever
//! the weights are the same. GRPO needs no critic and uses [`Policy`] and
//! [`Judge`] alone.

use super::policy::{Judge, Policy, Rollout, head_values, local_rows};
use crate::backend::Backend;
use crate::model::adapters::AdapterSet;
use crate::model::batch::Batch;
use crate::model::llama::TrainPass;
use crate::model::param::Param;
use crate::model::reward::pooled_head_backward;

/// The models of a PPO run.
#[derive(Debug)]
pub struct Roles<B: Backend> {
    pub policy: Policy<B>,
    pub judge: Judge<B>,
    pub critic: AdapterSet<B>,
    /// The critic's head `[1, hidden]`: a value per token.
    pub value_head: Param<B>,
}

impl<B: Backend> Roles<B> {
    /// The reward model's score of each sequence of a left-padded batch.
    pub fn scores(&mut self, be: &B, batch: &Batch) -> Vec<f32> {
        let micro = self.policy.micro_batch;
        self.judge.scores(be, &mut self.policy.base, batch, micro)
    }

    /// The critic's value at every response token's predicting row. The
    /// head runs on the device; only the values come back.
    pub fn values(&mut self, be: &B, rollout: &Rollout) -> Vec<f32> {
        let model = self.judge.base(&mut self.policy.base);
        let mut values = Vec::with_capacity(rollout.rows.len());
        for (part, first) in rollout.micro_batches(self.policy.micro_batch) {
            let local = local_rows(&rollout.rows, first, part.rows());
            let hidden = self.critic.with(model, |m| m.forward(be, &part, None));
            values.extend(head_values(be, &hidden, &local, &self.value_head).1);
        }
        values
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
        let d = self.policy.base.cfg.hidden_size;
        let pass = self.policy.pass(pass);
        let parts = rollout.micro_batches(self.policy.micro_batch);
        let mut loss = Some(loss);
        let mut result = None;
        if parts.len() > 1
            && let Some(loss) = loss.take()
        {
            result = Some(loss(&self.values(be, rollout)));
        }
        let model = self.judge.base(&mut self.policy.base);
        let value_head = &mut self.value_head;
        // Index into `rollout.rows` (ascending) of the micro-batch's first
        // response row.
        let mut seen = 0;
        for (part, first) in parts {
            let local = local_rows(&rollout.rows, first, part.rows());
            self.critic.with(model, |m| {
                let (h, tape) = m.forward_train(be, &part, pass);
                let (pooled, values) = head_values(be, &h, &local, value_head);
                if let Some(loss) = loss.take() {
                    result = Some(loss(&values));
                }
                let grad = result.as_ref().map_or(&[][..], |(_, g)| g.as_slice());
                let dh = match grad.get(seen..seen + local.len()) {
                    Some(g) if !local.is_empty() => {
                        pooled_head_backward(be, value_head, &pooled, &local, g, part.rows())
                    }
                    _ => be.zeros(part.rows() * d),
                };
                m.backward_from_hidden(be, &part, tape, &dh);
            });
            seen += local.len();
        }
        result.map_or(0.0, |(value, _)| value)
    }
}
