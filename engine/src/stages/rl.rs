//! What the RL kinds (`ppo`, `grpo`) share: the prompt file and the
//! expert's verifiable reward, loading the policy (actor and reference over
//! one base) and a frozen reward model onto it, the loop over prompt
//! batches with its checkpoints, resume and metrics, and writing the
//! trained adapter as a model folder. A kind brings its step
//! ([`RlMethod`]); everything around the step is here, once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use miette::miette;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::backend::Backend;
use crate::graph::{StageContext, StageError};
use crate::model::adapters::AdapterSet;
use crate::model::llama::{Llama, TrainPass};
use crate::model::load::load_dir;
use crate::model::lora::{self, LoraConfig};
use crate::model::param::Param;
use crate::model::tokenizer::Tokenizer;
use crate::poker::expert::Expert;
use crate::poker::spot::{Spot, parse_answer};
use crate::train::adamw::{AdamW, AdamWConfig};
use crate::train::checkpoint::{self, Checkpoint, Resume, TensorData, TrainState};
use crate::train::clip::clip_grad_norm;
use crate::train::data_order::{Cursor, DataOrder};
use crate::train::dataset;
use crate::train::guard::LossGuard;
use crate::train::metrics::MetricsLog;
use crate::train::policy::{Judge, Policy, Rollout};
use crate::train::progress::{ProgressMode, TrainProgress};
use crate::train::schedule::{Schedule, ScheduleKind};

/// The prompt length the planner assumes: prompts are only read when the
/// stage runs, and the recipe's sequences are at most 512 tokens.
pub const PLANNED_PROMPT_TOKENS: usize = 512;

/// One roll-out prompt: its text and, from poker-data, the spot and the EV
/// of each offered answer for the verifiable reward.
pub struct PromptRecord {
    pub text: String,
    pub spot: Option<Spot>,
    pub evs: BTreeMap<String, f64>,
}

/// Reads a prompt set (JSONL of `{"prompt", "spot"?, "evs"?}`).
pub fn read_prompts(path: &Path) -> Result<Vec<PromptRecord>, StageError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        StageError::runtime(miette!("cannot read prompts `{}`: {e}", path.display()))
    })?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bad = |why: String| {
            StageError::user(miette!(
                help = "each line must be a JSON object with a string field `prompt`",
                "{}:{}: {why}",
                path.display(),
                i + 1
            ))
        };
        let v: Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let prompt = v
            .get("prompt")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no string field `prompt`".into()))?;
        let spot = v
            .get("spot")
            .and_then(|s| serde_json::from_value(s.clone()).ok());
        let evs = v
            .get("evs")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
                    .collect()
            })
            .unwrap_or_default();
        out.push(PromptRecord {
            text: prompt.to_string(),
            spot,
            evs,
        });
    }
    if out.is_empty() {
        return Err(StageError::user(miette!(
            "prompt file `{}` has no prompts",
            path.display()
        )));
    }
    Ok(out)
}

/// The prompts encoded for the policy (in its chat template when it keeps
/// one); records the longest in the run's figures for the planner.
pub fn encode_prompts(
    ctx: &mut StageContext,
    tokenizer: &Tokenizer,
    prompts: &[PromptRecord],
) -> Result<Vec<Vec<u32>>, StageError> {
    let encoded: Vec<Vec<u32>> = prompts
        .iter()
        .map(|r| dataset::encode_prompt(tokenizer, &r.text))
        .collect::<Result<_, _>>()
        .map_err(|e| StageError::runtime(miette!("{e}")))?;
    ctx.ran.prompt_tokens = encoded.iter().map(Vec::len).max();
    Ok(encoded)
}

/// The expert's verifiable reward of an answer: minus its EV regret in big
/// blinds, `-penalty` when it is not a legal action, 0 without a spot.
pub fn verifiable_reward(
    spot: Option<&Spot>,
    evs: &BTreeMap<String, f64>,
    answer: &str,
    penalty: f64,
) -> f64 {
    let Some(spot) = spot else {
        return 0.0;
    };
    let Ok(action) = parse_answer(spot, answer) else {
        return -penalty;
    };
    let best = evs.values().copied().fold(f64::NEG_INFINITY, f64::max);
    match evs.get(&action.answer()) {
        Some(ev) if best.is_finite() => ev - best,
        _ => {
            let scored = Expert::new(0).score_answer(spot, answer);
            -scored.regret().unwrap_or(penalty)
        }
    }
}

