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
use super::rl::{self, LoopEnd, LoopSettings, PLANNED_PROMPT_TOKENS, PromptRecord, RlMethod};
use super::{CAUSAL_LM, PROMPT_SET, REWARD_MODEL};
use crate::backend::{Backend, Dtype};
use crate::graph::{
    BatchDecl, ExecSettings, InputDecl, ModelOrigin, Outcome, OutputDecl, StageContext, StageError,
    StageKind, StageResult,
};
use crate::model::llama::TrainPass;
use crate::model::lora::LoraConfig;
use crate::model::memory::{
    RewardWeights, Rollout as MemoryRollout, StageMemory, Task, Trains, plan_stage,
};
use crate::model::param::Param;
use crate::model::tokenizer::Tokenizer;
use crate::train::adamw::AdamW;
use crate::train::checkpoint::{self, Resume, TensorData};
use crate::train::clip::clip_grad_norm;
use crate::train::ema::Ema;
use crate::train::guard::LossGuard;
use crate::train::policy::{Policy, Rollout, RolloutOptions};
use crate::train::ppo;
use crate::train::ppo_roles::Roles;

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

/// Builds the four roles from the SFT and reward model directories; returns
/// them with the actor's LoRA config and the tokenizer.
pub fn build_roles<B: Backend>(
    be: &B,
    p: &PpoParams,
    sft_dir: &Path,
    rm_dir: &Path,
) -> Result<(Roles<B>, LoraConfig, Tokenizer), StageError> {
    let mut loaded = rl::load_policy(be, sft_dir, p.lora_rank, p.seed, p.batch_size as usize)?;
    let (judge, critic) = rl::load_judge(be, &mut loaded, rm_dir, Some((p.lora_rank, p.seed ^ 1)))?;
    let critic = critic.ok_or_else(|| StageError::runtime(miette!("no critic was made")))?;
    let mut value_head = Param::new(be, "v_head.weight", &judge.head.to_host(be));
    value_head.set_trainable(be, true);
    let roles = Roles {
        policy: loaded.policy,
        judge,
        critic: critic.without_dropout(),
        value_head,
    };
    Ok((roles, loaded.adapter, loaded.tokenizer))
}

/// A PPO run: the roles, their optimizers and the actor's moving average.
struct PpoRun<'a, B: Backend> {
    p: &'a PpoParams,
    roles: Roles<B>,
    actor_opt: AdamW<B>,
    critic_opt: AdamW<B>,
    ema: Ema<B>,
    prompts: Vec<PromptRecord>,
    encoded: Vec<Vec<u32>>,
    tokenizer: Tokenizer,
}

