//! `ppo`: RLHF of the SFT policy against the reward model (InstructGPT /
//! DeepSpeed-Chat step 3). Each step samples responses to a batch of
//! prompts, scores them (reward model, optionally mixed with the poker
//! expert's verifiable EV reward), shapes per-token rewards with a KL
//! penalty to the frozen SFT policy, estimates advantages with GAE and
//! updates the actor (clipped surrogate) and the critic (clipped value
//! loss), then the EMA of the actor. The models share frozen bases (see
//! `train::ppo_roles`). A checkpoint every `checkpoint_every` steps (and on
//! Ctrl-C) makes the stage resumable to the same result.

use std::collections::BTreeMap;
use std::path::Path;

use miette::miette;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::device::{RunOnBackend, run_on_device};
use super::{CAUSAL_LM, PROMPT_SET, REWARD_MODEL};
use crate::backend::{Backend, Dtype};
use crate::graph::{
    BatchDecl, ExecSettings, InputDecl, ModelOrigin, Outcome, OutputDecl, StageContext, StageError,
    StageKind, StageResult,
};
use crate::model::adapters::AdapterSet;
use crate::model::llama::{Llama, TrainPass};
use crate::model::load::load_dir;
use crate::model::lora::{self, LoraConfig};
use crate::model::memory::{
    RewardWeights, Rollout as MemoryRollout, StageMemory, Task, Trains, plan_stage,
};
use crate::model::param::Param;
use crate::model::tokenizer::Tokenizer;
use crate::poker::expert::Expert;
use crate::poker::spot::{Spot, parse_answer};
use crate::train::adamw::{AdamW, AdamWConfig};
use crate::train::checkpoint::{self, Checkpoint, Resume, TensorData, TrainState};
use crate::train::clip::clip_grad_norm;
use crate::train::data_order::{Cursor, DataOrder};
use crate::train::dataset;
use crate::train::ema::Ema;
use crate::train::guard::LossGuard;
use crate::train::metrics::MetricsLog;
use crate::train::ppo;
use crate::train::ppo_roles::{Roles, Rollout, RolloutOptions};
use crate::train::progress::{ProgressMode, TrainProgress};
use crate::train::schedule::{Schedule, ScheduleKind};

/// Parameters of a `ppo` stage. Defaults are the recipe's (DeepSpeed-Chat
/// step 3 for LLaMA): actor lr 5e-7, critic lr 5e-6, one PPO epoch, EMA on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PpoParams {
    /// The SFT model (`sft` or `sft.model`): the actor starts from it and
    /// it stays, frozen, as the reference policy.
    pub actor: String,
    /// The reward model: frozen as the judge, and the critic starts from it.
    pub critic: String,
    /// Prompts to roll out (`data.prompts`).
    pub prompts: String,
    #[serde(default = "defaults::actor_lr")]
    #[schemars(range(min = 0.0))]
    pub actor_lr: f64,
    #[serde(default = "defaults::critic_lr")]
    #[schemars(range(min = 0.0))]
    pub critic_lr: f64,
    /// Optimisation passes over each rollout batch.
    #[serde(default = "defaults::one")]
    #[schemars(range(min = 1, max = 16))]
    pub ppo_epochs: u32,
    /// Passes over the prompt file.
    #[serde(default = "defaults::one")]
    #[schemars(range(min = 1, max = 100))]
    pub epochs: u32,
    /// Prompts per rollout (one PPO step each).
    #[serde(default = "defaults::batch_size")]
    #[schemars(range(min = 1, max = 4096))]
    pub batch_size: u32,
    /// Coefficient of the per-token KL penalty to the reference policy.
    #[serde(default = "defaults::kl_coef")]
    #[schemars(range(min = 0.0))]
    pub kl_coef: f64,
    /// Decay of the EMA of the actor's adapter; 0 turns the EMA off.
    #[serde(default = "defaults::ema")]
    #[schemars(range(min = 0.0, max = 0.99999))]
    pub ema: f64,
    /// Discount of GAE.
    #[serde(default = "defaults::gamma")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub gamma: f64,
    /// Lambda of GAE.
    #[serde(default = "defaults::lambda")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub lambda: f64,
    /// Clip range of the probability ratio.
    #[serde(default = "defaults::clip")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub clip_range: f64,
    /// Clip range of the critic's values around their rollout values.
    #[serde(default = "defaults::clip")]
    #[schemars(range(min = 0.0))]
    pub value_clip_range: f64,
    /// Scores are clipped to plus or minus this before shaping.
    #[serde(default = "defaults::reward_clip")]
    #[schemars(range(min = 0.0))]
    pub reward_clip: f64,
    /// Weight of the expert's verifiable reward (minus the EV regret in big
    /// blinds; `illegal_penalty` below zero for an answer that is not a
    /// legal action) against the reward model's score: `score = (1 - w) *
    /// rm + w * verifiable`.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub ev_weight: f64,
    /// The verifiable reward of an answer that is not a legal action is
    /// `-illegal_penalty`.
    #[serde(default = "defaults::illegal_penalty")]
    #[schemars(range(min = 0.0))]
    pub illegal_penalty: f64,
    /// Tokens sampled per response.
    #[serde(default = "defaults::max_new_tokens")]
    #[schemars(range(min = 1, max = 4096))]
    pub max_new_tokens: u32,
    /// Sampling temperature of roll-outs.
    #[serde(default = "defaults::temperature")]
    #[schemars(range(min = 0.01, max = 10.0))]
    pub temperature: f64,
    /// Global gradient-norm clip of each model.
    #[serde(default = "defaults::max_grad_norm")]
    #[schemars(range(min = 0.0))]
    pub max_grad_norm: f64,
    /// LoRA rank of an adapter added where the SFT model or the reward
    /// model has none (full fine-tunes).
    #[serde(default = "defaults::lora_rank")]
    #[schemars(range(min = 1, max = 1024))]
    pub lora_rank: u32,
    #[serde(default = "defaults::seed")]
    pub seed: u64,
    /// PPO steps between checkpoints (resume points); Ctrl-C saves one
    /// too. Not part of the stage hash.
    #[serde(default = "defaults::checkpoint_every")]
    #[schemars(range(min = 1))]
    pub checkpoint_every: u64,
    /// Render prompts in the model's chat template when it has one (the
    /// base's `tokenizer_config.json` or GGUF metadata); `false` sends them
    /// bare.
    #[serde(
        default = "super::chat_template_on",
        skip_serializing_if = "super::is_chat_template_on"
    )]
    pub chat_template: bool,
    /// Storage of frozen weights: `bf16` (bfloat16, rounding where the CUDA
    /// kernels round, on the GPU and the CPU alike) or `f32`. The pipeline's
    /// `model.dtype` when left out; f32 when neither says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<Dtype>,
}