pub fn model_err(e: impl Into<miette::Report>) -> StageError {
    StageError::runtime(e.into())
}

/// The LoRA config of a fresh adapter for a model without one.
pub fn fresh_lora(rank: u32) -> LoraConfig {
    LoraConfig {
        rank: rank as usize,
        alpha: 2.0 * rank as f32,
        dropout: 0.0,
        targets: crate::model::llama::PROJECTIONS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        rslora: false,
    }
}

/// The policy read from an SFT output, with what writing it back needs.
pub struct LoadedPolicy<B: Backend> {
    pub policy: Policy<B>,
    /// The actor's adapter config (the SFT adapter's, or a fresh one).
    pub adapter: LoraConfig,
    pub tokenizer: Tokenizer,
    /// The folder of the pretrained base weights.
    pub base_dir: PathBuf,
}

/// Loads the SFT model as actor and reference. The actor continues the SFT
/// adapter and the reference is its frozen copy; a fully fine-tuned SFT
/// model gets a fresh adapter of `lora_rank` (seeded by `seed`) and the bare
/// model is the reference.
pub fn load_policy<B: Backend>(
    be: &B,
    sft_dir: &Path,
    lora_rank: u32,
    seed: u64,
    micro_batch: usize,
) -> Result<LoadedPolicy<B>, StageError> {
    let mut sft = load_dir(be, sft_dir).map_err(model_err)?;
    let (reference, actor, adapter) = match sft.adapter.clone() {
        Some(cfg) => {
            let set = AdapterSet::take(&mut sft.model);
            (set.deep_copy(be, false), set.deep_copy(be, true), cfg)
        }
        None => {
            let cfg = fresh_lora(lora_rank);
            lora::attach(be, &mut sft.model, &cfg, seed).map_err(model_err)?;
            (
                AdapterSet::bare(&sft.model),
                AdapterSet::take(&mut sft.model),
                cfg,
            )
        }
    };
    Ok(LoadedPolicy {
        policy: Policy {
            base: sft.model,
            actor: actor.without_dropout(),
            reference,
            micro_batch,
            activation_checkpointing: false,
        },
        adapter,
        tokenizer: sft.tokenizer,
        base_dir: sft.base_dir,
    })
}

/// Loads a reward model as a frozen [`Judge`] next to the policy. A LoRA
/// reward model over the policy's own pretrained base (`reward` with
/// `method: lora` after a LoRA SFT) is read onto the policy base, so one
/// base is ever in memory; otherwise the reward model is loaded whole and
/// keeps its own base unless its weights equal the policy's. With
/// `critic: Some((rank, seed))` it also returns PPO's critic: a trainable
/// copy of the reward adapter, or a fresh one of `rank` where the reward
/// model has none.
pub fn load_judge<B: Backend>(
    be: &B,
    loaded: &mut LoadedPolicy<B>,
    rm_dir: &Path,
    critic: Option<(u32, u64)>,
) -> Result<(Judge<B>, Option<AdapterSet<B>>), StageError> {
    let no_score = || {
        StageError::user(miette!(
            help =
                "a reward model must be a reward stage's output (LlamaForSequenceClassification)",
            "`{}` has no score.weight",
            rm_dir.display()
        ))
    };
    let policy = &mut loaded.policy.base;
    let same_base = lora::has_adapter(rm_dir)
        && crate::model::load::base_dir(rm_dir)
            .ok()
            .and_then(|dir| dir.canonicalize().ok())
            .is_some_and(|dir| loaded.base_dir.canonicalize().ok() == Some(dir));
    let (judge, critic) = if same_base {
        lora::load(be, policy, rm_dir).map_err(model_err)?;
        let head = policy.score.take().ok_or_else(no_score)?;
        let adapter = AdapterSet::take(policy);
        let critic = critic.map(|_| adapter.deep_copy(be, true));
        let judge = Judge {
            own_base: None,
            adapter: adapter.frozen(be),
            head,
        };
        (judge, critic)
    } else {
        let mut rm = load_dir(be, rm_dir).map_err(model_err)?;
        let head = rm.model.score.take().ok_or_else(no_score)?;
        let adapter = AdapterSet::take(&mut rm.model);
        let critic = match critic {
            Some((rank, seed)) if adapter.is_bare() => {
                lora::attach(be, &mut rm.model, &fresh_lora(rank), seed).map_err(model_err)?;
                Some(AdapterSet::take(&mut rm.model))
            }
            Some(_) => Some(adapter.deep_copy(be, true)),
            None => None,
        };
        // A reward model has no lm_head; every tensor it does have must
        // match, compared one at a time so that neither model is ever
        // copied whole.
        let by_name: BTreeMap<String, &mut Param<B>> = policy
            .base_params_mut()
            .map(|p| (p.name.clone(), p))
            .collect();
        let shared = rm.model.base_params_mut().all(|p| {
            by_name
                .get(&p.name)
                .is_some_and(|q| q.shape == p.shape && q.to_host(be) == p.to_host(be))
        });
        let judge = Judge {
            own_base: (!shared).then_some(rm.model),
            adapter: adapter.frozen(be),
            head,
        };
        (judge, critic)
    };
    let hidden = loaded.policy.base.cfg.hidden_size;
    if judge.head.shape != [1, hidden] {
        return Err(StageError::user(miette!(
            "the reward model's score.weight has shape {:?}, expected [1, {hidden}] (one label, the policy's hidden size)",
            judge.head.shape,
        )));
    }
    Ok((judge, critic))
}

