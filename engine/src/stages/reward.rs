//! `reward`: a reward model trained on preference pairs, the recipe's
//! second step. It starts from an `sft` stage's model, adds a zero `score`
//! head (`LlamaForSequenceClassification`, one label, pooled at each
//! sequence's last token) and trains on the pairwise loss `-log
//! sigmoid(r_chosen - r_rejected)`. Dropout is off (the recipe's).
//!
//! `method: full` (the default) merges the SFT adapter, if any, and trains
//! every weight; the output is a whole `LlamaForSequenceClassification`
//! folder. `method: lora` keeps the base frozen and trains an adapter with
//! the head: the SFT model's own adapter when it has one (so the reward
//! model starts exactly from the SFT model and shares its pretrained base,
//! which lets PPO hold one base for all four roles), else a fresh adapter
//! of `lora:`. The output is then a PEFT adapter (`task_type: SEQ_CLS`, the
//! head saved as `modules_to_save`) pointing at the pretrained base, as
//! `peft` writes one: an 8B LoRA reward model is about 0.7 GB, not 16.
//!
//! The summary reports, on the held-out pairs, the pairwise accuracy and the
//! mean chosen and rejected scores.

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::REWARD_MODEL;
use super::device::{RunOnBackend, run_on_device};
use super::preference::{self, PairLora};
use super::sft::{Method, fail, loop_settings, run_loop, train_all};
use crate::backend::{Backend, Dtype};
use crate::graph::{
    BatchDecl, ExecSettings, InputDecl, ModelOrigin, Outcome, OutputDecl, StageContext, StageError,
    StageKind, StageResult,
};
use crate::model::batch::Batch;
use crate::model::llama::TrainPass;
use crate::model::load::load_dir;
use crate::model::lora::LoraConfig;
use crate::model::memory::{StageMemory, Task, Trains, plan_stage};
use crate::model::reward::{last_token_rows, pooled_head, pooled_head_backward};
use crate::model::{Llama, lora};
use crate::train::dataset::{self, Pair};
use crate::train::lm_loop::{LoopEnd, LoopError, MicroStats, Objective, OptimParams};
use crate::train::metrics::write_summary;
use crate::train::tensorboard::EventWriter;

/// Parameters of a `reward` stage.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RewardParams {
    /// The model to start from: an `sft` stage.
    pub init: String,
    /// Training pairs: `data.pairs`.
    pub data: String,
    /// Held-out pairs for the summary's accuracy: `data.test_pairs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_data: Option<String>,
    /// `full` trains every weight; `lora` trains an adapter and the head
    /// on a frozen base (see the module docs).
    #[serde(
        default = "RewardParams::method",
        skip_serializing_if = "RewardParams::is_full"
    )]
    pub method: Method,
    /// The adapter of `method: lora` when the SFT model has none (a full
    /// fine-tune). When it has one, training continues it, and these
    /// settings, if given, must match its rank and targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<PairLora>,
    /// Learning rate default: 5e-6 (the recipe's).
    #[serde(default)]
    pub optim: OptimParams,
    /// Pairs per optimizer step.
    #[serde(default = "RewardParams::batch_size")]
    #[schemars(range(min = 1, max = 4096))]
    pub batch_size: u32,
    #[serde(default = "RewardParams::epochs")]
    #[schemars(range(min = 1, max = 1000))]
    pub epochs: u64,
    #[serde(default = "RewardParams::max_seq_len")]
    #[schemars(range(min = 2, max = 131072))]
    pub max_seq_len: usize,
    #[serde(default)]
    pub seed: u64,
    /// Optimizer steps between checkpoints (resume points).
    #[serde(default = "RewardParams::checkpoint_every")]
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

