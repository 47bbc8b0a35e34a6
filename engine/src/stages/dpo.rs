//! `dpo`: direct preference optimisation of an SFT model on preference
//! pairs, an alternative to a reward model and PPO (TRL's stable trainer
//! for the same step). The loss and the reference are described in
//! [`crate::train::dpo`]: the reference is the SFT policy itself, its
//! log-probabilities computed once before training, so only one model is
//! held.
//!
//! `method: lora` (the default) continues the SFT model's adapter when it
//! has one (so the result is still an adapter on the pretrained base), else
//! trains a fresh adapter of `lora:`; `method: full` merges any adapter and
//! trains every weight. The output is a causal LM folder like `sft`'s, so
//! `eval`, `poker-pipe eval --model` and `arena model:` take it.

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::device::{RunOnBackend, run_on_device};
use super::reward::{RewardLora, pad_id};
use super::sft::{Method, fail, loop_settings, run_loop, train_all};
use super::{CAUSAL_LM, PAIRS_DATASET};
use crate::backend::{Backend, Dtype};
use crate::graph::{
    BatchDecl, ExecSettings, InputDecl, ModelOrigin, Outcome, OutputDecl, StageContext, StageError,
    StageKind, StageResult,
};
use crate::model::Llama;
use crate::model::load::load_dir;
use crate::model::lora::{self, LoraConfig};
use crate::model::memory::{StageMemory, Task, Trains, plan_stage};
use crate::train::dataset;
use crate::train::dpo::{DpoLoss, DpoObjective, reference_logprobs};
use crate::train::lm_loop::{self, LoopEnd, OptimParams};
use crate::train::metrics::write_summary;

/// Parameters of a `dpo` stage.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DpoParams {
    /// The policy to start from, and the reference: an `sft` stage.
    pub init: String,
    /// Training pairs: `data.pairs`.
    pub data: String,
    /// Held-out pairs for the summary's accuracy and margin:
    /// `data.test_pairs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_data: Option<String>,
    /// How far the policy may move from the reference: larger keeps it
    /// closer (TRL's default 0.1).
    #[serde(default = "DpoParams::beta")]
    #[schemars(range(min = 0.0001, max = 100.0))]
    pub beta: f64,
    /// `sigmoid` (DPO) or `ipo`.
    #[serde(default)]
    pub loss: DpoLoss,
    /// `lora` trains an adapter (the SFT model's own when it has one);
    /// `full` trains every weight.
    #[serde(default = "DpoParams::method")]
    pub method: Method,
    /// The adapter of `method: lora` when the SFT model has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<RewardLora>,
    /// Learning rate default: 5e-6.
    #[serde(default)]
    pub optim: OptimParams,
    /// Pairs per optimizer step.
    #[serde(default = "DpoParams::batch_size")]
    #[schemars(range(min = 1, max = 4096))]
    pub batch_size: u32,
    #[serde(default = "DpoParams::epochs")]
    #[schemars(range(min = 1, max = 1000))]
    pub epochs: u64,
    #[serde(default = "DpoParams::max_seq_len")]
    #[schemars(range(min = 2, max = 131072))]
    pub max_seq_len: usize,
    #[serde(default)]
    pub seed: u64,
    /// Optimizer steps between checkpoints (resume points).
    #[serde(default = "DpoParams::checkpoint_every")]
    #[schemars(range(min = 1, max = 1000000000))]
    pub checkpoint_every: u64,
    /// Render prompts in the model's chat template when it has one.
    #[serde(
        default = "super::chat_template_on",
        skip_serializing_if = "super::is_chat_template_on"
    )]
    pub chat_template: bool,
    /// Storage of frozen weights: `bf16` or `f32` (the pipeline's
    /// `model.dtype` when left out; f32 when neither says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<Dtype>,
}

impl DpoParams {
    fn beta() -> f64 {
        0.1
    }
    fn method() -> Method {
        Method::Lora
    }
    fn batch_size() -> u32 {
        8
    }
    fn epochs() -> u64 {
        1
    }
    fn max_seq_len() -> usize {
        512
    }
    fn checkpoint_every() -> u64 {
        50
    }

    /// What the stage trains, for the planner: a continued SFT adapter
    /// keeps its shape.
    fn trains(&self, init_adapter: Option<&Trains>) -> Trains {
        match (self.method, init_adapter, &self.lora) {
            (Method::Full, _, _) => Trains::Full,
            (Method::Lora, Some(adapter @ Trains::Lora { .. }), _) => adapter.clone(),
            (Method::Lora, _, lora) => {
                let lora = lora.clone().unwrap_or_default();
                Trains::Lora {
                    rank: lora.rank,
                    targets: lora.targets,
                }
            }
        }
    }
}