/// Adds a trained model's parameters (as `{prefix}/{name}`) and AdamW
/// moments (`{prefix}.m/..`, `{prefix}.v/..`) to checkpoint tensors.
pub fn add_trained<'a, B: Backend + 'a>(
    be: &B,
    tensors: &mut BTreeMap<String, TensorData>,
    prefix: &str,
    params: impl Iterator<Item = &'a Param<B>>,
    opt: &AdamW<B>,
) {
    for p in params {
        tensors.insert(
            format!("{prefix}/{}", p.name),
            TensorData {
                shape: p.shape.clone(),
                data: be.download(&p.value),
            },
        );
        if let Some((m, v)) = opt.moments_of(be, &p.name) {
            for (kind, data) in [("m", m), ("v", v)] {
                let shape = p.shape.clone();
                tensors.insert(
                    format!("{prefix}.{kind}/{}", p.name),
                    TensorData { shape, data },
                );
            }
        }
    }
}

/// Restores what [`add_trained`] saved: the parameters, and the moments
/// when the optimizer had taken `steps` steps.
pub fn restore_trained<'a, B: Backend + 'a>(
    be: &B,
    resume: &mut Resume,
    prefix: &str,
    params: impl Iterator<Item = &'a mut Param<B>>,
    opt: &mut AdamW<B>,
    steps: u32,
) -> Result<(), StageError> {
    let err = |e: checkpoint::CheckpointError| StageError::runtime(miette::Report::new(e));
    opt.step = steps;
    for p in params {
        let shape = p.shape.clone();
        p.value = be.upload(
            &resume
                .take(&format!("{prefix}/{}", p.name), &shape)
                .map_err(err)?
                .data,
        );
        if steps > 0 {
            let m = resume
                .take(&format!("{prefix}.m/{}", p.name), &shape)
                .map_err(err)?;
            let v = resume
                .take(&format!("{prefix}.v/{}", p.name), &shape)
                .map_err(err)?;
            opt.set_moments(be, &p.name, m.data, v.data);
        }
    }
    Ok(())
}

/// The AdamW of an RL run's trained model: no weight decay, its state on
/// the host when the preset offloads the optimizer.
pub fn optimizer<B: Backend>(ctx: &StageContext) -> AdamW<B> {
    let cfg = AdamWConfig {
        weight_decay: 0.0,
        ..AdamWConfig::default()
    };
    match ctx.exec.offload_optimizer {
        true => AdamW::offloaded(cfg),
        false => AdamW::new(cfg),
    }
}

/// One update of the actor's adapter from a loss's per-token weights (its
/// gradient in each response token's log-probability, negated): backward,
/// the global-norm clip, the guard's check (before any weight moves), AdamW.
/// The gradients exist only during the call. Returns the gradient norm.
pub fn update_actor<B: Backend>(
    be: &B,
    policy: &mut Policy<B>,
    (rollout, weights): (&Rollout, &[f32]),
    pass: TrainPass,
    opt: &mut AdamW<B>,
    (lr, max_grad_norm): (f64, f64),
    (guard, step): (&LossGuard, u64),
) -> Result<f64, StageError> {
    for q in policy.actor.params_mut() {
        q.set_trainable(be, true);
    }
    policy.actor_backward(be, rollout, weights, pass);
    let mut params: Vec<&mut Param<B>> = policy.actor.params_mut().collect();
    let norm = clip_grad_norm(be, &mut params, max_grad_norm);
    guard
        .check_grad_norm(step, norm)
        .map_err(|e| StageError::runtime(miette::Report::new(e)))?;
    opt.update(be, params, lr as f32);
    for q in policy.actor.params_mut() {
        q.set_trainable(be, false);
    }
    Ok(norm)
}