impl RewardParams {
    fn method() -> Method {
        Method::Full
    }
    fn is_full(method: &Method) -> bool {
        *method == Method::Full
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

/// The `reward` stage kind.
pub struct Reward;

impl StageKind for Reward {
    type Params = RewardParams;
    const NAME: &'static str = "reward";
    const VERSION: u32 = 1;
    const DTYPE_FIELD: Option<&'static str> = Some("dtype");
    const DESCRIPTION: &'static str =
        "Reward model (LlamaForSequenceClassification) from an SFT model, on the pairwise loss.";

    fn outputs(&self, _: &RewardParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("model", REWARD_MODEL, "")]
    }

    fn inputs(&self, params: &RewardParams) -> Vec<InputDecl> {
        preference::inputs(&params.init, &params.data, params.test_data.as_deref())
    }

    fn semantic_config(&self, params: &RewardParams) -> serde_json::Value {
        super::training_config(params)
    }

    fn global_batch(&self, params: &RewardParams) -> Option<BatchDecl> {
        Some(BatchDecl {
            field: "batch_size".into(),
            size: params.batch_size,
        })
    }

    fn model_origin(&self, _: &RewardParams) -> ModelOrigin {
        ModelOrigin::Input("init")
    }

    /// Planned on the pretrained model the `init` stage descends from; the
    /// score head replaces the LM head.
    fn memory(&self, params: &RewardParams, exec: &ExecSettings) -> StageMemory {
        let Some(model) = &exec.base_model else {
            return StageMemory::NotApplicable;
        };
        plan_stage(
            model,
            Path::new("."),
            Task::Reward,
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
        params: &RewardParams,
        inputs: &BTreeMap<String, Trains>,
    ) -> Option<Trains> {
        preference::output_adapter(params.method, inputs, params.lora.as_ref())
    }

    fn check(&self, params: &RewardParams) -> Vec<(String, String)> {
        preference::check(params.method, params.lora.as_ref())
    }

    fn run(&self, params: &RewardParams, ctx: &mut StageContext) -> StageResult {
        run_on_device(self, params, ctx)
    }
}

impl RunOnBackend for Reward {
    fn dtype(&self, params: &RewardParams) -> Dtype {
        params.dtype.unwrap_or_default()
    }

    fn run_on<B: Backend>(
        &self,
        be: &B,
        params: &RewardParams,
        ctx: &mut StageContext,
    ) -> StageResult {
        run_reward(be, params, ctx)
    }
}

fn run_reward<B: Backend>(be: &B, params: &RewardParams, ctx: &mut StageContext) -> StageResult {
    let init = ctx.input("init")?.path.clone();
    let mut loaded = load_dir(be, &init).map_err(fail)?;
    loaded.tokenizer.keep_chat_template(params.chat_template);
    let tokenizer = loaded.tokenizer;
    let mut model = loaded.model;
    let adapter = prepare(be, &mut model, params, loaded.adapter)?;
    let pad = pad_id(&model);
    let eos = model.cfg.eos_token_ids.first().copied();
    let data = ctx.input("data")?.path.clone();
    let pairs = dataset::load_pairs(&data, &tokenizer, eos, params.max_seq_len).map_err(fail)?;
    let lr = params.optim.lr.unwrap_or(5e-6);
    let trains = match &adapter {
        None => "every weight".to_string(),
        Some(cfg) => format!("a rank-{} LoRA adapter and the score head", cfg.rank),
    };
    ctx.log(format!(
        "{} pairs, reward model from {} training {trains}, lr {lr:e}",
        pairs.len(),
        init.display()
    ));
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
    let mut objective = PairwiseObjective { pairs, pad };
    let (steps, last_loss) = match run_loop(be, &mut model, &mut objective, &settings, ctx)? {
        LoopEnd::Interrupted { .. } => return Ok(Outcome::Interrupted),
        LoopEnd::Finished { steps, last_loss } => (steps, last_loss),
    };
    let held_out = match &params.test_data {
        Some(_) => {
            let path = ctx.input("test_data")?.path.clone();
            let pairs =
                dataset::load_pairs(&path, &tokenizer, eos, params.max_seq_len).map_err(fail)?;
            Some(evaluate(
                be,
                &model,
                &pairs,
                pad,
                ctx.exec.micro_batch.max(1) as usize,
            )?)
        }
        None => None,
    };
    let out = ctx.out_dir().to_path_buf();
    tokenizer
        .write_files(&out)
        .map_err(|e| StageError::runtime(miette::miette!("cannot write the tokenizer: {e}")))?;
    match &adapter {
        None => {
            write_config(&loaded.base_dir, &out, pad)?;
            model.save_weights(be, &out).map_err(fail)?;
        }
        Some(cfg) => {
            let base = std::path::absolute(&loaded.base_dir).unwrap_or(loaded.base_dir.clone());
            lora::save(be, &mut model, cfg, &out, &base.display().to_string()).map_err(fail)?;
        }
    }
    crate::train::lm_loop::publish_metrics(ctx.work_dir(), &out)
        .map_err(|e| StageError::runtime(miette::miette!("cannot copy metrics.jsonl: {e}")))?;
    let mut summary = json!({
        "steps": steps,
        "final_loss": last_loss,
        "pairs": objective.pairs.len(),
    });
    if let Some(eval) = held_out {
        // TensorBoard gets the held-out figure at the last step, beside the
        // training batches' `accuracy`.
        EventWriter::resume(&out, steps)
            .and_then(|mut events| {
                events.scalars(steps, &[("test_pairwise_accuracy", eval.accuracy)])
            })
            .map_err(fail)?;
        summary["test_pairs"] = json!(eval.pairs);
        summary["pairwise_accuracy"] = json!(eval.accuracy);
        summary["mean_chosen"] = json!(eval.mean_chosen);
        summary["mean_rejected"] = json!(eval.mean_rejected);
    }
    write_summary(&out, &summary).map_err(fail)?;
    ctx.log(format!("done: {summary}"));
    Ok(Outcome::Done)
}

/// Sets the SFT model up to train as `method` says: the score head is
/// added and trains in both. Returns the adapter `method: lora` trains.
fn prepare<B: Backend>(
    be: &B,
    model: &mut Llama<B>,
    params: &RewardParams,
    init_adapter: Option<LoraConfig>,
) -> Result<Option<LoraConfig>, StageError> {
    let adapter = preference::prepare_adapter(
        be,
        model,
        params.method,
        params.lora.as_ref(),
        params.seed,
        init_adapter,
        "the reward model",
    )?;
    model.add_score_head(be, 1);
    match adapter {
        None => train_all(be, model),
        Some(_) => {
            // Scores come from the hidden states: the LM head is never used.
            model.lm_head = None;
            if let Some(score) = model.score.as_mut() {
                score.set_trainable(be, true);
            }
        }
    }
    Ok(adapter)
}

/// The id that pads a reward model's batches: its pad token, else EOS.
pub fn pad_id<B: Backend>(model: &Llama<B>) -> u32 {
    model
        .cfg
        .pad_token_id
        .or(model.cfg.eos_token_ids.first().copied())
        .unwrap_or(0)
}

/// The SFT model's config.json as a one-label sequence classifier.
fn write_config(base: &Path, out: &Path, pad: u32) -> Result<(), StageError> {
    let path = base.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| StageError::runtime(miette::miette!("cannot read {}: {e}", path.display())))?;
    let mut cfg: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| StageError::runtime(miette::miette!("{}: {e}", path.display())))?;
    cfg["architectures"] = json!(["LlamaForSequenceClassification"]);
    cfg["num_labels"] = json!(1);
    cfg["id2label"] = json!({"0": "LABEL_0"});
    cfg["label2id"] = json!({"LABEL_0": 0});
    cfg["pad_token_id"] = json!(pad);
    let text = serde_json::to_string_pretty(&cfg)
        .map_err(|e| StageError::runtime(miette::miette!("cannot encode config: {e}")))?;
    std::fs::write(out.join("config.json"), text)
        .map_err(|e| StageError::runtime(miette::miette!("cannot write config.json: {e}")))
}

