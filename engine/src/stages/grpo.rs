//! `grpo`: group relative policy optimisation (DeepSeekMath) of the SFT
//! policy with a verifiable reward. Each step samples `group_size` answers
//! to each of a batch of prompts, scores every answer (the poker expert's
//! EV regret, legality, and optionally a reward model's score), normalises
//! the scores within each prompt's group into advantages, and updates the
//! actor's adapter with PPO's clipped ratio plus a k3 KL penalty to the
//! frozen SFT policy. No critic and no value head: one shared base under
//! the actor's and the reference's adapters (and a reward model's, when
//! one is asked for). Resumable to the same result, like every training
//! stage.

use std::collections::BTreeMap;
use std::path::Path;

use miette::miette;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::device::{RunOnBackend, run_on_device};
use super::rl::{self, LoopEnd, LoopSettings, PLANNED_PROMPT_TOKENS, PromptRecord, RlMethod};
use super::{CAUSAL_LM, PROMPT_SET, REWARD_MODEL};
use crate::backend::{Backend, Dtype};
use crate::graph::{
    BatchDecl, ExecSettings, InputDecl, ModelOrigin, Outcome, OutputDecl, StageContext, StageError,
    StageKind, StageResult,
};
use crate::model::llama::TrainPass;
use crate::model::memory::{
    RewardWeights, Rollout as MemoryRollout, StageMemory, Task, Trains, plan_stage,
};
use crate::model::tokenizer::Tokenizer;
use crate::poker::spot::parse_answer;
use crate::train::adamw::AdamW;
use crate::train::checkpoint::{Resume, TensorData};
use crate::train::grpo::{self, RewardScale};
use crate::train::guard::LossGuard;
use crate::train::policy::{Judge, Policy, Rollout, RolloutOptions};