/// One RL method's step and its trained state, driven by [`drive`].
pub trait RlMethod<B: Backend> {
    /// Checkpoint tensors of everything that trains.
    fn state_tensors(&self, be: &B) -> BTreeMap<String, TensorData>;
    /// Steps taken by each optimizer, in a fixed order.
    fn optimizer_steps(&self) -> Vec<u32>;
    /// Puts back what [`Self::state_tensors`] saved.
    fn restore(&mut self, be: &B, resume: &mut Resume, steps: &[u32]) -> Result<(), StageError>;
    /// One step on the prompts with these indices (`step` steps done so
    /// far). Returns the step's figures, with `reward` (mean sequence
    /// score) and `kl` (mean summed KL to the reference) among them.
    fn step(
        &mut self,
        be: &B,
        ctx: &mut StageContext,
        indices: &[usize],
        step: u64,
        guard: &LossGuard,
    ) -> Result<Vec<(&'static str, f64)>, StageError>;
}

/// What the loop needs from a kind's parameters.
pub struct LoopSettings {
    pub prompts: usize,
    pub batch_size: u32,
    pub epochs: u32,
    pub seed: u64,
    /// The actor's learning rate (constant; recorded in the checkpoint).
    pub lr: f64,
    pub max_grad_norm: f64,
    pub checkpoint_every: u64,
    /// Stop after this many steps, before the epochs are through.
    pub max_steps: Option<u64>,
}

/// Running numbers of the whole run that the summary reports, kept as f32:
/// serde_json reads f64 text back to within one ulp only, and a resumed run
/// must write the same summary.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct History {
    reward_means: Vec<f32>,
    kls: Vec<f32>,
}

impl History {
    /// The summary's figures of the run: first and last reward means, the
    /// means of the first and last quarter of steps, the last KL.
    pub fn summary(&self, steps: u64) -> Value {
        let r = &self.reward_means;
        let mean = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len().max(1) as f64;
        let k = r.len().div_ceil(4).max(1);
        json!({
            "steps": steps,
            "reward_mean_first": r.first(),
            "reward_mean_last": r.last(),
            "reward_mean_first_quarter": mean(&r[..k.min(r.len())]),
            "reward_mean_last_quarter": mean(&r[r.len().saturating_sub(k)..]),
            "kl_last": self.kls.last(),
        })
    }
}

/// How the loop ended.
pub enum LoopEnd {
    /// Every step ran.
    Done {
        steps: u64,
        history: History,
        /// A checkpoint was written along the way.
        checkpointed: bool,
    },
    /// Ctrl-C: a checkpoint holds the steps done.
    Interrupted,
}

fn state_err(e: serde_json::Error) -> StageError {
    StageError::runtime(miette!("checkpoint state: {e}"))
}

/// Saves the run after `step` steps, the data order at `cursor`.
fn save<B: Backend, M: RlMethod<B>>(
    be: &B,
    work: &Path,
    method: &M,
    at: (u64, Cursor, Schedule),
    history: &History,
) -> Result<(), StageError> {
    let (step, cursor, schedule) = at;
    let ckpt = Checkpoint {
        state: TrainState {
            step,
            cursor,
            rngs: BTreeMap::new(),
            schedule,
            extra: json!({
                "opt_steps": method.optimizer_steps(),
                "history": history,
            }),
        },
        tensors: method.state_tensors(be),
    };
    checkpoint::save(work, &ckpt).map_err(|e| StageError::runtime(miette::Report::new(e)))
}

