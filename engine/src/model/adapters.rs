//! Several LoRA adapters over one frozen base: each role of PPO (actor,
//! reference, critic, reward model) keeps its own [`AdapterSet`] and lends
//! it to the shared [`Llama`] for the duration of a call, so the base
//! weights are held once however many roles use them.

use crate::backend::Backend;

use super::linear::Lora;
use super::llama::Llama;
use super::param::Param;
use super::weights::HostTensor;

/// One optional adapter per projection of every block, in layer order and
/// [`super::llama::PROJECTIONS`] order within a layer. All `None` is the
/// bare base.
#[derive(Debug)]
pub struct AdapterSet<B: Backend> {
    slots: Vec<Option<Lora<B>>>,
}

impl<B: Backend> AdapterSet<B> {
    /// No adapter anywhere: the base model alone.
    pub fn bare(model: &Llama<B>) -> Self {
        AdapterSet {
            slots: (0..model.layers.len() * 7).map(|_| None).collect(),
        }
    }

    /// Takes the adapters off `model` (leaving it bare) into a set.
    pub fn take(model: &mut Llama<B>) -> Self {
        let mut set = AdapterSet::bare(model);
        set.exchange(model);
        set
    }

    /// Swaps the adapters on the model with the ones in this set.
    fn exchange(&mut self, model: &mut Llama<B>) {
        let lins = model
            .layers
            .iter_mut()
            .flat_map(|layer| layer.projections_mut().map(|(_, lin)| lin));
        for (slot, lin) in self.slots.iter_mut().zip(lins) {
            std::mem::swap(slot, &mut lin.lora);
        }
    }

    /// Runs `f` on the model carrying this set, then takes the set back
    /// (with whatever `f` did to its parameters and gradients). The
    /// model's own adapters are restored afterwards.
    pub fn with<R>(&mut self, model: &mut Llama<B>, f: impl FnOnce(&mut Llama<B>) -> R) -> R {
        self.exchange(model);
        let out = f(model);
        self.exchange(model);
        out
    }

    /// An independent copy of the values; trainable (f32, zero gradients)
    /// or frozen (stored as the backend's weight dtype) as asked.
    pub fn deep_copy(&self, be: &B, trainable: bool) -> Self {
        let copy = |p: &Param<B>| {
            let host = HostTensor::new(p.shape.clone(), be.download(&p.value));
            let mut q = if trainable {
                Param::new(be, p.name.clone(), &host)
            } else {
                Param::frozen(be, p.name.clone(), &host)
            };
            q.set_trainable(be, trainable);
            q
        };
        let slots = self
            .slots
            .iter()
            .map(|slot| {
                slot.as_ref().map(|l| Lora {
                    a: copy(&l.a),
                    b: copy(&l.b),
                    rank: l.rank,
                    scale: l.scale,
                    dropout: l.dropout,
                    merged: l.merged,
                })
            })
            .collect();
        AdapterSet { slots }
    }

    /// The same adapters, frozen: stored as the backend's weight dtype (a
    /// bf16 product reads them rounded either way), without gradients.
    pub fn frozen(mut self, be: &B) -> Self {
        for p in self.params_mut() {
            p.store_as(be, be.weight_dtype());
            p.grad = None;
        }
        self
    }

    /// The same adapters with LoRA dropout off: PPO compares the actor's
    /// probabilities across passes, which dropout would make noisy.
    pub fn without_dropout(mut self) -> Self {
        for l in self.slots.iter_mut().flatten() {
            l.dropout = 0.0;
        }
        self
    }

    /// Every LoRA matrix of the set, A before B, in slot order.
    pub fn params(&self) -> impl Iterator<Item = &Param<B>> {
        self.slots.iter().flatten().flat_map(|l| [&l.a, &l.b])
    }

    pub fn params_mut(&mut self) -> impl Iterator<Item = &mut Param<B>> {
        self.slots
            .iter_mut()
            .flatten()
            .flat_map(|l| [&mut l.a, &mut l.b])
    }

    /// Whether any projection carries an adapter.
    pub fn is_bare(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::model::batch::Batch;
    use crate::model::config::small_test_config;
    use crate::model::lora::{self, LoraConfig};

    /// Two adapter sets on one base give exactly the logits of two models
    /// each carrying its own adapter, and lending a set leaves the model
    /// as it was.
    #[test]
    fn lent_sets_reproduce_separate_models() {
        let be = Cpu;
        let cfg = LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout: 0.0,
            targets: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
            rslora: false,
        };
        let batch = Batch::dense(vec![1, 5, 9, 3, 7, 2, 30, 11], 2);
        let mut sets = Vec::new();
        let mut want = Vec::new();
        for seed in [1, 2] {
            let mut m = Llama::random(&be, small_test_config(32), 3).unwrap();
            lora::attach_nonzero(&be, &mut m, &cfg, seed).unwrap();
            want.push(m.logits(&be, &batch));
            sets.push(AdapterSet::take(&mut m));
        }
        let mut shared = Llama::random(&be, small_test_config(32), 3).unwrap();
        let bare = shared.logits(&be, &batch);
        for (set, want) in sets.iter_mut().zip(&want) {
            let got = set.with(&mut shared, |m| m.logits(&be, &batch));
            assert_eq!(&got, want);
            assert_ne!(&got, &bare);
        }
        assert_eq!(shared.logits(&be, &batch), bare);
        let copy = sets[0].deep_copy(&be, true);
        assert!(copy.params().all(|p| p.grad.is_some()));
        assert_eq!(copy.params().count(), 2 * 2 * 3);
    }
}