impl<B: Backend> RlMethod<B> for PpoRun<'_, B> {
    fn state_tensors(&self, be: &B) -> BTreeMap<String, TensorData> {
        let mut t = BTreeMap::new();
        let roles = &self.roles;
        rl::add_trained(
            be,
            &mut t,
            "actor",
            roles.policy.actor.params(),
            &self.actor_opt,
        );
        let critic = roles.critic.params().chain([&roles.value_head]);
        rl::add_trained(be, &mut t, "critic", critic, &self.critic_opt);
        for (p, e) in roles.policy.actor.params().zip(self.ema.values(be)) {
            let shape = p.shape.clone();
            t.insert(format!("ema/{}", p.name), TensorData { shape, data: e });
        }
        t
    }

    fn optimizer_steps(&self) -> Vec<u32> {
        vec![self.actor_opt.step, self.critic_opt.step]
    }

    fn restore(&mut self, be: &B, resume: &mut Resume, steps: &[u32]) -> Result<(), StageError> {
        let &[actor_steps, critic_steps] = steps else {
            return Err(StageError::runtime(miette!(
                "checkpoint state: {} optimizer step counts, PPO has 2",
                steps.len()
            )));
        };
        let err = |e: checkpoint::CheckpointError| StageError::runtime(miette::Report::new(e));
        if self.ema.is_on() {
            let values = self
                .roles
                .policy
                .actor
                .params()
                .map(|p| {
                    resume
                        .take(&format!("ema/{}", p.name), &p.shape)
                        .map(|t| t.data)
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?;
            self.ema.restore(be, values);
        }
        let Roles {
            policy,
            critic,
            value_head,
            ..
        } = &mut self.roles;
        let actor = policy.actor.params_mut();
        rl::restore_trained(be, resume, "actor", actor, &mut self.actor_opt, actor_steps)?;
        let critic = critic.params_mut().chain([value_head]);
        rl::restore_trained(
            be,
            resume,
            "critic",
            critic,
            &mut self.critic_opt,
            critic_steps,
        )
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
        let chosen: Vec<Vec<u32>> = indices.iter().map(|&i| self.encoded[i].clone()).collect();
        let opts = RolloutOptions {
            max_new_tokens: p.max_new_tokens as usize,
            temperature: p.temperature as f32,
            seed: p.seed.wrapping_mul(0x9E37_79B9).wrapping_add(step),
        };
        let rollout = self.roles.policy.rollout(be, &chosen, &opts);
        let values = self.roles.values(be, &rollout);
        let rm_scores = self.roles.scores(be, &rollout.batch);
        ctx.ran.sequence_tokens = ctx.ran.sequence_tokens.max(Some(rollout.batch.seq));
        let scores = mixed_scores(
            p,
            &self.prompts,
            indices,
            &rollout,
            &rm_scores,
            &self.tokenizer,
        )?;
        let numbers = train_step(
            be,
            p,
            &mut self.roles,
            (&rollout, &values),
            &scores,
            [&mut self.actor_opt, &mut self.critic_opt],
            step,
            guard,
        )?;
        self.ema
            .update(be, self.roles.policy.actor.params(), p.ema as f32);
        Ok(numbers)
    }
}

fn run<B: Backend>(be: &B, p: &PpoParams, ctx: &mut StageContext) -> StageResult {
    let sft_dir = ctx.input("actor")?.path.clone();
    let rm_dir = ctx.input("critic")?.path.clone();
    let prompts = rl::read_prompts(&ctx.input("prompts")?.path.clone())?;
    let (mut roles, actor_cfg, mut tokenizer) = build_roles(be, p, &sft_dir, &rm_dir)?;
    tokenizer.keep_chat_template(p.chat_template);
    roles.policy.micro_batch = ctx.exec.micro_batch.max(1) as usize;
    roles.policy.activation_checkpointing = ctx.exec.activation_checkpointing;
    let encoded = rl::encode_prompts(ctx, &tokenizer, &prompts)?;
    let (actor_opt, critic_opt) = (rl::optimizer(ctx), rl::optimizer(ctx));
    let ema = Ema::start(
        be,
        roles.policy.actor.params(),
        p.ema,
        ctx.exec.offload_optimizer,
    );
    ctx.log(format!(
        "{} shared base(s)",
        if roles.judge.own_base.is_some() { 2 } else { 1 }
    ));
    let mut run = PpoRun {
        p,
        roles,
        actor_opt,
        critic_opt,
        ema,
        prompts,
        encoded,
        tokenizer,
    };
    let settings = LoopSettings {
        prompts: run.prompts.len(),
        batch_size: p.batch_size,
        epochs: p.epochs,
        seed: p.seed,
        lr: p.actor_lr,
        max_grad_norm: p.max_grad_norm,
        checkpoint_every: p.checkpoint_every,
        max_steps: None,
    };
    let LoopEnd::Done {
        steps,
        history,
        checkpointed,
    } = rl::drive(be, ctx, &mut run, &settings, "PPO")?
    else {
        return Ok(Outcome::Interrupted);
    };
    ctx.ran.checkpointed = checkpointed;
    let out = ctx.out_dir().to_path_buf();
    let base_dir = crate::model::load::base_dir(&sft_dir).map_err(rl::model_err)?;
    let PpoRun {
        roles,
        ema,
        tokenizer,
        ..
    } = &mut run;
    let Policy { base, actor, .. } = &mut roles.policy;
    let write = |base: &mut _, set: &mut _, name: &str| {
        rl::write_model(
            be,
            base,
            set,
            &actor_cfg,
            &base_dir,
            tokenizer,
            &out.join(name),
        )
    };
    write(base, actor, "actor")?;
    if ema.is_on() {
        let mut ema_set = actor.deep_copy(be, false);
        for (q, e) in ema_set.params_mut().zip(&ema.values(be)) {
            q.value = be.upload(e);
        }
        write(base, &mut ema_set, "actor_ema")?;
    } else {
        write(base, actor, "actor_ema")?;
    }
    let mut summary = history.summary(steps);
    summary["ema"] = json!(p.ema);
    rl::publish(ctx, &summary)?;
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
    rm_scores: &[f32],
    tokenizer: &Tokenizer,
) -> Result<Vec<f32>, StageError> {
    let w = p.ev_weight;
    indices
        .iter()
        .zip(&rollout.responses)
        .zip(rm_scores)
        .map(|((&i, resp), &rm)| {
            if w == 0.0 {
                return Ok(rm);
            }
            let text = tokenizer.decode(resp).map_err(rl::model_err)?;
            let rec = &prompts[i];
            let v = rl::verifiable_reward(rec.spot.as_ref(), &rec.evs, &text, p.illegal_penalty);
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
    (rollout, values): (&Rollout, &[f32]),
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
            &values[span.clone()],
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
            roles.policy.actor_logp(be, rollout)
        };
        let s = ppo::surrogate(&logp, &rollout.old_logp, &adv, p.clip_range as f32);
        guard
            .check_loss(step + 1, f64::from(s.loss))
            .map_err(to_err)?;
        // Only one role's gradients exist at a time: the actor's go before
        // the critic's are made (the planner counts the larger of the two).
        let norm = rl::update_actor(
            be,
            &mut roles.policy,
            (rollout, &s.weights),
            pass,
            actor_opt,
            (p.actor_lr, p.max_grad_norm),
            (guard, step + 1),
        )?;

        for q in roles.critic.params_mut() {
            q.set_trainable(be, true);
        }
        roles.value_head.set_trainable(be, true);
        let eps = p.value_clip_range as f32;
        let vl = roles.critic_backward(be, rollout, pass, |v| {
            ppo::value_loss(v, values, &returns, eps)
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
    let (entropy, length) = rollout.entropy_and_length();
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