/// Runs `method`'s steps over the prompt batches from where the last
/// checkpoint left off: metrics and progress per step, a checkpoint every
/// `checkpoint_every` steps and on Ctrl-C.
pub fn drive<B: Backend, M: RlMethod<B>>(
    be: &B,
    ctx: &mut StageContext,
    method: &mut M,
    s: &LoopSettings,
    what: &str,
) -> Result<LoopEnd, StageError> {
    let order = DataOrder::new(s.prompts, s.batch_size as usize, s.seed)
        .map_err(|e| StageError::user(miette!("{e}")))?;
    let total = order
        .total_steps(u64::from(s.epochs))
        .min(s.max_steps.unwrap_or(u64::MAX));
    let schedule = Schedule {
        kind: ScheduleKind::Constant,
        base_lr: s.lr,
        warmup_steps: 0,
        total_steps: total,
    };
    let work = ctx.work_dir().to_path_buf();
    let metrics_dir = work.join("metrics");
    let mut step = 0u64;
    let mut cursor = Cursor::default();
    let mut history = History::default();
    let resumed =
        checkpoint::load(&work).map_err(|e| StageError::runtime(miette::Report::new(e)))?;
    let mut metrics = match resumed {
        Some(mut resume) => {
            let state = resume.checkpoint.state.clone();
            let steps: Vec<u32> =
                serde_json::from_value(state.extra["opt_steps"].clone()).map_err(state_err)?;
            history = serde_json::from_value(state.extra["history"].clone()).map_err(state_err)?;
            method.restore(be, &mut resume, &steps)?;
            step = state.step;
            cursor = state.cursor;
            ctx.log(format!("resuming from the checkpoint of step {step}"));
            MetricsLog::resume(&metrics_dir, step)
        }
        None => MetricsLog::create(&metrics_dir),
    }
    .map_err(|e| StageError::runtime(miette::Report::new(e)))?
    .with(TrainProgress::new(
        &ctx.stage,
        total,
        step,
        ProgressMode::from(ctx.verbosity()),
    ));
    ctx.log(format!(
        "{} prompts, {total} {what} steps of {} prompts",
        s.prompts, s.batch_size
    ));
    let mut guard = LossGuard {
        stage: ctx.stage.clone(),
        lr: s.lr,
        max_grad_norm: Some(s.max_grad_norm),
        last_good_step: (step > 0).then_some(step),
    };
    let mut batches = order.batches(cursor, u64::from(s.epochs));
    let mut saved = step;
    while step < total
        && let Some(batch) = batches.next()
    {
        if ctx.is_cancelled() {
            if saved < step {
                save(be, &work, method, (step, cursor, schedule), &history)?;
            }
            metrics.finish();
            ctx.finish();
            return Ok(LoopEnd::Interrupted);
        }
        let figures = method.step(be, ctx, &batch.indices, step, &guard)?;
        step += 1;
        let figure = |name| {
            figures
                .iter()
                .find(|(k, _)| *k == name)
                .map_or(0.0, |f| f.1)
        };
        history.reward_means.push(figure("reward") as f32);
        history.kls.push(figure("kl") as f32);
        metrics
            .record(step, &figures)
            .map_err(|e| StageError::runtime(miette::Report::new(e)))?;
        let line: Vec<String> = figures.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        ctx.log_to_file(format!("step {step}/{total}  {}", line.join("  ")));
        cursor = batches.cursor();
        if step.is_multiple_of(s.checkpoint_every) {
            save(be, &work, method, (step, cursor, schedule), &history)?;
            saved = step;
            guard.last_good_step = Some(step);
        }
    }
    metrics.finish();
    Ok(LoopEnd::Done {
        steps: step,
        history,
        checkpointed: saved > 0,
    })
}

/// Writes an adapter set as a PEFT adapter beside a copy of the base's
/// config and weights and the tokenizer, so the folder loads on its own.
pub fn write_model<B: Backend>(
    be: &B,
    base: &mut Llama<B>,
    set: &mut AdapterSet<B>,
    cfg: &LoraConfig,
    base_dir: &Path,
    tokenizer: &Tokenizer,
    dir: &Path,
) -> Result<(), StageError> {
    link_base(base_dir, dir)?;
    tokenizer
        .write_files(dir)
        .map_err(|e| StageError::runtime(miette!("cannot write the tokenizer: {e}")))?;
    set.with(base, |m| lora::save(be, m, cfg, dir, "."))
        .map_err(model_err)
}

