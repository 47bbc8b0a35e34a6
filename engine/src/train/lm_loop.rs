//! The training loop every model-training stage shares: seeded data order
//! in global batches, micro-batches with gradient accumulation, the NaN
//! guard, clipping, AdamW on a schedule, metrics, progress, checkpoints and
//! resume, and Ctrl-C. What is learned is an [`Objective`]: it turns a
//! micro-batch of example indices into gradients.
//!
//! Resume is exact: a checkpoint holds every trainable tensor, the AdamW
//! moments and step, the schedule and the data cursor; dropout masks are a
//! function of (seed, step, sequence, position), so a resumed run repeats
//! the uninterrupted one bit for bit on the CPU. So does a run with other
//! micro-batches: on the CPU every sum over a step's rows is taken one
//! sequence at a time (see [`crate::backend::Backend::weight_grad`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use miette::Diagnostic;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::adamw::{AdamW, AdamWConfig};
use super::checkpoint::{self, Checkpoint, CheckpointError, TensorData, TrainState};
use super::clip::{clip_grad_norm, global_grad_norm};
use super::data_order::{Cursor, DataOrder, DataOrderError};
use super::guard::{LossGuard, NonFinite};
use super::metrics::{MetricsError, MetricsLog};
use super::progress::{ProgressMode, TrainProgress};
use super::schedule::{Schedule, ScheduleKind};
use crate::backend::Backend;
use crate::model::Llama;
use crate::model::llama::TrainPass;

/// Optimizer settings of a stage (`optim:` in pipeline files).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OptimParams {
    /// Peak learning rate; the stage's default when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub lr: Option<f64>,
    /// How the rate moves after warmup.
    #[serde(default = "OptimParams::schedule")]
    pub schedule: ScheduleKind,
    /// Optimizer steps of linear warmup from 0.
    #[serde(default)]
    pub warmup_steps: u64,
    /// Clip gradients to this global L2 norm (null: no clipping).
    #[serde(default = "OptimParams::max_grad_norm")]
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub max_grad_norm: Option<f64>,
    /// AdamW's decoupled weight decay.
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub weight_decay: f64,
}

impl OptimParams {
    fn schedule() -> ScheduleKind {
        ScheduleKind::Cosine
    }
    fn max_grad_norm() -> Option<f64> {
        Some(1.0)
    }
}

impl Default for OptimParams {
    fn default() -> Self {
        OptimParams {
            lr: None,
            schedule: Self::schedule(),
            warmup_steps: 0,
            max_grad_norm: Self::max_grad_norm(),
            weight_decay: 0.0,
        }
    }
}

/// Everything the loop needs besides the model and the objective.
#[derive(Clone, Debug)]
pub struct LoopSettings {
    /// The stage name, for messages.
    pub stage: String,
    pub examples: usize,
    pub epochs: u64,
    /// Examples per optimizer step (the global batch).
    pub batch_size: usize,
    /// Examples per forward/backward (from the memory preset).
    pub micro_batch: usize,
    pub seed: u64,
    pub lr: f64,
    pub optim: OptimParams,
    /// Write a checkpoint every this many optimizer steps (and at the end).
    pub checkpoint_every: u64,
    pub activation_checkpointing: bool,
    /// AdamW's state in host memory (the preset's `offload_optimizer`).
    pub offload_optimizer: bool,
    /// Where checkpoints, metrics.jsonl and the step log live.
    pub work_dir: PathBuf,
    pub progress: ProgressMode,
}

/// What one micro-batch contributed, example by example: the loop adds the
/// examples' shares one at a time, in order, so that a step's figures (like
/// its gradients) have the same bits however it is cut into micro-batches.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MicroStats {
    /// Each example's share of the step's loss (its loss divided by the
    /// step's total).
    pub loss: Vec<f64>,
    /// Tokens processed, for tokens/s.
    pub tokens: u64,
    /// Each example's share of the objective's own figures (the reward
    /// model's `accuracy`, DPO's rewards and margins), divided by the step's
    /// total like `loss`; logged after the common ones, in order.
    pub figures: Vec<(&'static str, Vec<f64>)>,
}

/// A step's figures: the sums of its micro-batches' [`MicroStats`].
#[derive(Default)]
struct StepSums {
    loss: f64,
    tokens: u64,
    figures: Vec<(&'static str, f64)>,
}

impl StepSums {
    fn add(&mut self, micro: MicroStats) {
        self.loss = micro.loss.iter().fold(self.loss, |sum, v| sum + v);
        self.tokens += micro.tokens;
        for (name, values) in micro.figures {
            let at = match self.figures.iter().position(|(n, _)| *n == name) {
                Some(at) => at,
                None => {
                    self.figures.push((name, 0.0));
                    self.figures.len() - 1
                }
            };
            let sum = &mut self.figures[at].1;
            *sum = values.iter().fold(*sum, |sum, v| sum + v);
        }
    }
}

/// What a training loop learns.
pub trait Objective<B: Backend> {
    /// The normaliser of one optimizer step's loss (its trained tokens or
    /// pairs), so a step's loss does not depend on how it is split.
    fn step_total(&self, indices: &[usize]) -> f64;