/// Parameters of a `grpo` stage. Defaults follow DeepSeekMath's GRPO and
/// TRL's GRPOTrainer where they agree (8 answers per prompt, clip 0.2, one
/// update per roll-out), with DeepSeekMath's KL coefficient 0.04.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpoParams {
    /// The SFT model (`sft` or `sft.model`): the actor continues its
    /// adapter (or a fresh one on a full fine-tune) and the SFT policy
    /// stays, frozen, as the reference.
    pub actor: String,
    /// Prompts to answer (`data.prompts`); poker-data's carry the spot and
    /// the EV of every answer, which the verifiable reward reads.
    pub prompts: String,
    /// A reward stage whose score is mixed in with `reward_weight`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_model: Option<String>,
    /// Answers sampled per prompt: the group its advantages are taken in.
    #[serde(default = "defaults::group_size")]
    #[schemars(range(min = 2, max = 256))]
    pub group_size: u32,
    /// Prompts per step; a step trains on `batch_size * group_size` answers.
    #[serde(default = "defaults::batch_size")]
    #[schemars(range(min = 1, max = 4096))]
    pub batch_size: u32,
    /// Learning rate of the actor's adapter (constant).
    #[serde(default = "defaults::lr")]
    #[schemars(range(min = 0.0))]
    pub lr: f64,
    /// Passes over the prompt file.
    #[serde(default = "defaults::one")]
    #[schemars(range(min = 1, max = 100))]
    pub epochs: u32,
    /// Stop after this many steps, before the epochs are through (each
    /// step answers `batch_size` prompts `group_size` times).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_steps: Option<u64>,
    /// Updates on each roll-out (GRPO's mu); the first is on-policy.
    #[serde(default = "defaults::one")]
    #[schemars(range(min = 1, max = 16))]
    pub iterations: u32,
    /// Coefficient of the k3 KL penalty to the reference, in the loss.
    #[serde(default = "defaults::beta")]
    #[schemars(range(min = 0.0))]
    pub beta: f64,
    /// Clip range of the probability ratio.
    #[serde(default = "defaults::clip")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub clip_range: f64,
    /// What each group's centred scores are divided by: `group`, its own
    /// standard deviation (the paper's advantage); `batch`, the standard
    /// deviation of the step's scores (TRL's `"batch"`); `none`, nothing,
    /// so they stay in reward units (Dr. GRPO). `true` and `false` mean
    /// `group` and `none`.
    #[serde(default = "defaults::scale_rewards")]
    #[schemars(with = "grpo::ScaleRewards")]
    pub scale_rewards: RewardScale,
    /// Weight of the expert's verifiable reward: minus the answer's EV
    /// regret in big blinds, `-illegal_penalty` when it is not a legal
    /// action.
    #[serde(default = "defaults::weight")]
    #[schemars(range(min = 0.0))]
    pub ev_weight: f64,
    /// Weight of legality: 1 for a legal action, 0 otherwise.
    #[serde(default = "defaults::weight")]
    #[schemars(range(min = 0.0))]
    pub legal_weight: f64,
    /// Weight of `reward_model`'s score.
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub reward_weight: f64,
    /// The verifiable reward of an answer that is not a legal action is
    /// `-illegal_penalty`.
    #[serde(default = "defaults::illegal_penalty")]
    #[schemars(range(min = 0.0))]
    pub illegal_penalty: f64,
    /// Tokens sampled per answer.
    #[serde(default = "defaults::max_new_tokens")]
    #[schemars(range(min = 1, max = 4096))]
    pub max_new_tokens: u32,
    /// Sampling temperature of roll-outs. The log-probabilities that the
    /// ratio, the KL and the update read are the untempered policy's (the
    /// one that plays, greedily), so a temperature above 1 only explores:
    /// more groups whose answers differ, and so fewer that teach nothing
    /// (`zero_spread_groups` in the metrics).
    #[serde(default = "defaults::temperature")]
    #[schemars(range(min = 0.01, max = 10.0))]
    pub temperature: f64,
    /// Global gradient-norm clip.
    #[serde(default = "defaults::max_grad_norm")]
    #[schemars(range(min = 0.0))]
    pub max_grad_norm: f64,
    /// LoRA rank of the adapter added when the SFT model has none.
    #[serde(default = "defaults::lora_rank")]
    #[schemars(range(min = 1, max = 1024))]
    pub lora_rank: u32,
    #[serde(default = "defaults::seed")]
    pub seed: u64,
    /// Steps between checkpoints (resume points); Ctrl-C saves one too.
    /// Not part of the stage hash.
    #[serde(default = "defaults::checkpoint_every")]
    #[schemars(range(min = 1))]
    pub checkpoint_every: u64,
    /// Render prompts in the model's chat template when it has one; `false`
    /// sends them bare.
    #[serde(
        default = "super::chat_template_on",
        skip_serializing_if = "super::is_chat_template_on"
    )]
    pub chat_template: bool,
    /// Storage of frozen weights: `bf16` or `f32`. The pipeline's
    /// `model.dtype` when left out; f32 when neither says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<Dtype>,
}

mod defaults {
    pub fn group_size() -> u32 {
        8
    }
    pub fn batch_size() -> u32 {
        8
    }
    pub fn lr() -> f64 {
        1e-6
    }
    pub fn one() -> u32 {
        1
    }
    pub fn beta() -> f64 {
        0.04
    }
    pub fn clip() -> f64 {
        0.2
    }
    pub fn scale_rewards() -> super::RewardScale {
        super::RewardScale::Group
    }
    pub fn weight() -> f64 {
        1.0
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
    pub fn seed() -> u64 {
        1
    }
    /// As PPO's: a checkpoint of one adapter with its AdamW moments is a
    /// third of PPO's, and a step costs about as much.
    pub fn checkpoint_every() -> u64 {
        100
    }
}

/// The `grpo` stage kind.
pub struct Grpo;

impl StageKind for Grpo {
    type Params = GrpoParams;
    const NAME: &'static str = "grpo";
    const VERSION: u32 = 1;
    const DTYPE_FIELD: Option<&'static str> = Some("dtype");
    const DESCRIPTION: &'static str = "RL with GRPO: groups of sampled answers scored by the poker expert (and optionally a reward model), group-normalised advantages, KL to the SFT policy, no critic.";

    fn outputs(&self, _: &GrpoParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("model", CAUSAL_LM, "actor")]
    }

    fn inputs(&self, p: &GrpoParams) -> Vec<InputDecl> {
        let mut inputs = vec![
            InputDecl::stage("actor", &p.actor, &[CAUSAL_LM]),
            InputDecl::stage("prompts", &p.prompts, &[PROMPT_SET]),
        ];
        if let Some(rm) = &p.reward_model {
            inputs.push(InputDecl::stage("reward_model", rm, &[REWARD_MODEL]));
        }
        inputs
    }