/// Puts the base's config.json and every file of its weights (one
/// safetensors file, an index and its shards, or a GGUF link) into `dir`,
/// so that the adapter saved beside them loads from `dir` alone, whatever
/// form the base came in. Each is hard-linked to the file it resolves to
/// (a hub snapshot's files and the GGUF link are symlinks, the hub's
/// relative, so linking the link itself would dangle), or copied where the
/// file system refuses.
fn link_base(base_dir: &Path, dir: &Path) -> Result<(), StageError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StageError::runtime(miette!("cannot create `{}`: {e}", dir.display())))?;
    let weights = crate::model::weights::weight_files(base_dir).map_err(model_err)?;
    for src in std::iter::once(base_dir.join("config.json")).chain(weights) {
        let real = std::fs::canonicalize(&src).map_err(|e| {
            StageError::runtime(miette!(
                "cannot read the base model's `{}`: {e}",
                src.display()
            ))
        })?;
        let dst = dir.join(src.file_name().unwrap_or(src.as_os_str()));
        if std::fs::hard_link(&real, &dst).is_err() {
            std::fs::copy(&real, &dst).map_err(|e| {
                StageError::runtime(miette!("cannot copy `{}`: {e}", real.display()))
            })?;
        }
    }
    Ok(())
}

/// Copies the metrics into the output folder and writes `summary.json`.
pub fn publish(ctx: &mut StageContext, summary: &Value) -> Result<(), StageError> {
    let (work, out) = (ctx.work_dir().to_path_buf(), ctx.out_dir().to_path_buf());
    crate::train::lm_loop::publish_metrics(&work, &out)
        .map_err(|e| StageError::runtime(miette!("cannot copy the training metrics: {e}")))?;
    crate::train::metrics::write_summary(&out, summary)
        .map_err(|e| StageError::runtime(miette::Report::new(e)))?;
    ctx.log(format!("summary {summary}"));
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::model::export;
    use crate::model::weights;

    /// An RL stage's actor folder holds its base's weights in each form a
    /// base comes in: sharded safetensors with an index (Llama 3.1 8B from
    /// the hub), a hub snapshot whose files are relative symlinks into its
    /// blobs, and a folder made from a GGUF file (an absolute link to it).
    /// The safetensors forms read back the base's tensors from the published
    /// folder alone, even once the snapshot's links are gone; the GGUF form
    /// gets the file's own bytes, not a link.
    #[test]
    fn link_base_publishes_every_form_of_base() {
        let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/llama/mha");
        let merged = export::merged(&Cpu, &golden).unwrap();
        let root = tempfile::tempdir().unwrap();

        let sharded = root.path().join("sharded");
        let biggest = merged
            .tensors
            .values()
            .map(|t| 4 * t.data.len() as u64)
            .max()
            .unwrap();
        export::write_hf(&merged, &sharded, biggest).unwrap();
        assert!(sharded.join("model.safetensors.index.json").is_file());

        let blobs = root.path().join("hub/blobs");
        let snapshot = root.path().join("hub/snapshots/abc");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::create_dir_all(&snapshot).unwrap();
        for (name, blob) in [("config.json", "c1"), ("model.safetensors", "w1")] {
            std::fs::copy(golden.join(name), blobs.join(blob)).unwrap();
            std::os::unix::fs::symlink(format!("../../blobs/{blob}"), snapshot.join(name)).unwrap();
        }

        for (i, base) in [&sharded, &snapshot].into_iter().enumerate() {
            let want = weights::load_dir(base).unwrap();
            let out = root.path().join(format!("actor{i}"));
            link_base(base, &out).unwrap();
            assert!(out.join("config.json").is_file(), "{}", base.display());
            assert_eq!(weights::load_dir(&out).unwrap(), want, "{}", base.display());
        }
        std::fs::remove_dir_all(root.path().join("hub/snapshots")).unwrap();
        assert_eq!(
            weights::load_dir(&root.path().join("actor1")).unwrap(),
            weights::load_dir(&golden).unwrap()
        );

        let gguf_file = root.path().join("m.gguf");
        let bytes: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        std::fs::write(&gguf_file, &bytes).unwrap();
        let from_gguf = root.path().join("from_gguf");
        std::fs::create_dir_all(&from_gguf).unwrap();
        std::fs::copy(golden.join("config.json"), from_gguf.join("config.json")).unwrap();
        let link = crate::model::gguf::GGUF_LINK;
        std::os::unix::fs::symlink(&gguf_file, from_gguf.join(link)).unwrap();
        let out = root.path().join("actor_gguf");
        link_base(&from_gguf, &out).unwrap();
        let published = out.join(link);
        assert!(!std::fs::symlink_metadata(&published).unwrap().is_symlink());
        assert_eq!(std::fs::read(&published).unwrap(), bytes);
    }
}
