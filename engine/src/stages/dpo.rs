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

use super::CAUSAL_LM;
use super::device::{RunOnBackend, run_on_device};
use super::preference::{self, PairLora};
use super::reward::pad_id;
use super::sft::{Method, copy, fail, loop_settings, run_loop, train_all};
use crate::backend::{Backend, Dtype};
use crate::graph::{
    BatchDecl, ExecSettings, InputDecl, ModelOrigin, Outcome, OutputDecl, StageContext, StageError,
    StageKind, StageResult,
};
use crate::model::load::load_dir;
use crate::model::lora;
use crate::model::memory::{StageMemory, Task, Trains, plan_stage};
use crate::train::dataset;
use crate::train::dpo::{DpoLoss, DpoObjective};
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
    pub lora: Option<PairLora>,
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
        preference::inputs(&params.init, &params.data, params.test_data.as_deref())
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
            preference::trains(
                params.method,
                exec.input_adapters.get("init"),
                params.lora.as_ref(),
            ),
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
        preference::output_adapter(params.method, inputs, params.lora.as_ref())
    }

    fn check(&self, params: &DpoParams) -> Vec<(String, String)> {
        preference::check(params.method, params.lora.as_ref())
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

fn run_dpo<B: Backend>(be: &B, params: &DpoParams, ctx: &mut StageContext) -> StageResult {
    let init = ctx.input("init")?.path.clone();
    let mut loaded = load_dir(be, &init).map_err(fail)?;
    loaded.tokenizer.keep_chat_template(params.chat_template);
    let tokenizer = loaded.tokenizer;
    let mut model = loaded.model;
    let adapter = preference::prepare_adapter(
        be,
        &mut model,
        params.method,
        params.lora.as_ref(),
        params.seed,
        loaded.adapter,
        "DPO",
    )?;
    if adapter.is_none() {
        train_all(be, &mut model);
    }
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
    let with_reference =
        |pairs| DpoObjective::new(be, &model, pairs, params.beta, params.loss, pad, micro);
    let test = match &params.test_data {
        Some(_) => {
            let path = ctx.input("test_data")?.path.clone();
            let pairs = dataset::load_preferences(&path, &tokenizer, eos, params.max_seq_len)
                .map_err(fail)?;
            Some(with_reference(pairs))
        }
        None => None,
    };
    let examples = pairs.len();
    let mut objective = with_reference(pairs);
    let settings = loop_settings(
        ctx,
        examples,
        params.epochs,
        params.batch_size,
        params.seed,
        lr,
        &params.optim,
        params.checkpoint_every,
    );
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
            copy(
                &loaded.base_dir.join("config.json"),
                &out.join("config.json"),
            )?;
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
