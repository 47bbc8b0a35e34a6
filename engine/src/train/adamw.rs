//! AdamW over model parameters, with per-parameter moment buffers on the
//! device, or in host memory when offloaded (DeepSpeed's ZeRO-Offload: the
//! device then holds no optimizer state, and each update moves a
//! parameter and its gradient to the host and the new value back). The
//! arithmetic is the backend's fused `adamw` op (torch's formula), on the
//! CPU backend when offloaded; this file keeps the state and the step
//! count.

use std::collections::BTreeMap;

use crate::backend::{AdamWStep, Backend, Cpu};
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
    /// Keep the moments in host memory instead (see the module docs).
    offload: bool,
    /// The moments of an offloaded optimizer.
    host_moments: BTreeMap<String, Moments<Cpu>>,
}

impl<B: Backend> AdamW<B> {
    pub fn new(cfg: AdamWConfig) -> Self {
        AdamW {
            cfg,
            step: 0,
            moments: BTreeMap::new(),
            offload: false,
            host_moments: BTreeMap::new(),
        }
    }

    /// An optimizer whose moments live in host memory.
    pub fn offloaded(cfg: AdamWConfig) -> Self {
        AdamW {
            offload: true,
            ..AdamW::new(cfg)
        }
    }

    /// The moments (m, v) of parameter `name` on the host, wherever they
    /// live; `None` before its first update. For checkpoints.
    pub fn moments_of(&self, be: &B, name: &str) -> Option<(Vec<f32>, Vec<f32>)> {
        match self.host_moments.get(name) {
            Some(state) => Some((state.m.clone(), state.v.clone())),
            None => self
                .moments
                .get(name)
                .map(|state| (be.download(&state.m), be.download(&state.v))),
        }
    }

    /// Sets the moments of parameter `name` (a restored checkpoint), where
    /// this optimizer keeps them.
    pub fn set_moments(&mut self, be: &B, name: &str, m: Vec<f32>, v: Vec<f32>) {
        if self.offload {
            self.host_moments.insert(name.to_string(), Moments { m, v });
        } else {
            self.moments.insert(
                name.to_string(),
                Moments {
                    m: be.upload(&m),
                    v: be.upload(&v),
                },
            );
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
            if self.offload {
                let state = self
                    .host_moments
                    .entry(p.name.clone())
                    .or_insert_with(|| Moments {
                        m: vec![0.0; n],
                        v: vec![0.0; n],
                    });
                let mut value = be.download(&p.value);
                Cpu.adamw(
                    &mut value,
                    &be.download(grad),
                    &mut state.m,
                    &mut state.v,
                    h,
                );
                p.value = be.upload(&value);
                continue;
            }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::weights::HostTensor;
    use rand::{Rng, SeedableRng};

    /// Offloaded moments give the same parameters and the same moments as
    /// moments on the device, over several steps of random gradients, and
    /// restore through `set_moments` to the same next step.
    #[test]
    fn offloaded_adamw_matches_the_device_one() {
        let be = Cpu;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
        let init: Vec<f32> = (0..300).map(|_| rng.random_range(-1.0..1.0)).collect();
        let param = || {
            let mut p = Param::new(&be, "w", &HostTensor::new(vec![3, 100], init.clone()));
            p.set_trainable(&be, true);
            p
        };
        let (mut a, mut b) = (param(), param());
        let cfg = AdamWConfig::default();
        let (mut on_device, mut offloaded) = (AdamW::new(cfg), AdamW::offloaded(cfg));
        for _ in 0..4 {
            let g: Vec<f32> = (0..300).map(|_| rng.random_range(-2.0..2.0)).collect();
            a.grad = Some(g.clone());
            b.grad = Some(g);
            on_device.update(&be, [&mut a], 1e-2);
            offloaded.update(&be, [&mut b], 1e-2);
        }
        assert!(on_device.moments.contains_key("w") && offloaded.moments.is_empty());
        assert_ne!(a.value, init);
        for (x, y) in a.value.iter().zip(&b.value) {
            assert!((x - y).abs() <= 1e-7, "{x} vs {y}");
        }
        let (m, v) = offloaded.moments_of(&be, "w").unwrap();
        assert_eq!(
            on_device.moments_of(&be, "w").unwrap(),
            (m.clone(), v.clone())
        );
        let mut restored = AdamW::offloaded(cfg);
        restored.step = offloaded.step;
        restored.set_moments(&be, "w", m, v);
        let mut c = param();
        c.value = b.value.clone();
        let g: Vec<f32> = (0..300).map(|_| rng.random_range(-2.0..2.0)).collect();
        (b.grad, c.grad) = (Some(g.clone()), Some(g));
        offloaded.update(&be, [&mut b], 1e-2);
        restored.update(&be, [&mut c], 1e-2);
        assert_eq!(b.value, c.value);
    }
}
