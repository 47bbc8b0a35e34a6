//! `sft`: supervised fine-tuning on `{"prompt", "response"}` examples, the
//! first step of the recipe. LoRA (the default, the recipe's rank 128, alpha
//! 256, lr 5e-4, 3 epochs) or full fine-tuning (lr 2e-5); the prompt is
//! masked from the loss, so the model learns to answer, not to ask.
//!
//! The base is a pretrained model (`hf:org/repo` or a directory) or random
//! weights from an inline architecture plus a `tokenizer` stage's output
//! (the tiny pipeline). Outputs are what transformers and peft read: a full
//! or random-init run writes config.json + model.safetensors +
//! tokenizer.json; a LoRA run writes the PEFT adapter (pointing at the base
//! directory) + tokenizer.json. Both add metrics.jsonl and summary.json.
//!
//! Micro-batch and gradient accumulation come from the memory preset
//! (`ctx.exec`), never from the params, so they never change the hash; the
//! data order and loss normalisation do not depend on them either.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::device::{RunOnBackend, run_on_device};
use super::tokenizer::SpecialTokens;
use super::{CAUSAL_LM, SFT_DATASET, TOKENIZER};
use crate::backend::{Backend, Dtype};
use crate::graph::{
    BatchDecl, ExecSettings, InputDecl, ModelOrigin, Outcome, OutputDecl, StageContext, StageError,
    StageKind, StageResult,
};
use crate::model::llama::{PROJECTIONS, TrainPass};
use crate::model::lora::{self, LoraConfig};
use crate::model::memory::{StageMemory, Task, Trains, plan_stage};
use crate::model::source::{self, ResolveOptions};
use crate::model::{Llama, LlamaConfig, Tokenizer};
use crate::spec::ModelDefaults;
use crate::train::dataset::{self, Example};
use crate::train::lm_loop::{
    self, LoopEnd, LoopError, LoopSettings, MicroStats, Objective, OptimParams,
};
use crate::train::metrics::write_summary;
use crate::train::progress::ProgressMode;

/// Where the weights to fine-tune come from.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum BaseModel {
    /// A pretrained model: `{base: "hf:org/repo" | "path/to/dir"}`.
    Pretrained(ModelDefaults),
    /// Random weights of this architecture (needs `tokenizer`).
    Random(RandomInit),
}

/// Random initialisation (normal, std 0.02; norms 1) of a LLaMA.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RandomInit {
    pub random: Architecture,
}

/// The numbers of a LLaMA's config.json that a random model needs; the
/// vocabulary and special tokens come from the tokenizer.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    #[schemars(range(min = 1))]
    pub hidden_size: usize,
    #[schemars(range(min = 1))]
    pub intermediate_size: usize,
    #[schemars(range(min = 1))]
    pub num_hidden_layers: usize,
    #[schemars(range(min = 1))]
    pub num_attention_heads: usize,
    /// Grouped-query attention; defaults to `num_attention_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    #[serde(default = "Architecture::max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default = "Architecture::rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "Architecture::tie_word_embeddings")]
    pub tie_word_embeddings: bool,
}

impl Architecture {
    fn max_position_embeddings() -> usize {
        512
    }
    fn rope_theta() -> f64 {
        10000.0
    }
    fn tie_word_embeddings() -> bool {
        true
    }

    /// config.json of `LlamaForCausalLM` with this architecture.
    pub fn config_json(&self, special: &SpecialTokens) -> serde_json::Value {
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": special.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            "max_position_embeddings": self.max_position_embeddings,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": 1e-5,
            "hidden_act": "silu",
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": special.bos_token_id,
            "eos_token_id": special.eos_token_id,
            "pad_token_id": special.pad_token_id,
            "torch_dtype": "float32",
        })
    }
}

/// A base model `run` could not find: a malformed source, or a local folder
/// or GGUF file that is not there (hub models are checked when they are fetched).
fn check_base(base: &str) -> Option<(String, String)> {
    match source::parse(base) {
        Err(e) => Some(("base".into(), e.to_string())),
        Ok(source::ModelSource::Local(dir)) if !dir.is_dir() => Some((
            "base".into(),
            format!(
                "base model folder `{}` does not exist (paths are relative to the working directory)",
                dir.display()
            ),
        )),
        Ok(source::ModelSource::Gguf(file)) if !file.is_file() => Some((
            "base".into(),
            format!(
                "base model GGUF `{}` {} (paths are relative to the working directory)",
                file.display(),
                if file.exists() {
                    "is not a regular file"
                } else {
                    "does not exist"
                }
            ),
        )),
        Ok(_) => None,
    }
}