    fn semantic_config(&self, p: &GrpoParams) -> Value {
        super::training_config(p)
    }

    fn model_origin(&self, _: &GrpoParams) -> ModelOrigin {
        ModelOrigin::Input("actor")
    }

    /// A step's answers go through generation and training in the preset's
    /// micro-batches.
    fn global_batch(&self, p: &GrpoParams) -> Option<BatchDecl> {
        Some(BatchDecl {
            field: "batch_size".into(),
            size: p.batch_size.saturating_mul(p.group_size),
        })
    }

    /// One shared base under the actor (the SFT adapter continued, or a
    /// fresh one of `lora_rank`), the reference (the SFT adapter frozen, or
    /// the bare base) and, with `reward_model`, the reward model's adapter
    /// and head (or its own base when it was fully fine-tuned).
    fn memory(&self, p: &GrpoParams, exec: &ExecSettings) -> StageMemory {
        let Some(model) = &exec.base_model else {
            return StageMemory::NotApplicable;
        };
        let upstream = |field: &str| match exec.input_adapters.get(field) {
            Some(lora @ Trains::Lora { .. }) => Some(lora.clone()),
            _ => None,
        };
        let (actor, reference) = match upstream("actor") {
            Some(lora) => (lora.clone(), lora),
            None => (Trains::lora_all(p.lora_rank as usize), Trains::Nothing),
        };
        let reward = p
            .reward_model
            .as_ref()
            .map(|_| match upstream("reward_model") {
                Some(lora) => (RewardWeights::Adapter, lora),
                None => (RewardWeights::OwnBase, Trains::Nothing),
            });
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
            Task::Grpo {
                reference,
                reward,
                rollout,
            },
            actor,
            exec.ran
                .and_then(|ran| ran.sequence_tokens)
                .unwrap_or(rollout.prompt_len + rollout.new_tokens),
            exec,
            RunOnBackend::dtype(self, p),
        )
    }

    fn check(&self, p: &GrpoParams) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        match (&p.reward_model, p.reward_weight > 0.0) {
            (None, true) => problems.push((
                "reward_weight".into(),
                "a reward weight needs a `reward_model` (a reward stage) to score with".into(),
            )),
            (Some(_), false) => problems.push((
                "reward_model".into(),
                "the reward model would be loaded and never read: set `reward_weight` above 0, or drop `reward_model`".into(),
            )),
            _ => {}
        }
        if p.ev_weight == 0.0 && p.legal_weight == 0.0 && p.reward_weight == 0.0 {
            problems.push((
                "ev_weight".into(),
                "every reward weight is 0, so every answer scores the same and nothing is learned"
                    .into(),
            ));
        }
        problems
    }

    fn run(&self, p: &GrpoParams, ctx: &mut StageContext) -> StageResult {
        run_on_device(self, p, ctx)
    }
}

impl RunOnBackend for Grpo {
    fn dtype(&self, params: &GrpoParams) -> Dtype {
        params.dtype.unwrap_or_default()
    }

    fn run_on<B: Backend>(&self, be: &B, p: &GrpoParams, ctx: &mut StageContext) -> StageResult {
        run(be, p, ctx)
    }
}

/// One answer's reward, part by part.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    /// The expert's verifiable reward (see [`rl::verifiable_reward`]).
    pub ev: f64,
    /// Whether the answer is a legal action of the prompt's spot.
    pub legal: bool,
    /// The reward model's score (0 without one).
    pub model: f64,
}

impl Score {
    /// Scores `answer` to a prompt; `model` is the reward model's score.
    pub fn of(record: &PromptRecord, answer: &str, penalty: f64, model: f64) -> Self {
        let ev = rl::verifiable_reward(record.spot.as_ref(), &record.evs, answer, penalty);
        let legal = record
            .spot
            .as_ref()
            .is_some_and(|spot| parse_answer(spot, answer).is_ok());
        Score { ev, legal, model }
    }

    /// The weighted sum the advantages are made of.
    pub fn total(&self, p: &GrpoParams) -> f32 {
        let legal = if self.legal { 1.0 } else { 0.0 };
        (p.ev_weight * self.ev + p.legal_weight * legal + p.reward_weight * self.model) as f32
    }
}

