//! Training steps of a random-weight LLaMA on random tokens with the
//! backend's memory measured part by part: what `bench train` times and
//! what the memory planner's estimate is checked against.
//!
//! The parts are measured as differences of what the backend holds
//! ([`held_bytes`]: the counting allocator's figures on the CPU, the memory
//! pool's on a GPU) around the phase that creates them,
//! in the planner's categories: the base weights, the adapters, their
//! gradients, AdamW's state (created by the first update), and the step's
//! transient peak over what stays resident (activations, the backward's
//! working set and the cross-entropy's logits chunk together; the planner's
//! `activations + logits`).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::backend::{Backend, Dtype, cpu, held_bytes, held_peak, reset_held_peak};
use crate::model::error::Result;
use crate::model::llama::PROJECTIONS;
use crate::model::lora::{self, LoraConfig};
use crate::model::memory::{Task, Trains, Workload};
use crate::model::{Batch, Llama, LlamaConfig, TrainPass};
use crate::train::adamw::{AdamW, AdamWConfig};
use crate::train::clip::clip_grad_norm;

/// What one step trains and on how much data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepSetup {
    /// LoRA of this rank on all seven projections; `None` trains every weight.
    pub lora_rank: Option<usize>,
    pub batch: usize,
    pub seq: usize,
    /// Activation checkpointing.
    pub checkpoint: bool,
}

impl StepSetup {
    /// The planner's description of the same step, with frozen weights
    /// stored as `weights`, on the CUDA backend when `cuda` (its context,
    /// workspace and logits chunk), else on the CPU.
    pub fn workload<'a>(
        &self,
        config: &'a LlamaConfig,
        weights: Dtype,
        cuda: bool,
    ) -> Workload<'a> {
        Workload {
            config,
            task: Task::Sft,
            trains: self.lora_rank.map_or(Trains::Full, Trains::lora_all),
            micro_batch: self.batch,
            seq_len: self.seq,
            checkpointing: self.checkpoint,
            optimizer_offload: false,
            weights,
            cuda,
        }
    }
}

/// Measured bytes the backend holds, by the planner's categories.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MeasuredMemory {
    pub weights: u64,
    pub adapters: u64,
    pub gradients: u64,
    pub optimizer: u64,
    /// The largest rise over the resident bytes during one step.
    pub step_transient: u64,
    /// The most bytes held at once during the measured steps, counted from
    /// before the model was made.
    pub peak: u64,
}

/// A model, its optimizer and one fixed batch, ready to step.
#[derive(Debug)]
pub struct StepRunner<B: Backend> {
    model: Llama<B>,
    opt: AdamW<B>,
    batch: Batch,
    targets: Vec<u32>,
    weights: Vec<f32>,
    checkpoint: bool,
    /// Heap bytes before the model was made.
    base: u64,
    pub memory: MeasuredMemory,
}

impl<B: Backend> StepRunner<B> {
    /// Makes the model (random weights, seed 0) and the batch (random
    /// tokens, seed 1), measuring weights, adapters and gradients.
    pub fn new(be: &B, cfg: &LlamaConfig, setup: StepSetup) -> Result<Self> {
        cpu::warm_up();
        let base = held_bytes(be);
        let mut model = Llama::random(be, cfg.clone(), 0)?;
        let mut memory = MeasuredMemory {
            weights: held_bytes(be).saturating_sub(base),
            ..MeasuredMemory::default()
        };
        if let Some(rank) = setup.lora_rank {
            let before = held_bytes(be);
            let lc = LoraConfig {
                rank,
                alpha: 2.0 * rank as f32,
                dropout: 0.0,
                targets: PROJECTIONS.iter().map(|s| s.to_string()).collect(),
                rslora: false,
            };
            lora::attach(be, &mut model, &lc, 0)?;
            for p in model.params_mut() {
                p.set_trainable(be, false);
            }
            memory.adapters = held_bytes(be).saturating_sub(before);
        }
        let before = held_bytes(be);
        for p in model.params_mut() {
            let trains = setup.lora_rank.is_none() || p.name.contains(".lora_");
            p.set_trainable(be, trains);
        }
        memory.gradients = held_bytes(be).saturating_sub(before);
        let (b, t) = (setup.batch, setup.seq);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let ids: Vec<u32> = (0..b * t)
            .map(|_| rng.random_range(0..cfg.vocab_size as u32))
            .collect();
        let mut targets = vec![0; b * t];
        let mut weights = vec![0.0; b * t];
        for r in 0..b {
            for j in 0..t - 1 {
                targets[r * t + j] = ids[r * t + j + 1];
                weights[r * t + j] = 1.0 / (b * (t - 1)) as f32;
            }
        }
        Ok(StepRunner {
            model,
            opt: AdamW::new(AdamWConfig::default()),
            batch: Batch::dense(ids, b),
            targets,
            weights,
            checkpoint: setup.checkpoint,
            base,
            memory,
        })
    }

    /// One training step (zero, forward, backward, clip, AdamW); returns
    /// the loss. The first step also measures AdamW's state; every step
    /// updates the transient and the peak.
    pub fn step(&mut self, be: &B, seed: u64) -> f32 {
        self.model.begin_step(be);
        let resident = held_bytes(be);
        reset_held_peak(be);
        let pass = TrainPass {
            seed,
            checkpoint: self.checkpoint,
        };
        let loss = self
            .model
            .loss_backward(be, &self.batch, &self.targets, &self.weights, pass)
            .iter()
            .sum();
        self.model.end_step(be);
        let step_peak = held_peak(be);
        clip_grad_norm(be, &mut self.model.params_mut(), 1.0);
        let before_update = held_bytes(be);
        self.opt.update(be, self.model.params_mut(), 1e-4);
        let m = &mut self.memory;
        m.optimizer = m
            .optimizer
            .max(held_bytes(be).saturating_sub(before_update));
        m.step_transient = m.step_transient.max(step_peak.saturating_sub(resident));
        m.peak = m.peak.max(held_peak(be).saturating_sub(self.base));
        loss
    }
}