/// The `dpo` stage kind.
pub struct Dpo;

impl StageKind for Dpo {
    type Params = DpoParams;
    const NAME: &'static str = "dpo";
    const VERSION: u32 = 1;
    const DTYPE_FIELD: Option<&'static str> = Some("dtype");
    const DESCRIPTION: &'static str =
        "Direct preference optimisation (DPO or IPO) of an SFT model on preference pairs.";

    fn outputs(&self, _: &DpoParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("model", CAUSAL_LM, "")]
    }

    fn inputs(&self, params: &DpoParams) -> Vec<InputDecl> {
        let mut inputs = vec![
            InputDecl::stage("init", &params.init, &[CAUSAL_LM]),
            InputDecl::stage("data", &params.data, &[PAIRS_DATASET]),
        ];
        if let Some(test) = &params.test_data {
            inputs.push(InputDecl::stage("test_data", test, &[PAIRS_DATASET]));
        }
        inputs
    }

    fn semantic_config(&self, params: &DpoParams) -> serde_json::Value {
        super::training_config(params)
    }

    fn global_batch(&self, params: &DpoParams) -> Option<BatchDecl> {
        Some(BatchDecl {
            field: "batch_size".into(),
            size: params.batch_size,
        })
    }

    fn model_origin(&self, _: &DpoParams) -> ModelOrigin {
        ModelOrigin::Input("init")
    }

    fn memory(&self, params: &DpoParams, exec: &ExecSettings) -> StageMemory {
        let Some(model) = &exec.base_model else {
            return StageMemory::NotApplicable;
        };
        plan_stage(
            model,
            Path::new("."),
            Task::Dpo,
            params.trains(exec.input_adapters.get("init")),
            params.max_seq_len,
            exec,
            RunOnBackend::dtype(self, params),
        )
    }

    fn output_adapter(
        &self,
        params: &DpoParams,
        inputs: &BTreeMap<String, Trains>,
    ) -> Option<Trains> {
        match params.method {
            Method::Full => None,
            Method::Lora => Some(params.trains(inputs.get("init"))),
        }
    }

    fn check(&self, params: &DpoParams) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(lora) = &params.lora {
            if params.method == Method::Full {
                out.push((
                    "lora".into(),
                    "`lora` settings only apply with `method: lora`".into(),
                ));
            }
            if let Err(e) = lora.config().check(Path::new("lora")) {
                out.push(("lora".into(), e.to_string()));
            }
        }
        out
    }

    fn run(&self, params: &DpoParams, ctx: &mut StageContext) -> StageResult {
        run_on_device(self, params, ctx)
    }
}

impl RunOnBackend for Dpo {
    fn dtype(&self, params: &DpoParams) -> Dtype {
        params.dtype.unwrap_or_default()
    }

    fn run_on<B: Backend>(
        &self,
        be: &B,
        params: &DpoParams,
        ctx: &mut StageContext,
    ) -> StageResult {
        run_dpo(be, params, ctx)
    }
}

/// Sets the SFT model up to train as `method` says; returns the adapter
/// `method: lora` trains.
fn prepare<B: Backend>(
    be: &B,
    model: &mut Llama<B>,
    params: &DpoParams,
    init_adapter: Option<LoraConfig>,
) -> Result<Option<LoraConfig>, StageError> {
    match (params.method, init_adapter) {
        (Method::Full, init_adapter) => {
            if init_adapter.is_some() {
                lora::set_merged(be, model, true);
                for layer in &mut model.layers {
                    for (_, lin) in layer.projections_mut() {
                        lin.lora = None;
                    }
                }
            }
            train_all(be, model);
            Ok(None)
        }
        (Method::Lora, Some(cfg)) => {
            if let Some(own) = &params.lora
                && (own.rank != cfg.rank || own.targets != cfg.targets)
            {
                return Err(StageError::user(miette::miette!(
                    help = "leave `lora` out to continue the SFT adapter as it is",
                    "DPO continues the SFT model's adapter (rank {}, targets {}), but `lora` \
                     asks for rank {} on {}",
                    cfg.rank,
                    cfg.targets.join(", "),
                    own.rank,
                    own.targets.join(", ")
                )));
            }
            // No dropout: the reference's figures were computed without it,
            // so the policy matches them exactly at the first step.
            for layer in &mut model.layers {
                for (_, lin) in layer.projections_mut() {
                    if let Some(lora) = lin.lora.as_mut() {
                        lora.dropout = 0.0;
                    }
                }
            }
            Ok(Some(LoraConfig {
                dropout: 0.0,
                ..cfg
            }))
        }
        (Method::Lora, None) => {
            let cfg = params.lora.clone().unwrap_or_default().config();
            lora::attach(be, model, &cfg, params.seed).map_err(fail)?;
            Ok(Some(cfg))
        }
    }
}