/// Each pair's chosen then rejected sequence, pair after pair, in one
/// left-padded batch: a pair's two rows are neighbours, so the sums over
/// the batch's sequences run in the same order however the pairs are cut
/// into micro-batches.
fn pair_batch(pairs: &[&Pair], pad: u32) -> Batch {
    let seqs: Vec<Vec<u32>> = pairs
        .iter()
        .flat_map(|p| [p.chosen.clone(), p.rejected.clone()])
        .collect();
    Batch::left_padded(&seqs, pad)
}

/// `softplus(-d)` = -log sigmoid(d), computed without overflow.
fn pair_loss(d: f64) -> f64 {
    if d > 0.0 {
        (-d).exp().ln_1p()
    } else {
        -d + d.exp().ln_1p()
    }
}

/// sigmoid(-d): minus the derivative of [`pair_loss`] at `d`.
fn pair_grad(d: f64) -> f64 {
    1.0 / (1.0 + d.exp())
}

/// The pairwise loss, averaged over a step's pairs.
struct PairwiseObjective {
    pairs: Vec<Pair>,
    pad: u32,
}

impl<B: Backend> Objective<B> for PairwiseObjective {
    fn step_total(&self, indices: &[usize]) -> f64 {
        indices.len().max(1) as f64
    }

    fn accumulate(
        &mut self,
        be: &B,
        model: &mut Llama<B>,
        indices: &[usize],
        total: f64,
        pass: TrainPass,
    ) -> Result<MicroStats, LoopError> {
        let pairs: Vec<&Pair> = indices.iter().map(|&i| &self.pairs[i]).collect();
        let n = pairs.len();
        let batch = pair_batch(&pairs, self.pad);
        let ((loss, right), _) = scores_backward(be, model, &batch, pass, |scores| {
            let (mut loss, mut right) = (Vec::with_capacity(n), Vec::with_capacity(n));
            let mut dscores = vec![0f32; 2 * n];
            for i in 0..n {
                let d = (scores[2 * i] - scores[2 * i + 1]) as f64;
                loss.push(pair_loss(d) / total);
                right.push(f64::from(u8::from(d > 0.0)) / total);
                let g = pair_grad(d) / total;
                dscores[2 * i] = -g as f32;
                dscores[2 * i + 1] = g as f32;
            }
            ((loss, right), dscores)
        })
        .map_err(LoopError::Objective)?;
        Ok(MicroStats {
            loss,
            tokens: batch.real_tokens(),
            figures: vec![("accuracy", right)],
        })
    }
}