/// A GRPO run: the policy (and a judge), the actor's optimizer, the prompts.
struct GrpoRun<'a, B: Backend> {
    p: &'a GrpoParams,
    policy: Policy<B>,
    judge: Option<Judge<B>>,
    opt: AdamW<B>,
    prompts: Vec<PromptRecord>,
    encoded: Vec<Vec<u32>>,
    tokenizer: Tokenizer,
}

impl<B: Backend> GrpoRun<'_, B> {
    /// Every answer's score, in roll-out order (`indices[i / group]`'s
    /// prompt for answer `i`).
    fn scores(
        &mut self,
        be: &B,
        indices: &[usize],
        rollout: &Rollout,
    ) -> Result<Vec<Score>, StageError> {
        let model = match &mut self.judge {
            Some(judge) => judge.scores(
                be,
                &mut self.policy.base,
                &rollout.batch,
                self.policy.micro_batch,
            ),
            None => vec![0.0; rollout.responses.len()],
        };
        let group = self.p.group_size as usize;
        rollout
            .responses
            .iter()
            .zip(model)
            .enumerate()
            .map(|(i, (response, model))| {
                let text = self.tokenizer.decode(response).map_err(rl::model_err)?;
                let record = &self.prompts[indices[i / group]];
                Ok(Score::of(
                    record,
                    &text,
                    self.p.illegal_penalty,
                    f64::from(model),
                ))
            })
            .collect()
    }
}

impl<B: Backend> RlMethod<B> for GrpoRun<'_, B> {
    fn state_tensors(&self, be: &B) -> BTreeMap<String, TensorData> {
        let mut t = BTreeMap::new();
        rl::add_trained(be, &mut t, "actor", self.policy.actor.params(), &self.opt);
        t
    }

    fn optimizer_steps(&self) -> Vec<u32> {
        vec![self.opt.step]
    }

    fn restore(&mut self, be: &B, resume: &mut Resume, steps: &[u32]) -> Result<(), StageError> {
        let &[steps] = steps else {
            return Err(StageError::runtime(miette!(
                "checkpoint state: {} optimizer step counts, GRPO has 1",
                steps.len()
            )));
        };
        let actor = self.policy.actor.params_mut();
        rl::restore_trained(be, resume, "actor", actor, &mut self.opt, steps)
    }

    fn step(
        &mut self,
        be: &B,
        ctx: &mut StageContext,
        indices: &[usize],
        step: u64,
        guard: &LossGuard,
    ) -> Result<Vec<(&'static str, f64)>, StageError> {
        let p = self.p;
        let group = p.group_size as usize;
        let chosen: Vec<Vec<u32>> = indices
            .iter()
            .flat_map(|&i| std::iter::repeat_n(&self.encoded[i], group).cloned())
            .collect();
        let opts = RolloutOptions {
            max_new_tokens: p.max_new_tokens as usize,
            temperature: p.temperature as f32,
            seed: p.seed.wrapping_mul(0x9E37_79B9).wrapping_add(step),
        };
        let rollout = self.policy.rollout(be, &chosen, &opts);
        ctx.ran.sequence_tokens = ctx.ran.sequence_tokens.max(Some(rollout.batch.seq));
        let parts = self.scores(be, indices, &rollout)?;
        let scores: Vec<f32> = parts.iter().map(|s| s.total(p)).collect();
        let answer_adv = grpo::group_advantages(&scores, group, p.scale_rewards);
        let mut adv = Vec::with_capacity(rollout.rows.len());
        for (span, &a) in rollout.spans.iter().zip(&answer_adv) {
            adv.extend(std::iter::repeat_n(a, span.len()));
        }
        let to_err =
            |e: crate::train::guard::NonFinite| StageError::runtime(miette::Report::new(e));
        let (mut last, mut grad_norm) = (None, 0.0);
        for iteration in 0..p.iterations {
            let pass = TrainPass {
                seed: step.wrapping_mul(31).wrapping_add(u64::from(iteration)),
                checkpoint: false,
            };
            let logp = if iteration == 0 {
                rollout.old_logp.clone()
            } else {
                self.policy.actor_logp(be, &rollout)
            };
            let loss = grpo::loss(
                &logp,
                &rollout.old_logp,
                &rollout.ref_logp,
                &adv,
                p.clip_range as f32,
                p.beta as f32,
            );
            guard
                .check_loss(step + 1, f64::from(loss.loss))
                .map_err(to_err)?;
            grad_norm = rl::update_actor(
                be,
                &mut self.policy,
                (&rollout, &loss.weights),
                pass,
                &mut self.opt,
                (p.lr, p.max_grad_norm),
                (guard, step + 1),
            )?;
            last = Some(loss);
        }
        let loss = last.ok_or_else(|| StageError::runtime(miette!("no GRPO iteration ran")))?;
        let n = parts.len().max(1) as f64;
        let mean = |f: &dyn Fn(&Score) -> f64| parts.iter().map(f).sum::<f64>() / n;
        let kl: f64 = rollout
            .old_logp
            .iter()
            .zip(&rollout.ref_logp)
            .map(|(&l, &r)| f64::from(l - r))
            .sum::<f64>()
            / n;
        let reward = scores.iter().map(|&s| f64::from(s)).sum::<f64>() / n;
        let (entropy, length) = rollout.entropy_and_length();
        let mut figures = vec![
            ("reward", reward),
            ("kl", kl),
            ("entropy", entropy),
            ("clip_fraction", f64::from(loss.clip_fraction)),
            ("policy_loss", f64::from(loss.loss)),
            ("grad_norm", grad_norm),
            ("response_tokens", length),
            ("legal", mean(&|s| f64::from(u8::from(s.legal)))),
            ("ev_reward", mean(&|s| s.ev)),
            ("kl_k3", f64::from(loss.kl)),
            (
                "zero_spread_groups",
                grpo::zero_spread_share(&scores, group),
            ),
        ];
        if self.judge.is_some() {
            figures.push(("model_score", mean(&|s| s.model)));
        }
        Ok(figures)
    }
}

