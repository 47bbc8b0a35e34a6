//! AdamW over model parameters, with per-parameter moment buffers on the
//! device. The arithmetic is the backend's fused `adamw` op (torch's
//! formula); this file keeps the state and the step count.

use std::collections::BTreeMap;

use crate::backend::{AdamWStep, Backend};
use crate::model::param::Param;

/// Hyper-parameters that do not change during a run (the learning rate
/// comes from the schedule at each step).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    /// torch.optim.AdamW's defaults.
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// First and second moments of one parameter.
#[derive(Debug)]
pub struct Moments<B: Backend> {
    pub m: B::Buf,
    pub v: B::Buf,
}

#[derive(Debug)]
pub struct AdamW<B: Backend> {
    pub cfg: AdamWConfig,
    /// Steps taken so far (bias correction uses `step + 1` next).
    pub step: u32,
    /// Moments by parameter name; created at a parameter's first update,
    /// exposed for checkpoints.
    pub moments: BTreeMap<String, Moments<B>>,
}

impl<B: Backend> AdamW<B> {
    pub fn new(cfg: AdamWConfig) -> Self {
        AdamW {
            cfg,
            step: 0,
            moments: BTreeMap::new(),
        }
    }

    /// Updates every parameter that has a gradient, with learning rate `lr`.
    /// Gradients are left as they are (the caller zeroes them).
    pub fn update<'a>(
        &mut self,
        be: &B,
        params: impl IntoIterator<Item = &'a mut Param<B>>,
        lr: f32,
    ) where
        B: 'a,
    {
        self.step += 1;
        let h = AdamWStep {
            lr,
            beta1: self.cfg.beta1,
            beta2: self.cfg.beta2,
            eps: self.cfg.eps,
            weight_decay: self.cfg.weight_decay,
            step: self.step,
        };
        for p in params {
            let Some(grad) = p.grad.as_ref() else {
                continue;
            };
            let n = p.numel();
            let state = self
                .moments
                .entry(p.name.clone())
                .or_insert_with(|| Moments {
                    m: be.zeros(n),
                    v: be.zeros(n),
                });
            be.adamw(&mut p.value, grad, &mut state.m, &mut state.v, h);
        }
    }
}