impl Architecture {
    /// Shapes a LLaMA cannot have: heads that do not split the hidden size
    /// into even head dimensions, key/value heads that do not group the
    /// query heads.
    fn check(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let heads = self.num_attention_heads.max(1);
        if !self.hidden_size.is_multiple_of(heads) || !(self.hidden_size / heads).is_multiple_of(2)
        {
            out.push((
                "base.random.num_attention_heads".into(),
                format!(
                    "{} attention heads do not split hidden_size {} into heads of an even size",
                    self.num_attention_heads, self.hidden_size
                ),
            ));
        }
        if let Some(kv) = self.num_key_value_heads
            && (kv == 0 || !heads.is_multiple_of(kv))
        {
            out.push((
                "base.random.num_key_value_heads".into(),
                format!("{kv} key/value heads do not divide {heads} attention heads"),
            ));
        }
        out
    }
}

/// LoRA or full fine-tuning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Low-rank adapters on the projections; the base stays frozen.
    #[default]
    Lora,
    /// Every weight is trained.
    Full,
}

/// LoRA settings (PEFT's names).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoraParams {
    #[serde(default = "LoraParams::rank")]
    #[schemars(range(min = 1, max = 1024))]
    pub rank: usize,
    #[serde(default = "LoraParams::alpha")]
    pub alpha: f32,
    #[serde(default = "LoraParams::dropout")]
    #[schemars(range(min = 0.0, max = 0.99))]
    pub dropout: f32,
    /// Projections to adapt: q_proj, k_proj, v_proj, o_proj, gate_proj,
    /// up_proj, down_proj.
    #[serde(default = "LoraParams::targets")]
    pub targets: Vec<String>,
}

impl LoraParams {
    fn rank() -> usize {
        128
    }
    fn alpha() -> f32 {
        256.0
    }
    fn dropout() -> f32 {
        0.05
    }
    fn targets() -> Vec<String> {
        PROJECTIONS.iter().map(|s| s.to_string()).collect()
    }

    fn config(&self) -> LoraConfig {
        LoraConfig {
            rank: self.rank,
            alpha: self.alpha,
            dropout: self.dropout,
            targets: self.targets.clone(),
            rslora: false,
        }
    }
}

impl Default for LoraParams {
    fn default() -> Self {
        LoraParams {
            rank: Self::rank(),
            alpha: Self::alpha(),
            dropout: Self::dropout(),
            targets: Self::targets(),
        }
    }
}

/// Parameters of an `sft` stage.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SftParams {
    /// Training examples: `data.sft`.
    pub data: String,
    /// The model to fine-tune (the pipeline's `model:` when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseModel>,
    /// A tokenizer stage: required with random init; replaces a pretrained
    /// base's tokenizer otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    #[serde(default)]
    pub method: Method,
    /// Used when `method: lora`.
    #[serde(default)]
    pub lora: LoraParams,
    /// Learning rate default: 5e-4 for LoRA, 2e-5 for full fine-tuning.
    #[serde(default)]
    pub optim: OptimParams,
    /// Examples per optimizer step (micro-batch x accumulation, from the preset).
    #[serde(default = "SftParams::batch_size")]
    #[schemars(range(min = 1, max = 4096))]
    pub batch_size: u32,
    #[serde(default = "SftParams::epochs")]
    #[schemars(range(min = 1, max = 1000))]
    pub epochs: u64,
    /// Longer examples lose the start of their prompt.
    #[serde(default = "SftParams::max_seq_len")]
    #[schemars(range(min = 2, max = 131072))]
    pub max_seq_len: usize,
    /// Seeds the data order, LoRA init, dropout and random weights.
    #[serde(default)]
    pub seed: u64,
    /// Optimizer steps between checkpoints (resume points).
    #[serde(default = "SftParams::checkpoint_every")]
    #[schemars(range(min = 1, max = 1000000000))]
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

impl SftParams {
    fn batch_size() -> u32 {
        8
    }
    fn epochs() -> u64 {
        3
    }
    fn max_seq_len() -> usize {
        512
    }
    fn checkpoint_every() -> u64 {
        50
    }

    fn lr(&self) -> f64 {
        self.optim.lr.unwrap_or(match self.method {
            Method::Lora => 5e-4,
            Method::Full => 2e-5,
        })
    }
}

/// The `sft` stage kind.
pub struct Sft;

impl StageKind for Sft {
    type Params = SftParams;
    const NAME: &'static str = "sft";
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str =
        "Supervised fine-tuning (LoRA or full) with the prompt masked from the loss.";
    const MODEL_FIELD: Option<&'static str> = Some("base");
    const DTYPE_FIELD: Option<&'static str> = Some("dtype");