fn run<B: Backend>(be: &B, p: &GrpoParams, ctx: &mut StageContext) -> StageResult {
    let sft_dir = ctx.input("actor")?.path.clone();
    let prompts = rl::read_prompts(&ctx.input("prompts")?.path.clone())?;
    if p.reward_model.is_none() && prompts.iter().all(|r| r.spot.is_none()) {
        return Err(StageError::user(miette!(
            help = "give the stage a `reward_model` (and a `reward_weight`), or prompts from a poker-data stage",
            "none of the prompts carries a poker spot, so the expert cannot score an answer and GRPO has no reward"
        )));
    }
    let micro = ctx.exec.micro_batch.max(1) as usize;
    let mut loaded = rl::load_policy(be, &sft_dir, p.lora_rank, p.seed, micro)?;
    loaded.policy.activation_checkpointing = ctx.exec.activation_checkpointing;
    let judge = match &p.reward_model {
        Some(_) => {
            let rm_dir = ctx.input("reward_model")?.path.clone();
            Some(rl::load_judge(be, &mut loaded, &rm_dir, None)?.0)
        }
        None => None,
    };
    loaded.tokenizer.keep_chat_template(p.chat_template);
    let encoded = rl::encode_prompts(ctx, &loaded.tokenizer, &prompts)?;
    let opt = rl::optimizer(ctx);
    let adapter = loaded.adapter;
    let base_dir = loaded.base_dir;
    let mut run = GrpoRun {
        p,
        policy: loaded.policy,
        judge,
        opt,
        prompts,
        encoded,
        tokenizer: loaded.tokenizer,
    };
    let settings = LoopSettings {
        prompts: run.prompts.len(),
        batch_size: p.batch_size,
        epochs: p.epochs,
        seed: p.seed,
        lr: p.lr,
        max_grad_norm: p.max_grad_norm,
        checkpoint_every: p.checkpoint_every,
        max_steps: p.max_steps,
    };
    let LoopEnd::Done {
        steps,
        history,
        checkpointed,
    } = rl::drive(be, ctx, &mut run, &settings, "GRPO")?
    else {
        return Ok(Outcome::Interrupted);
    };
    ctx.ran.checkpointed = checkpointed;
    let out = ctx.out_dir().join("actor");
    let Policy { base, actor, .. } = &mut run.policy;
    rl::write_model(be, base, actor, &adapter, &base_dir, &run.tokenizer, &out)?;
    let mut summary = history.summary(steps);
    summary["group_size"] = json!(p.group_size);
    rl::publish(ctx, &summary)?;
    ctx.finish();
    Ok(Outcome::Done)
}