/// One forward pass with a tape, the one-label scores at each row's last
/// token, the loss and score gradients from `loss_of(scores)`, and the
/// backward pass into the trunk and the head. (`Llama::scores_backward`
/// takes the gradients up front, which would cost a second forward.)
pub fn scores_backward<B: Backend, T>(
    be: &B,
    model: &mut Llama<B>,
    batch: &Batch,
    pass: TrainPass,
    loss_of: impl FnOnce(&[f32]) -> (T, Vec<f32>),
) -> Result<(T, Vec<f32>), String> {
    let (h, tape) = model.forward_train(be, batch, pass);
    let rows = last_token_rows(batch, model.cfg.pad_token_id);
    let head = model
        .score
        .as_mut()
        .ok_or("the reward model has no score head")?;
    let (pooled, out) = pooled_head(be, &h, &rows, head);
    let scores = be.download(&out);
    let (loss, dscores) = loss_of(&scores);
    let dh = pooled_head_backward(be, head, &pooled, &rows, &dscores, batch.rows());
    model.backward_from_hidden(be, batch, tape, &dh);
    Ok((loss, scores))
}

/// Held-out results of a reward model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairEval {
    pub pairs: usize,
    /// Fraction of pairs scored chosen > rejected.
    pub accuracy: f64,
    pub mean_chosen: f64,
    pub mean_rejected: f64,
}

/// Scores every pair and reports how often the chosen answer wins.
pub fn evaluate<B: Backend>(
    be: &B,
    model: &Llama<B>,
    pairs: &[Pair],
    pad: u32,
    micro_batch: usize,
) -> Result<PairEval, StageError> {
    let (mut wins, mut chosen, mut rejected) = (0usize, 0f64, 0f64);
    for chunk in pairs.chunks(micro_batch.max(1)) {
        let refs: Vec<&Pair> = chunk.iter().collect();
        let scores = model.scores(be, &pair_batch(&refs, pad)).map_err(fail)?;
        let n = chunk.len();
        for i in 0..n {
            wins += usize::from(scores[2 * i] > scores[2 * i + 1]);
            chosen += scores[2 * i] as f64;
            rejected += scores[2 * i + 1] as f64;
        }
    }
    let count = pairs.len().max(1) as f64;
    Ok(PairEval {
        pairs: pairs.len(),
        accuracy: wins as f64 / count,
        mean_chosen: chosen / count,
        mean_rejected: rejected / count,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn pair_loss_and_gradient_match_their_definitions() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..200 {
            let d: f64 = rng.random_range(-30.0..30.0);
            let sigmoid = 1.0 / (1.0 + (-d).exp());
            let want = -sigmoid.ln();
            assert!((pair_loss(d) - want).abs() <= 1e-9 * want.max(1.0), "{d}");
            let h = 1e-5;
            let numeric = (pair_loss(d + h) - pair_loss(d - h)) / (2.0 * h);
            assert!((-pair_grad(d) - numeric).abs() < 1e-6, "{d}");
        }
        assert!(pair_loss(-800.0).is_finite() && pair_loss(800.0) >= 0.0);
    }
}