mod defaults {
    pub fn actor_lr() -> f64 {
        5e-7
    }
    pub fn critic_lr() -> f64 {
        5e-6
    }
    pub fn one() -> u32 {
        1
    }
    pub fn batch_size() -> u32 {
        8
    }
    pub fn kl_coef() -> f64 {
        0.1
    }
    pub fn ema() -> f64 {
        0.992
    }
    pub fn gamma() -> f64 {
        1.0
    }
    pub fn lambda() -> f64 {
        0.95
    }
    pub fn clip() -> f64 {
        0.2
    }
    pub fn reward_clip() -> f64 {
        5.0
    }
    pub fn illegal_penalty() -> f64 {
        3.0
    }
    pub fn max_new_tokens() -> u32 {
        16
    }
    pub fn temperature() -> f64 {
        1.0
    }
    pub fn max_grad_norm() -> f64 {
        1.0
    }
    pub fn lora_rank() -> u32 {
        16
    }
    /// 100 keeps an 8B run's checkpoint time under 5% of its run time. At
    /// Llama 3.1 8B with rank-128 adapters a checkpoint is about 9 GB
    /// (actor and critic adapters with AdamW's m and v, the EMA, the
    /// heads), written and fsynced: about 5 s on an NVMe disk at 2 GB/s,
    /// about 18 s at 500 MB/s. A PPO step of 8 prompts of 512 tokens costs
    /// at least about 5 s on one H100 (training two models on 4096 tokens
    /// is 6 x 8e9 x 4096 x 2 = 3.9e14 FLOP, four scoring passes 2.6e14,
    /// 256 decode steps each reading the 16 GB base; at 40% of bf16 peak
    /// and 3 TB/s that is about 1.5 + 1 + 1.5 s, plus the host work).
    /// Every 100 steps the slow disk's 18 s is 3.6% of 500 s; every step
    /// it would be 3.6 times the step itself.
    pub fn checkpoint_every() -> u64 {
        100
    }
    pub fn seed() -> u64 {
        1
    }
}

/// The `ppo` stage kind.
pub struct Ppo;