fn run_dpo<B: Backend>(be: &B, params: &DpoParams, ctx: &mut StageContext) -> StageResult {
    let init = ctx.input("init")?.path.clone();
    let mut loaded = load_dir(be, &init).map_err(fail)?;
    loaded.tokenizer.keep_chat_template(params.chat_template);
    let tokenizer = loaded.tokenizer;
    let mut model = loaded.model;
    let adapter = prepare(be, &mut model, params, loaded.adapter)?;
    let pad = pad_id(&model);
    let eos = model.cfg.eos_token_ids.first().copied();
    let micro = ctx.exec.micro_batch.max(1) as usize;
    let data = ctx.input("data")?.path.clone();
    let pairs =
        dataset::load_preferences(&data, &tokenizer, eos, params.max_seq_len).map_err(fail)?;
    let lr = params.optim.lr.unwrap_or(5e-6);
    let trains = match &adapter {
        None => "every weight".to_string(),
        Some(cfg) => format!("a rank-{} LoRA adapter", cfg.rank),
    };
    ctx.log(format!(
        "{} pairs, {:?} loss with beta {}, policy and reference from {}, training {trains}, lr {lr:e}",
        pairs.len(),
        params.loss,
        params.beta,
        init.display()
    ));
    // The starting model is the reference: its figures come first, before
    // a resumed run restores the trained weights.
    let reference = reference_logprobs(be, &model, &pairs, pad, micro);
    let test = match &params.test_data {
        Some(_) => {
            let path = ctx.input("test_data")?.path.clone();
            let pairs = dataset::load_preferences(&path, &tokenizer, eos, params.max_seq_len)
                .map_err(fail)?;
            let reference = reference_logprobs(be, &model, &pairs, pad, micro);
            Some(DpoObjective {
                pairs,
                reference,
                beta: params.beta,
                loss: params.loss,
                pad,
            })
        }
        None => None,
    };
    let settings = loop_settings(
        ctx,
        pairs.len(),
        params.epochs,
        params.batch_size,
        params.seed,
        lr,
        &params.optim,
        params.checkpoint_every,
    );
    let mut objective = DpoObjective {
        pairs,
        reference,
        beta: params.beta,
        loss: params.loss,
        pad,
    };
    let (steps, last_loss) = match run_loop(be, &mut model, &mut objective, &settings, ctx)? {
        LoopEnd::Interrupted { .. } => return Ok(Outcome::Interrupted),
        LoopEnd::Finished { steps, last_loss } => (steps, last_loss),
    };
    let held_out = test.map(|t| t.evaluate(be, &model, micro));

    let out = ctx.out_dir().to_path_buf();
    tokenizer
        .write_files(&out)
        .map_err(|e| StageError::runtime(miette::miette!("cannot write the tokenizer: {e}")))?;
    match &adapter {
        Some(cfg) => {
            let base = std::path::absolute(&loaded.base_dir).unwrap_or(loaded.base_dir.clone());
            lora::save(be, &mut model, cfg, &out, &base.display().to_string()).map_err(fail)?;
        }
        None => {
            let from = loaded.base_dir.join("config.json");
            std::fs::copy(&from, out.join("config.json")).map_err(|e| {
                StageError::runtime(miette::miette!("cannot copy {}: {e}", from.display()))
            })?;
            model.save_weights(be, &out).map_err(fail)?;
        }
    }
    lm_loop::publish_metrics(ctx.work_dir(), &out)
        .map_err(|e| StageError::runtime(miette::miette!("cannot copy metrics.jsonl: {e}")))?;
    let mut summary = json!({
        "method": params.method,
        "loss": params.loss,
        "beta": params.beta,
        "pairs": objective.pairs.len(),
        "steps": steps,
        "final_loss": last_loss,
    });
    if let Some(h) = held_out {
        summary["test_pairs"] = json!(h.pairs);
        summary["test_loss"] = json!(h.loss);
        summary["test_accuracy"] = json!(h.accuracy);
        summary["test_margin"] = json!(h.margin);
    }
    write_summary(&out, &summary).map_err(fail)?;
    ctx.log(format!("done: {summary}"));
    Ok(Outcome::Done)
}