    fn outputs(&self, _: &SftParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("model", CAUSAL_LM, "")]
    }

    fn inputs(&self, params: &SftParams) -> Vec<InputDecl> {
        let mut inputs = vec![InputDecl::stage("data", &params.data, &[SFT_DATASET])];
        if let Some(tok) = &params.tokenizer {
            inputs.push(InputDecl::stage("tokenizer", tok, &[TOKENIZER]));
        }
        inputs
    }

    fn semantic_config(&self, params: &SftParams) -> serde_json::Value {
        super::training_config(params)
    }

    fn global_batch(&self, params: &SftParams) -> Option<BatchDecl> {
        Some(BatchDecl {
            field: "batch_size".into(),
            size: params.batch_size,
        })
    }

    /// A random-init model's vocabulary comes from its tokenizer stage,
    /// which has not run yet: it is planned at the bound that stage trains
    /// to.
    fn model_origin(&self, params: &SftParams) -> ModelOrigin {
        match (&params.base, &params.tokenizer) {
            (Some(BaseModel::Pretrained(base)), _) => ModelOrigin::Pretrained(base.base.clone()),
            (Some(BaseModel::Random(init)), Some(_)) => ModelOrigin::Random {
                config: init.random.config_json(&SpecialTokens {
                    bos_token_id: 0,
                    eos_token_id: 0,
                    pad_token_id: 0,
                    vocab_size: 0,
                }),
                vocabulary: "tokenizer",
            },
            _ => ModelOrigin::Unknown,
        }
    }

    fn output_adapter(
        &self,
        params: &SftParams,
        _: &std::collections::BTreeMap<String, Trains>,
    ) -> Option<Trains> {
        match (params.method, &params.base) {
            (Method::Lora, Some(BaseModel::Pretrained(_))) => Some(Trains::Lora {
                rank: params.lora.rank,
                targets: params.lora.targets.clone(),
            }),
            _ => None,
        }
    }

    /// A pretrained base is planned from its config.json (local, cached or
    /// one small download), a random one from its architecture (see
    /// `model_origin`).
    fn memory(&self, params: &SftParams, exec: &ExecSettings) -> StageMemory {
        let Some(model) = &exec.base_model else {
            return StageMemory::NotApplicable;
        };
        let trains = match params.method {
            Method::Lora => Trains::Lora {
                rank: params.lora.rank,
                targets: params.lora.targets.clone(),
            },
            Method::Full => Trains::Full,
        };
        plan_stage(
            model,
            Path::new("."),
            Task::Sft,
            trains,
            params.max_seq_len,
            exec,
            RunOnBackend::dtype(self, params),
        )
    }

    fn check(&self, params: &SftParams) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match &params.base {
            None => out.push((
                "base".into(),
                "no base model: set `base` (or the pipeline's `model`)".into(),
            )),
            Some(BaseModel::Random(_)) if params.tokenizer.is_none() => out.push((
                "tokenizer".into(),
                "random init needs a `tokenizer` stage to set the vocabulary".into(),
            )),
            Some(BaseModel::Random(_)) if params.method == Method::Lora => out.push((
                "method".into(),
                "LoRA on random weights learns little: use `method: full`".into(),
            )),
            Some(BaseModel::Random(init)) => out.extend(init.random.check()),
            Some(BaseModel::Pretrained(base)) => out.extend(check_base(&base.base)),
        }
        if params.method == Method::Lora
            && let Err(e) = params.lora.config().check(Path::new("lora"))
        {
            out.push(("lora".into(), e.to_string()));
        }
        out
    }

    fn run(&self, params: &SftParams, ctx: &mut StageContext) -> StageResult {
        run_on_device(self, params, ctx)
    }
}

impl RunOnBackend for Sft {
    fn dtype(&self, params: &SftParams) -> Dtype {
        let base = match &params.base {
            Some(BaseModel::Pretrained(model)) => model.dtype,
            _ => None,
        };
        params.dtype.or(base).unwrap_or_default()
    }

    fn run_on<B: Backend>(
        &self,
        be: &B,
        params: &SftParams,
        ctx: &mut StageContext,
    ) -> StageResult {
        run_sft(be, params, ctx)
    }
}

/// A runtime stage error from any diagnostic.
pub fn fail(e: impl miette::Diagnostic + Send + Sync + 'static) -> StageError {
    StageError::runtime(miette::Report::new(e))
}