impl StageKind for Ppo {
    type Params = PpoParams;
    const NAME: &'static str = "ppo";
    /// 2: each prompt samples from its own random stream (so roll-outs can
    /// run in the preset's micro-batches), which changes the responses.
    const VERSION: u32 = 2;
    const DTYPE_FIELD: Option<&'static str> = Some("dtype");
    const DESCRIPTION: &'static str = "RLHF with PPO: actor from SFT, critic from the reward model, KL to the SFT policy, GAE, clipped updates, EMA.";

    fn outputs(&self, _: &PpoParams) -> Vec<OutputDecl> {
        vec![
            OutputDecl::new("model", CAUSAL_LM, "actor"),
            OutputDecl::new("ema", CAUSAL_LM, "actor_ema"),
        ]
    }

    fn inputs(&self, p: &PpoParams) -> Vec<InputDecl> {
        vec![
            InputDecl::stage("actor", &p.actor, &[CAUSAL_LM]),
            InputDecl::stage("critic", &p.critic, &[REWARD_MODEL]),
            InputDecl::stage("prompts", &p.prompts, &[PROMPT_SET]),
        ]
    }

    fn semantic_config(&self, p: &PpoParams) -> Value {
        super::training_config(p)
    }

    fn model_origin(&self, _: &PpoParams) -> ModelOrigin {
        ModelOrigin::Input("actor")
    }

    /// Micro-batches of the global batch come from the preset (see
    /// `Roles::micro_batch`).
    fn global_batch(&self, p: &PpoParams) -> Option<BatchDecl> {
        Some(BatchDecl {
            field: "batch_size".into(),
            size: p.batch_size,
        })
    }

    /// One shared base (the SFT model's pretrained root) under the actor,
    /// reference, critic and reward adapters. The actor continues the SFT
    /// adapter (its frozen copy is the reference) and the critic the reward
    /// model's; where those have none, a fresh adapter of `lora_rank` is
    /// added and the reference is the bare base (see `build_roles`). The
    /// preset's micro-batch is both the generation batch and the training
    /// micro-batch.
    fn memory(&self, p: &PpoParams, exec: &ExecSettings) -> StageMemory {
        let Some(model) = &exec.base_model else {
            return StageMemory::NotApplicable;
        };
        let fresh = Trains::lora_all(p.lora_rank as usize);
        let upstream = |field: &str| match exec.input_adapters.get(field) {
            Some(lora @ Trains::Lora { .. }) => Some(lora.clone()),
            _ => None,
        };
        let (actor, reference) = match upstream("actor") {
            Some(lora) => (lora.clone(), lora),
            None => (fresh.clone(), Trains::Nothing),
        };
        let rollout = MemoryRollout {
            generation_batch: exec.micro_batch as usize,
            prompt_len: exec
                .ran
                .and_then(|ran| ran.prompt_tokens)
                .unwrap_or(PLANNED_PROMPT_TOKENS),
            new_tokens: p.max_new_tokens as usize,
        };
        plan_stage(
            model,
            Path::new("."),
            Task::Ppo {
                critic: upstream("critic").unwrap_or(fresh),
                reference,
                reward: match upstream("critic") {
                    Some(_) => RewardWeights::Adapter,
                    None => RewardWeights::OwnBase,
                },
                rollout,
                ema: p.ema > 0.0,
            },
            actor,
            exec.ran
                .and_then(|ran| ran.sequence_tokens)
                .unwrap_or(rollout.prompt_len + rollout.new_tokens),
            exec,
            RunOnBackend::dtype(self, p),
        )
    }

    fn run(&self, p: &PpoParams, ctx: &mut StageContext) -> StageResult {
        run_on_device(self, p, ctx)
    }
}

impl RunOnBackend for Ppo {
    fn dtype(&self, params: &PpoParams) -> Dtype {
        params.dtype.unwrap_or_default()
    }

    fn run_on<B: Backend>(&self, be: &B, p: &PpoParams, ctx: &mut StageContext) -> StageResult {
        run(be, p, ctx)
    }
}

/// The prompt length the planner assumes: prompts are only read when the
/// stage runs, and the recipe's sequences are at most 512 tokens.
const PLANNED_PROMPT_TOKENS: usize = 512;

/// One PPO prompt: its text and, from poker-data, the spot and the EV of
/// each offered answer for the verifiable reward.
struct PromptRecord {
    text: String,
    spot: Option<Spot>,
    evs: BTreeMap<String, f64>,
}