    /// Forward and backward of the examples `indices`, with every loss term
    /// divided by `total`; gradients accumulate into the model.
    fn accumulate(
        &mut self,
        be: &B,
        model: &mut Llama<B>,
        indices: &[usize],
        total: f64,
        pass: TrainPass,
    ) -> Result<MicroStats, LoopError>;
}

/// Why a training loop stopped early.
#[derive(Debug, Error, Diagnostic)]
pub enum LoopError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    NonFinite(#[from] NonFinite),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Data(#[from] DataOrderError),
    #[error("{0}")]
    #[diagnostic(code(train::objective))]
    Objective(String),
}

/// How a loop ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LoopEnd {
    /// Every step done; the mean loss of the last step.
    Finished { steps: u64, last_loss: f64 },
    /// Cancelled after a step; a checkpoint of it is saved.
    Interrupted { step: u64 },
}

const PARAM: &str = "param.";
const EXP_AVG: &str = "exp_avg.";
const EXP_AVG_SQ: &str = "exp_avg_sq.";

#[derive(Serialize, Deserialize)]
struct Extra {
    adamw_step: u32,
    last_loss: f64,
}

/// The dropout seed of optimizer step `step`. It is the same for every
/// micro-batch of the step: each row's mask also takes a key from its own
/// sequence and position (see [`crate::model::batch::SeqRows`]), so an
/// example draws the same mask however the step is split.
fn dropout_seed(seed: u64, step: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"dropout");
    h.update(&seed.to_le_bytes());
    h.update(&step.to_le_bytes());
    let bytes = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// Runs (or resumes) training; `cancelled` is polled after every step.
pub fn train<B: Backend>(
    be: &B,
    model: &mut Llama<B>,
    objective: &mut impl Objective<B>,
    settings: &LoopSettings,
    cancelled: impl Fn() -> bool,
    mut log: impl FnMut(&str),
) -> Result<LoopEnd, LoopError> {
    let order = DataOrder::new(settings.examples, settings.batch_size, settings.seed)?;
    let total_steps = order.total_steps(settings.epochs);
    let schedule = Schedule {
        kind: settings.optim.schedule,
        base_lr: settings.lr,
        warmup_steps: settings.optim.warmup_steps,
        total_steps,
    };
    let adamw = AdamWConfig {
        weight_decay: settings.optim.weight_decay as f32,
        ..AdamWConfig::default()
    };
    let mut opt = match settings.offload_optimizer {
        true => AdamW::offloaded(adamw),
        false => AdamW::new(adamw),
    };
    let metrics_dir = settings.work_dir.join("metrics");
    let (mut step, cursor, mut last_loss, metrics) = match checkpoint::load(&settings.work_dir)? {
        Some(resume) => {
            let state = restore(be, model, &mut opt, resume)?;
            order.check_cursor(state.cursor)?;
            let extra: Extra = serde_json::from_value(state.extra).map_err(|e| {
                LoopError::Objective(format!("checkpoint state is not readable: {e}"))
            })?;
            opt.step = extra.adamw_step;
            log(&format!(
                "resuming from the checkpoint of step {} of {total_steps}",
                state.step
            ));
            let metrics = MetricsLog::resume(&metrics_dir, state.step)?;
            (state.step, state.cursor, extra.last_loss, metrics)
        }
        None => (
            0,
            Cursor::default(),
            f64::NAN,
            MetricsLog::create(&metrics_dir)?,
        ),
    };
    let mut guard = LossGuard {
        stage: settings.stage.clone(),
        lr: settings.lr,
        max_grad_norm: settings.optim.max_grad_norm,
        last_good_step: (step > 0).then_some(step),
    };
    let mut metrics = metrics.with(TrainProgress::new(
        &settings.stage,
        total_steps,
        step,
        settings.progress,
    ));
    let mut batches = order.batches(cursor, settings.epochs);
    while let Some(batch) = batches.next() {
        model.begin_step(be);
        let total = objective.step_total(&batch.indices);
        let mut stats = StepSums::default();
        let pass = TrainPass {
            seed: dropout_seed(settings.seed, step),
            checkpoint: settings.activation_checkpointing,
        };
        let accumulated = batch
            .micro_batches(settings.micro_batch)
            .try_for_each(|indices| {
                stats.add(objective.accumulate(be, model, indices, total, pass)?);
                Ok::<(), LoopError>(())
            });
        model.end_step(be);
        accumulated?;
        guard.check_loss(step + 1, stats.loss)?;
        let grad_norm = match settings.optim.max_grad_norm {
            Some(max) => {
                let mut params = model.params_mut();
                let norm = global_grad_norm(be, params.iter().map(|p| &**p));
                guard.check_grad_norm(step + 1, norm)?;
                clip_grad_norm(be, &mut params, max)
            }
            None => {
                let norm = global_grad_norm(be, model.params_mut().into_iter().map(|p| &*p));
                guard.check_grad_norm(step + 1, norm)?;
                norm
            }
        };
        let lr = schedule.lr(step);
        opt.update(be, model.params_mut(), lr as f32);
        step += 1;
        last_loss = stats.loss;
        let mut figures = vec![
            ("loss", stats.loss),
            ("lr", lr),
            ("grad_norm", grad_norm),
            ("tokens", stats.tokens as f64),
        ];
        figures.extend(stats.figures.iter().copied());
        metrics.record(step, &figures)?;
        let stop = cancelled();
        if stop || step % settings.checkpoint_every.max(1) == 0 || step == total_steps {
            save(
                be,
                model,
                &opt,
                &schedule,
                step,
                batches.cursor(),
                last_loss,
                &settings.work_dir,
            )?;
            guard.last_good_step = Some(step);
        }
        if stop {
            metrics.finish();
            log(&format!("interrupted after step {step}; checkpoint saved"));
            return Ok(LoopEnd::Interrupted { step });
        }
    }
    metrics.finish();
    Ok(LoopEnd::Finished {
        steps: step,
        last_loss,
    })
}