/// Copies a file into a stage's output, with both paths in the error.
pub fn copy(from: &Path, to: &Path) -> Result<(), StageError> {
    std::fs::copy(from, to).map(|_| ()).map_err(|e| {
        StageError::runtime(miette::miette!(
            "cannot copy {} to {}: {e}",
            from.display(),
            to.display()
        ))
    })
}

/// A model ready to train, and where its files came from.
struct Start<B: Backend> {
    model: Llama<B>,
    tokenizer: PathBuf,
    /// The pretrained base directory (None: random init).
    base_dir: Option<PathBuf>,
}

fn start<B: Backend>(
    be: &B,
    params: &SftParams,
    ctx: &mut StageContext,
) -> Result<Start<B>, StageError> {
    let tokenizer_dir = match &params.tokenizer {
        Some(_) => Some(ctx.input("tokenizer")?.path.clone()),
        None => None,
    };
    match &params.base {
        Some(BaseModel::Random(init)) => {
            let dir = tokenizer_dir.ok_or_else(|| {
                StageError::user(miette::miette!("random init needs a `tokenizer` stage"))
            })?;
            let special = SpecialTokens::load(&dir)?;
            let path = ctx.out_dir().join("config.json");
            let text = serde_json::to_string_pretty(&init.random.config_json(&special))
                .map_err(|e| StageError::runtime(miette::miette!("cannot encode config: {e}")))?;
            std::fs::write(&path, text).map_err(|e| {
                StageError::runtime(miette::miette!("cannot write {}: {e}", path.display()))
            })?;
            let cfg =
                LlamaConfig::load(&path).map_err(|e| StageError::user(miette::Report::new(e)))?;
            ctx.log(format!(
                "random {}-layer LLaMA, hidden {}, vocabulary {}",
                cfg.num_layers, cfg.hidden_size, cfg.vocab_size
            ));
            Ok(Start {
                model: Llama::random(be, cfg, params.seed)
                    .map_err(|e| StageError::user(miette::Report::new(e)))?,
                tokenizer: dir.join("tokenizer.json"),
                base_dir: None,
            })
        }
        Some(BaseModel::Pretrained(base)) => {
            let src =
                source::parse(&base.base).map_err(|e| StageError::user(miette::Report::new(e)))?;
            let resolved = source::resolve(&src, &ResolveOptions::from_env())
                .map_err(|e| StageError::user(miette::Report::new(e)))?;
            ctx.log(format!("loading {}", resolved.identity.canonical()));
            let model = Llama::load(be, &resolved.dir).map_err(fail)?;
            let tokenizer = match tokenizer_dir {
                Some(dir) => dir.join("tokenizer.json"),
                None => resolved.tokenizer.clone(),
            };
            Ok(Start {
                model,
                tokenizer,
                base_dir: Some(resolved.dir),
            })
        }
        None => Err(StageError::user(miette::miette!(
            help = "set `base` or the pipeline's `model`",
            "stage `{}` has no base model",
            ctx.stage
        ))),
    }
}

/// Trains every parameter of the model.
pub fn train_all<B: Backend>(be: &B, model: &mut Llama<B>) {
    for p in model.params_mut() {
        p.set_trainable(be, true);
    }
}

/// Loop settings shared by the training stages.
#[allow(clippy::too_many_arguments)]
pub fn loop_settings(
    ctx: &StageContext,
    examples: usize,
    epochs: u64,
    batch_size: u32,
    seed: u64,
    lr: f64,
    optim: &OptimParams,
    checkpoint_every: u64,
) -> LoopSettings {
    LoopSettings {
        stage: ctx.stage.clone(),
        examples,
        epochs,
        batch_size: batch_size as usize,
        micro_batch: ctx.exec.micro_batch.max(1) as usize,
        seed,
        lr,
        optim: optim.clone(),
        checkpoint_every,
        activation_checkpointing: ctx.exec.activation_checkpointing,
        offload_optimizer: ctx.exec.offload_optimizer,
        work_dir: ctx.work_dir().to_path_buf(),
        progress: ProgressMode::from(ctx.verbosity()),
    }
}

/// Runs a loop with the stage's cancellation and log.
pub fn run_loop<B: Backend>(
    be: &B,
    model: &mut Llama<B>,
    objective: &mut impl Objective<B>,
    settings: &LoopSettings,
    ctx: &mut StageContext,
) -> Result<LoopEnd, StageError> {
    let mut lines = Vec::new();
    let cancelled = || ctx.is_cancelled();
    let end = lm_loop::train(be, model, objective, settings, cancelled, |l| {
        lines.push(l.to_string())
    });
    for l in lines {
        ctx.log(l);
    }
    // The loop checkpoints its last step, finished or interrupted.
    ctx.ran.checkpointed = end.is_ok();
    end.map_err(fail)
}