fn read_prompts(path: &Path) -> Result<Vec<PromptRecord>, StageError> {
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

fn model_err(e: impl Into<miette::Report>) -> StageError {
    StageError::runtime(e.into())
}

/// The LoRA config of a fresh adapter for a model without one.
fn fresh_lora(rank: u32) -> LoraConfig {
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

/// The reward model's part of the roles.
struct RewardRoles<B: Backend> {
    score: Param<B>,
    reward: AdapterSet<B>,
    critic: AdapterSet<B>,
    /// The reward model's base when it is not the policy's.
    value_base: Option<Llama<B>>,
}

/// Loads the reward model. A LoRA reward model over the policy's own
/// pretrained base (`reward` with `method: lora` after a LoRA SFT) is read
/// onto the policy base, so one base is ever in memory; otherwise the
/// reward model is loaded whole and keeps its own base unless its weights
/// equal the policy's. `sft.model` must carry no adapter.
fn reward_roles<B: Backend>(
    be: &B,
    p: &PpoParams,
    sft: &mut crate::model::load::Loaded<B>,
    rm_dir: &Path,
) -> Result<RewardRoles<B>, StageError> {
    let no_score = || {
        StageError::user(miette!(
            help = "the critic must be a reward stage's output (LlamaForSequenceClassification)",
            "`{}` has no score.weight",
            rm_dir.display()
        ))
    };
    let same_base = lora::has_adapter(rm_dir)
        && crate::model::load::base_dir(rm_dir)
            .ok()
            .and_then(|dir| dir.canonicalize().ok())
            .is_some_and(|dir| sft.base_dir.canonicalize().ok() == Some(dir));
    if same_base {
        lora::load(be, &mut sft.model, rm_dir).map_err(model_err)?;
        let score = sft.model.score.take().ok_or_else(no_score)?;
        let reward = AdapterSet::take(&mut sft.model);
        let critic = reward.deep_copy(be, true);
        let reward = reward.frozen(be);
        return Ok(RewardRoles {
            score,
            reward,
            critic,
            value_base: None,
        });
    }
    let mut rm = load_dir(be, rm_dir).map_err(model_err)?;
    let score = rm.model.score.take().ok_or_else(no_score)?;
    let reward = AdapterSet::take(&mut rm.model);
    let critic = if reward.is_bare() {
        lora::attach(be, &mut rm.model, &fresh_lora(p.lora_rank), p.seed ^ 1).map_err(model_err)?;
        AdapterSet::take(&mut rm.model)
    } else {
        reward.deep_copy(be, true)
    };
    let reward = reward.frozen(be);
    // A reward model has no lm_head; every tensor it does have must match,
    // compared one at a time so that neither model is ever copied whole.
    let policy: BTreeMap<String, &mut Param<B>> = sft
        .model
        .base_params_mut()
        .map(|p| (p.name.clone(), p))
        .collect();
    let shared = rm.model.base_params_mut().all(|p| {
        policy
            .get(&p.name)
            .is_some_and(|q| q.shape == p.shape && q.to_host(be) == p.to_host(be))
    });
    Ok(RewardRoles {
        score,
        reward,
        critic,
        value_base: (!shared).then_some(rm.model),
    })
}

/// Builds the four roles from the SFT and reward model directories; returns
/// them with the actor's LoRA config and the tokenizer.
pub fn build_roles<B: Backend>(
    be: &B,
    p: &PpoParams,
    sft_dir: &Path,
    rm_dir: &Path,
) -> Result<(Roles<B>, LoraConfig, Tokenizer), StageError> {
    let mut sft = load_dir(be, sft_dir).map_err(model_err)?;
    let (reference, actor, actor_cfg) = match sft.adapter.clone() {
        Some(cfg) => {
            let set = AdapterSet::take(&mut sft.model);
            (set.deep_copy(be, false), set.deep_copy(be, true), cfg)
        }
        None => {
            let cfg = fresh_lora(p.lora_rank);
            lora::attach(be, &mut sft.model, &cfg, p.seed).map_err(model_err)?;
            (
                AdapterSet::bare(&sft.model),
                AdapterSet::take(&mut sft.model),
                cfg,
            )
        }
    };
    let RewardRoles {
        score,
        reward,
        critic,
        value_base,
    } = reward_roles(be, p, &mut sft, rm_dir)?;
    if score.shape != [1, sft.model.cfg.hidden_size] {
        return Err(StageError::user(miette!(
            "the reward model's score.weight has shape {:?}, expected [1, {}] (one label, the policy's hidden size)",
            score.shape,
            sft.model.cfg.hidden_size
        )));
    }
    let mut value_head = Param::new(be, "v_head.weight", &score.to_host(be));
    value_head.set_trainable(be, true);
    let roles = Roles {
        policy: sft.model,
        value_base,
        actor: actor.without_dropout(),
        reference,
        critic: critic.without_dropout(),
        reward,
        value_head,
        reward_head: score,
        micro_batch: p.batch_size as usize,
        activation_checkpointing: false,
    };
    Ok((roles, actor_cfg, sft.tokenizer))
}

/// Running numbers of the whole run that the summary reports, kept as f32:
/// serde_json reads f64 text back to within one ulp only, and a resumed run
/// must write the same summary.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct History {
    reward_means: Vec<f32>,
    kls: Vec<f32>,
}

fn to_data<B: Backend>(be: &B, buf: &B::Buf, shape: &[usize]) -> TensorData {
    TensorData {
        shape: shape.to_vec(),
        data: be.download(buf),
    }
}

/// Writes the checkpoint of the run after `step` steps, the data order at
/// `cursor`.
#[allow(clippy::too_many_arguments)]
fn save<B: Backend>(
    be: &B,
    work: &Path,
    roles: &Roles<B>,
    opts: [&AdamW<B>; 2],
    ema: &Ema<B>,
    step: u64,
    cursor: Cursor,
    schedule: Schedule,
    history: &History,
) -> Result<(), StageError> {
    let ckpt = Checkpoint {
        state: TrainState {
            step,
            cursor,
            rngs: BTreeMap::new(),
            schedule,
            extra: json!({
                "opt_steps": [opts[0].step, opts[1].step],
                "history": history,
            }),
        },
        tensors: state_tensors(be, roles, opts, &ema.values(be)),
    };
    checkpoint::save(work, &ckpt).map_err(|e| StageError::runtime(miette::Report::new(e)))
}

/// Trainable tensors and optimizer moments of the run, by checkpoint name.
fn state_tensors<B: Backend>(
    be: &B,
    roles: &Roles<B>,
    opts: [&AdamW<B>; 2],
    ema: &[Vec<f32>],
) -> BTreeMap<String, TensorData> {
    let mut t = BTreeMap::new();
    let critic_params = roles.critic.params().chain([&roles.value_head]);
    let groups: [(&str, Vec<&Param<B>>); 2] = [
        ("actor", roles.actor.params().collect()),
        ("critic", critic_params.collect()),
    ];
    for ((role, params), opt) in groups.into_iter().zip(opts) {
        for p in params {
            t.insert(
                format!("{role}/{}", p.name),
                to_data(be, &p.value, &p.shape),
            );
            if let Some((m, v)) = opt.moments_of(be, &p.name) {
                for (kind, data) in [("m", m), ("v", v)] {
                    let shape = p.shape.clone();
                    t.insert(
                        format!("{role}.{kind}/{}", p.name),
                        TensorData { shape, data },
                    );
                }
            }
        }
    }
    for (p, e) in roles.actor.params().zip(ema) {
        t.insert(
            format!("ema/{}", p.name),
            TensorData {
                shape: p.shape.clone(),
                data: e.clone(),
            },
        );
    }
    t
}

/// One model's checkpoint prefix, parameters, optimizer and step count.
type RestoreGroup<'a, B> = (&'static str, Vec<&'a mut Param<B>>, &'a mut AdamW<B>, u32);