/// Copies `metrics.jsonl` and the TensorBoard events (with the wall-clock
/// ones in `wall/`) from the loop's work dir into `out_dir`.
pub fn publish_metrics(work_dir: &Path, out_dir: &Path) -> std::io::Result<()> {
    use super::tensorboard::EVENTS_FILE;
    use super::wall_clock::WALL_DIR;
    let records = work_dir.join("metrics");
    for file in [super::metrics::METRICS_FILE, EVENTS_FILE] {
        std::fs::copy(records.join(file), out_dir.join(file))?;
    }
    std::fs::create_dir_all(out_dir.join(WALL_DIR))?;
    std::fs::copy(
        records.join(WALL_DIR).join(EVENTS_FILE),
        out_dir.join(WALL_DIR).join(EVENTS_FILE),
    )?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn save<B: Backend>(
    be: &B,
    model: &mut Llama<B>,
    opt: &AdamW<B>,
    schedule: &Schedule,
    step: u64,
    cursor: Cursor,
    last_loss: f64,
    work_dir: &Path,
) -> Result<(), LoopError> {
    let mut tensors = BTreeMap::new();
    for p in model.params_mut() {
        if p.grad.is_none() {
            continue;
        }
        let host = p.to_host(be);
        tensors.insert(
            format!("{PARAM}{}", p.name),
            TensorData {
                shape: host.shape.clone(),
                data: host.data,
            },
        );
        if let Some((m, v)) = opt.moments_of(be, &p.name) {
            for (prefix, data) in [(EXP_AVG, m), (EXP_AVG_SQ, v)] {
                tensors.insert(
                    format!("{prefix}{}", p.name),
                    TensorData {
                        shape: host.shape.clone(),
                        data,
                    },
                );
            }
        }
    }
    let extra = serde_json::to_value(Extra {
        adamw_step: opt.step,
        last_loss,
    })
    .map_err(|e| LoopError::Objective(format!("cannot encode checkpoint state: {e}")))?;
    let state = TrainState {
        step,
        cursor,
        rngs: BTreeMap::new(),
        schedule: *schedule,
        extra,
    };
    checkpoint::save(work_dir, &Checkpoint { state, tensors })?;
    Ok(())
}

fn restore<B: Backend>(
    be: &B,
    model: &mut Llama<B>,
    opt: &mut AdamW<B>,
    mut resume: checkpoint::Resume,
) -> Result<TrainState, LoopError> {
    for p in model.params_mut() {
        if p.grad.is_none() {
            continue;
        }
        let shape = p.shape.clone();
        p.value = be.upload(&resume.take(&format!("{PARAM}{}", p.name), &shape)?.data);
        // Moments exist once a parameter has been stepped.
        if resume
            .checkpoint
            .tensors
            .contains_key(&format!("{EXP_AVG}{}", p.name))
        {
            let m = resume.take(&format!("{EXP_AVG}{}", p.name), &shape)?;
            let v = resume.take(&format!("{EXP_AVG_SQ}{}", p.name), &shape)?;
            opt.set_moments(be, &p.name, m.data, v.data);
        }
    }
    Ok(resume.checkpoint.state)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dropout_seeds_differ_by_step_and_seed() {
        let a = dropout_seed(1, 0);
        assert_ne!(a, dropout_seed(1, 1));
        assert_ne!(a, dropout_seed(2, 0));
        assert_eq!(a, dropout_seed(1, 0));
    }
}