fn run_sft<B: Backend>(be: &B, params: &SftParams, ctx: &mut StageContext) -> StageResult {
    let Start {
        mut model,
        tokenizer,
        base_dir,
    } = start(be, params, ctx)?;
    let mut tok = Tokenizer::load(&tokenizer).map_err(fail)?;
    tok.keep_chat_template(params.chat_template);
    let pad = model
        .cfg
        .pad_token_id
        .or(model.cfg.eos_token_ids.first().copied())
        .unwrap_or(0);
    let eos = model.cfg.eos_token_ids.first().copied();
    let data = ctx.input("data")?.path.clone();
    let examples = dataset::load_sft(&data, &tok, eos, params.max_seq_len).map_err(fail)?;
    let lora_cfg = params.lora.config();
    match params.method {
        Method::Lora => lora::attach(be, &mut model, &lora_cfg, params.seed).map_err(fail)?,
        Method::Full => train_all(be, &mut model),
    }
    let trainable: usize = model
        .params_mut()
        .iter()
        .filter(|p| p.grad.is_some())
        .map(|p| p.numel())
        .sum();
    ctx.log(format!(
        "{} examples, {:?} fine-tuning of {trainable} parameters, lr {:e}, micro-batch {}",
        examples.len(),
        params.method,
        params.lr(),
        ctx.exec.micro_batch
    ));
    let settings = loop_settings(
        ctx,
        examples.len(),
        params.epochs,
        params.batch_size,
        params.seed,
        params.lr(),
        &params.optim,
        params.checkpoint_every,
    );
    let mut objective = SftObjective { examples, pad };
    let (steps, last_loss) = match run_loop(be, &mut model, &mut objective, &settings, ctx)? {
        LoopEnd::Interrupted { .. } => return Ok(Outcome::Interrupted),
        LoopEnd::Finished { steps, last_loss } => (steps, last_loss),
    };
    let out = ctx.out_dir().to_path_buf();
    tok.write_files(&out)
        .map_err(|e| StageError::runtime(miette::miette!("cannot write the tokenizer: {e}")))?;
    match (params.method, &base_dir) {
        (Method::Lora, Some(base)) => {
            let base = std::path::absolute(base).unwrap_or_else(|_| base.clone());
            lora::save(be, &mut model, &lora_cfg, &out, &base.display().to_string())
                .map_err(fail)?;
        }
        (_, base) => {
            if let Some(base) = base {
                copy(&base.join("config.json"), &out.join("config.json"))?;
            }
            if params.method == Method::Lora {
                lora::set_merged(be, &mut model, true);
            }
            model.save_weights(be, &out).map_err(fail)?;
        }
    }
    lm_loop::publish_metrics(ctx.work_dir(), &out)
        .map_err(|e| StageError::runtime(miette::miette!("cannot copy metrics.jsonl: {e}")))?;
    let summary = json!({
        "method": params.method,
        "examples": objective.examples.len(),
        "trainable_parameters": trainable,
        "steps": steps,
        "final_loss": last_loss,
    });
    write_summary(&out, &summary).map_err(fail)?;
    ctx.log(format!("done: {summary}"));
    Ok(Outcome::Done)
}

/// Next-token loss on response tokens, averaged over a step's response
/// tokens.
struct SftObjective {
    examples: Vec<Example>,
    pad: u32,
}

impl<B: Backend> Objective<B> for SftObjective {
    fn step_total(&self, indices: &[usize]) -> f64 {
        indices
            .iter()
            .map(|&i| dataset::trained_tokens(&self.examples[i]))
            .sum::<usize>()
            .max(1) as f64
    }

    fn accumulate(
        &mut self,
        be: &B,
        model: &mut Llama<B>,
        indices: &[usize],
        total: f64,
        pass: TrainPass,
    ) -> Result<MicroStats, LoopError> {
        let examples: Vec<&Example> = indices.iter().map(|&i| &self.examples[i]).collect();
        let (batch, targets, weights) =
            dataset::sft_batch(&examples, self.pad, (1.0 / total) as f32);
        let rows = model.loss_backward(be, &batch, &targets, &weights, pass);
        Ok(MicroStats {
            loss: rows
                .chunks(batch.seq.max(1))
                .map(|example| example.iter().fold(0.0, |sum, &v| sum + f64::from(v)))
                .collect(),
            tokens: examples.iter().map(|e| e.ids.len() as u64).sum(),
            figures: Vec::new(),
        })
    }
}