fn restore<B: Backend>(
    be: &B,
    resume: &mut Resume,
    roles: &mut Roles<B>,
    opts: [&mut AdamW<B>; 2],
    ema: &mut Ema<B>,
    opt_steps: [u32; 2],
) -> Result<(), StageError> {
    let [actor_opt, critic_opt] = opts;
    let err = |e: checkpoint::CheckpointError| StageError::runtime(miette::Report::new(e));
    if ema.is_on() {
        let values = roles
            .actor
            .params()
            .map(|p| {
                resume
                    .take(&format!("ema/{}", p.name), &p.shape)
                    .map(|t| t.data)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        ema.restore(be, values);
    }
    let Roles {
        actor,
        critic,
        value_head,
        ..
    } = roles;
    let groups: [RestoreGroup<'_, B>; 2] = [
        (
            "actor",
            actor.params_mut().collect(),
            actor_opt,
            opt_steps[0],
        ),
        (
            "critic",
            critic.params_mut().chain([value_head]).collect(),
            critic_opt,
            opt_steps[1],
        ),
    ];
    for (role, params, opt, steps) in groups {
        opt.step = steps;
        for p in params {
            let shape = p.shape.clone();
            p.value = be.upload(
                &resume
                    .take(&format!("{role}/{}", p.name), &shape)
                    .map_err(err)?
                    .data,
            );
            if steps > 0 {
                let m = resume
                    .take(&format!("{role}.m/{}", p.name), &shape)
                    .map_err(err)?;
                let v = resume
                    .take(&format!("{role}.v/{}", p.name), &shape)
                    .map_err(err)?;
                opt.set_moments(be, &p.name, m.data, v.data);
            }
        }
    }
    Ok(())
}

/// Writes an adapter set as a PEFT adapter beside a copy of the base's
/// config and weights and the tokenizer, so the folder loads on its own.
fn write_model<B: Backend>(
    be: &B,
    policy: &mut Llama<B>,
    set: &mut AdapterSet<B>,
    cfg: &LoraConfig,
    base_dir: &Path,
    tokenizer: &Tokenizer,
    dir: &Path,
) -> Result<(), StageError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StageError::runtime(miette!("cannot create `{}`: {e}", dir.display())))?;
    for (src, name) in [
        (base_dir.join("config.json"), "config.json"),
        (base_dir.join("model.safetensors"), "model.safetensors"),
    ] {
        if !src.exists() {
            continue;
        }
        let dst = dir.join(name);
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).map_err(|e| {
                StageError::runtime(miette!("cannot copy `{}`: {e}", src.display()))
            })?;
        }
    }
    tokenizer
        .write_files(dir)
        .map_err(|e| StageError::runtime(miette!("cannot write the tokenizer: {e}")))?;
    set.with(policy, |m| lora::save(be, m, cfg, dir, "."))
        .map_err(model_err)
}

fn run<B: Backend>(be: &B, p: &PpoParams, ctx: &mut StageContext) -> StageResult {
    let sft_dir = ctx.input("actor")?.path.clone();
    let rm_dir = ctx.input("critic")?.path.clone();
    let prompts = read_prompts(&ctx.input("prompts")?.path.clone())?;
    let (mut roles, actor_cfg, mut tokenizer) = build_roles(be, p, &sft_dir, &rm_dir)?;
    tokenizer.keep_chat_template(p.chat_template);
    roles.micro_batch = ctx.exec.micro_batch.max(1) as usize;
    roles.activation_checkpointing = ctx.exec.activation_checkpointing;
    let encoded: Vec<Vec<u32>> = prompts
        .iter()
        .map(|r| dataset::encode_prompt(&tokenizer, &r.text))
        .collect::<Result<_, _>>()
        .map_err(|e| StageError::runtime(miette!("{e}")))?;
    ctx.ran.prompt_tokens = encoded.iter().map(Vec::len).max();

    let order = DataOrder::new(prompts.len(), p.batch_size as usize, p.seed)
        .map_err(|e| StageError::user(miette!("{e}")))?;
    let total = order.total_steps(u64::from(p.epochs));
    let schedule = Schedule {
        kind: ScheduleKind::Constant,
        base_lr: p.actor_lr,
        warmup_steps: 0,
        total_steps: total,
    };
    let optimizer = |cfg| match ctx.exec.offload_optimizer {
        true => AdamW::offloaded(cfg),
        false => AdamW::new(cfg),
    };
    let mut actor_opt = optimizer(AdamWConfig {
        weight_decay: 0.0,
        ..AdamWConfig::default()
    });
    let mut critic_opt = optimizer(AdamWConfig {
        weight_decay: 0.0,
        ..AdamWConfig::default()
    });
    let mut ema = Ema::start(be, roles.actor.params(), p.ema, ctx.exec.offload_optimizer);

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
            let steps: [u32; 2] = serde_json::from_value(state.extra["opt_steps"].clone())
                .map_err(|e| StageError::runtime(miette!("checkpoint state: {e}")))?;
            history = serde_json::from_value(state.extra["history"].clone())
                .map_err(|e| StageError::runtime(miette!("checkpoint state: {e}")))?;
            restore(
                be,
                &mut resume,
                &mut roles,
                [&mut actor_opt, &mut critic_opt],
                &mut ema,
                steps,
            )?;
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
        "{} prompts, {total} PPO steps of {} prompts, {} shared base(s)",
        prompts.len(),
        p.batch_size,
        if roles.value_base.is_some() { 2 } else { 1 }
    ));

    let mut guard = LossGuard {
        stage: ctx.stage.clone(),
        lr: p.actor_lr,
        max_grad_norm: Some(p.max_grad_norm),
        last_good_step: (step > 0).then_some(step),
    };
    let mut batches = order.batches(cursor, u64::from(p.epochs));
    let mut saved = step;
    while let Some(batch) = batches.next() {
        if ctx.is_cancelled() {
            if saved < step {
                save(
                    be,
                    &work,
                    &roles,
                    [&actor_opt, &critic_opt],
                    &ema,
                    step,
                    cursor,
                    schedule,
                    &history,
                )?;
            }
            metrics.finish();
            ctx.finish();
            return Ok(Outcome::Interrupted);
        }
        let chosen: Vec<Vec<u32>> = batch.indices.iter().map(|&i| encoded[i].clone()).collect();
        let opts = RolloutOptions {
            max_new_tokens: p.max_new_tokens as usize,
            temperature: p.temperature as f32,
            seed: p.seed.wrapping_mul(0x9E37_79B9).wrapping_add(step),
        };
        let rollout = roles.rollout(be, &chosen, &opts);
        ctx.ran.sequence_tokens = ctx.ran.sequence_tokens.max(Some(rollout.batch.seq));
        let scores = mixed_scores(p, &prompts, &batch.indices, &rollout, &tokenizer)?;
        let numbers = train_step(
            be,
            p,
            &mut roles,
            &rollout,
            &scores,
            [&mut actor_opt, &mut critic_opt],
            step,
            &guard,
        )?;
        ema.update(be, roles.actor.params(), p.ema as f32);
        step += 1;
        history.reward_means.push(numbers[0].1 as f32);
        history.kls.push(numbers[1].1 as f32);
        metrics
            .record(step, &numbers)
            .map_err(|e| StageError::runtime(miette::Report::new(e)))?;
        let line: Vec<String> = numbers.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        ctx.log_to_file(format!("step {step}/{total}  {}", line.join("  ")));
        cursor = batches.cursor();
        if step.is_multiple_of(p.checkpoint_every) {
            save(
                be,
                &work,
                &roles,
                [&actor_opt, &critic_opt],
                &ema,
                step,
                cursor,
                schedule,
                &history,
            )?;
            saved = step;
            guard.last_good_step = Some(step);
        }
    }
    metrics.finish();

    ctx.ran.checkpointed = saved > 0;
    let out = ctx.out_dir().to_path_buf();
    let base_dir = crate::model::load::base_dir(&sft_dir).map_err(model_err)?;
    let Roles { policy, actor, .. } = &mut roles;
    write_model(
        be,
        policy,
        actor,
        &actor_cfg,
        &base_dir,
        &tokenizer,
        &out.join("actor"),
    )?;
    if ema.is_on() {
        let mut ema_set = actor.deep_copy(be, false);
        for (q, e) in ema_set.params_mut().zip(&ema.values(be)) {
            q.value = be.upload(e);
        }
        write_model(
            be,
            policy,
            &mut ema_set,
            &actor_cfg,
            &base_dir,
            &tokenizer,
            &out.join("actor_ema"),
        )?;
    } else {
        write_model(
            be,
            policy,
            actor,
            &actor_cfg,
            &base_dir,
            &tokenizer,
            &out.join("actor_ema"),
        )?;
    }
    crate::train::lm_loop::publish_metrics(&work, &out)
        .map_err(|e| StageError::runtime(miette!("cannot copy the training metrics: {e}")))?;
    let mean = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len().max(1) as f64;
    let k = history.reward_means.len().div_ceil(4).max(1);
    let summary = json!({
        "steps": step,
        "reward_mean_first": history.reward_means.first(),
        "reward_mean_last": history.reward_means.last(),
        "reward_mean_first_quarter": mean(&history.reward_means[..k.min(history.reward_means.len())]),
        "reward_mean_last_quarter": mean(&history.reward_means[history.reward_means.len().saturating_sub(k)..]),
        "kl_last": history.kls.last(),
        "ema": p.ema,
    });
    crate::train::metrics::write_summary(&out, &summary)
        .map_err(|e| StageError::runtime(miette::Report::new(e)))?;
    ctx.log(format!("summary {summary}"));
    ctx.finish();
    Ok(Outcome::Done)
}

/// Each response's score: the reward model's, mixed with the verifiable
/// reward when `ev_weight` is set.
fn mixed_scores(
    p: &PpoParams,
    prompts: &[PromptRecord],
    indices: &[usize],
    rollout: &Rollout,
    tokenizer: &Tokenizer,
) -> Result<Vec<f32>, StageError> {
    let w = p.ev_weight;
    indices
        .iter()
        .zip(&rollout.responses)
        .zip(&rollout.scores)
        .map(|((&i, resp), &rm)| {
            if w == 0.0 {
                return Ok(rm);
            }
            let text = tokenizer.decode(resp).map_err(model_err)?;
            let rec = &prompts[i];
            let v = verifiable_reward(rec.spot.as_ref(), &rec.evs, &text, p.illegal_penalty);
            Ok(((1.0 - w) * f64::from(rm) + w * v) as f32)
        })
        .collect()
}

/// Advantages, then `ppo_epochs` updates of actor and critic on one
/// rollout. Returns the step's logged numbers, reward mean first.
#[allow(clippy::too_many_arguments)]
fn train_step<B: Backend>(
    be: &B,
    p: &PpoParams,
    roles: &mut Roles<B>,
    rollout: &Rollout,
    scores: &[f32],
    opts: [&mut AdamW<B>; 2],
    step: u64,
    guard: &LossGuard,
) -> Result<Vec<(&'static str, f64)>, StageError> {
    let [actor_opt, critic_opt] = opts;
    let n = rollout.rows.len();
    let (mut adv, mut returns) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut kl_sum = 0.0f64;
    for (span, &score) in rollout.spans.iter().zip(scores) {
        let (rewards, kl) = ppo::shaped_rewards(
            &rollout.old_logp[span.clone()],
            &rollout.ref_logp[span.clone()],
            score,
            p.kl_coef as f32,
            p.reward_clip as f32,
        );
        kl_sum += f64::from(kl);
        let (a, r) = ppo::gae(
            &rewards,
            &rollout.values[span.clone()],
            p.gamma as f32,
            p.lambda as f32,
        );
        adv.extend(a);
        returns.extend(r);
    }
    ppo::whiten(&mut adv);
    let (mut policy_loss, mut value_loss, mut clip_frac, mut grad_norm) = (0.0, 0.0, 0.0, 0.0);
    let to_err = |e: crate::train::guard::NonFinite| StageError::runtime(miette::Report::new(e));
    for epoch in 0..p.ppo_epochs {
        let pass = TrainPass {
            seed: step.wrapping_mul(31).wrapping_add(u64::from(epoch)),
            checkpoint: false,
        };
        let logp = if epoch == 0 {
            rollout.old_logp.clone()
        } else {
            roles.actor_logp(be, rollout)
        };
        let s = ppo::surrogate(&logp, &rollout.old_logp, &adv, p.clip_range as f32);
        guard
            .check_loss(step + 1, f64::from(s.loss))
            .map_err(to_err)?;
        for q in roles.actor.params_mut() {
            q.set_trainable(be, true);
        }
        roles.actor_backward(be, rollout, &s.weights, pass);
        let mut params: Vec<&mut Param<B>> = roles.actor.params_mut().collect();
        let norm = clip_grad_norm(be, &mut params, p.max_grad_norm);
        guard.check_grad_norm(step + 1, norm).map_err(to_err)?;
        actor_opt.update(be, params, p.actor_lr as f32);
        // Only one role's gradients exist at a time: the actor's go before
        // the critic's are made (the planner counts the larger of the two).
        for q in roles.actor.params_mut() {
            q.set_trainable(be, false);
        }

        for q in roles.critic.params_mut() {
            q.set_trainable(be, true);
        }
        roles.value_head.set_trainable(be, true);
        let eps = p.value_clip_range as f32;
        let vl = roles.critic_backward(be, rollout, pass, |v| {
            ppo::value_loss(v, &rollout.values, &returns, eps)
        });
        guard.check_loss(step + 1, f64::from(vl)).map_err(to_err)?;
        let Roles {
            critic, value_head, ..
        } = &mut *roles;
        let mut params: Vec<&mut Param<B>> = critic.params_mut().chain([value_head]).collect();
        let cnorm = clip_grad_norm(be, &mut params, p.max_grad_norm);
        guard.check_grad_norm(step + 1, cnorm).map_err(to_err)?;
        critic_opt.update(be, params, p.critic_lr as f32);
        for q in roles.critic.params_mut().chain([&mut roles.value_head]) {
            q.set_trainable(be, false);
        }
        policy_loss = s.loss;
        value_loss = vl;
        clip_frac = s.clip_fraction;
        grad_norm = norm;
    }
    let seqs = scores.len().max(1) as f64;
    let reward = scores.iter().map(|&s| f64::from(s)).sum::<f64>() / seqs;
    let entropy = rollout.entropy.iter().map(|&e| f64::from(e)).sum::<f64>() / n.max(1) as f64;
    let length = n as f64 / seqs;
    Ok(vec![
        ("reward", reward),
        ("kl", kl_sum / seqs),
        ("entropy", entropy),
        ("clip_fraction", f64::from(clip_frac)),
        ("policy_loss", f64::from(policy_loss)),
        ("value_loss", f64::from(value_loss)),
        ("grad_norm", grad_norm),
        ("response_tokens", length),
    ])
}
