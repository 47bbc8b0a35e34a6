//! `eval`: how well a trained model plays, on held-out spots and at the
//! table. On the held-out PPO prompts (which carry each spot) it measures
//! the rate of answers that are legal actions and the accuracy against the
//! expert's best action, beside two baselines that never look at the cards
//! (the most common best answer of the training prompts, and the most
//! common one per spot type); the reward model's accuracy on held-out
//! preference pairs; the reward model's mean score of the SFT and final
//! models' answers (sampled, as PPO is scored, and greedy); and bb/100
//! with a 95% interval against baseline bots, the model playing through
//! `PromptPlayer`, served by [`model_seats`].

use std::collections::BTreeMap;
use std::path::Path;

use miette::miette;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::device::{RunOnBackend, run_on_device};
use super::lm_answerer::{BATCH, LmAnswerer, PromptAndAnswer};
use super::{CAUSAL_LM, PAIRS_DATASET, PROMPT_SET, REWARD_MODEL, model_seats, reward};
use crate::backend::{Backend, Dtype};
use crate::graph::{
    Cancel, InputDecl, Outcome, OutputDecl, StageContext, StageError, StageKind, StageResult,
};
use crate::model::batch::Batch;
use crate::model::llama::Llama;
use crate::model::load::load_dir;
use crate::model::lora;
use crate::poker::arena::{ArenaError, play_match_until};
use crate::poker::bots::{BOT_NAMES, Player, bot};
use crate::poker::spot::{PromptStyle, Spot, parse_answer, render};
use crate::train::dataset;
use crate::train::tensorboard::EventWriter;

/// Most hands an arena match may play (the schema's bound on `hands`).
const MAX_HANDS: u64 = 10_000_000;

/// Arena settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArenaParams {
    /// Baseline bots to play: random, calling-station, tight-aggressive, expert.
    #[serde(default = "defaults::opponents")]
    pub opponents: Vec<String>,
    /// Hands per opponent (rounded up to whole duplicate deals).
    #[serde(default = "defaults::hands")]
    #[schemars(range(min = 2, max = 10000000))]
    pub hands: u64,
    /// Hands against particular opponents instead of `hands`, e.g.
    /// `{random: 30000}`: a random bot's all-ins make its results the
    /// noisiest, so it needs the most hands for the same interval.
    #[serde(default)]
    pub hands_against: BTreeMap<String, u64>,
    #[serde(default = "defaults::seed")]
    pub seed: u64,
}

impl Default for ArenaParams {
    fn default() -> Self {
        ArenaParams {
            opponents: defaults::opponents(),
            hands: defaults::hands(),
            hands_against: BTreeMap::new(),
            seed: defaults::seed(),
        }
    }
}

impl ArenaParams {
    /// Hands to play against `opponent`.
    pub fn hands_for(&self, opponent: &str) -> u64 {
        self.hands_against
            .get(opponent)
            .copied()
            .unwrap_or(self.hands)
    }
}

/// Parameters of an `eval` stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalParams {
    /// The model to evaluate (`rlhf`, `sft`, ...).
    pub model: String,
    /// The SFT model, for `reward_mean_sft`.
    #[serde(default)]
    pub sft: Option<String>,
    /// The reward model: pairwise accuracy and reward means.
    #[serde(default)]
    pub reward: Option<String>,
    /// Held-out prompts with their spots (`data.test_prompts`).
    pub scenarios: String,
    /// Training prompts (`data.prompts`): the baselines learn from them.
    pub train_prompts: String,
    /// Held-out preference pairs (`data.test_pairs`).
    #[serde(default)]
    pub pairs: Option<String>,
    /// The style the model is prompted in at the table. By default, the
    /// style the held-out prompts were written in (found by rendering their
    /// spots), so the arena asks what training taught.
    #[serde(default)]
    pub style: Option<PromptStyle>,
    /// Tokens generated per answer (greedy).
    #[serde(default = "defaults::max_new_tokens")]
    #[schemars(range(min = 1, max = 512))]
    pub max_new_tokens: u32,
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
    /// `reward_mean_sft` and `reward_mean_ppo` average the reward model's
    /// score over this many answers per held-out prompt, sampled at
    /// `reward_temperature`: the expected reward PPO maximises. The greedy
    /// answers' means are reported beside them (`..._greedy`).
    #[serde(default = "defaults::reward_samples")]
    #[schemars(range(min = 1, max = 64))]
    pub reward_samples: u32,
    /// Sampling temperature of those answers (PPO's roll-out default is 1;
    /// 0 makes the reward means greedy).
    #[serde(default = "defaults::reward_temperature")]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub reward_temperature: f64,
    #[serde(default)]
    pub arena: ArenaParams,
}

mod defaults {
    pub fn opponents() -> Vec<String> {
        ["random", "calling-station", "tight-aggressive"]
            .map(String::from)
            .to_vec()
    }
    pub fn hands() -> u64 {
        2000
    }
    pub fn seed() -> u64 {
        1
    }
    pub fn max_new_tokens() -> u32 {
        8
    }
    pub fn reward_samples() -> u32 {
        4
    }
    pub fn reward_temperature() -> f64 {
        1.0
    }
}

/// The `eval` stage kind.
pub struct Eval;

impl StageKind for Eval {
    type Params = EvalParams;
    const NAME: &'static str = "eval";
    const VERSION: u32 = 3;
    const DTYPE_FIELD: Option<&'static str> = Some("dtype");
    const DESCRIPTION: &'static str = "Held-out legal-action rate and accuracy against card-blind baselines, reward-model accuracy and means, arena bb/100 against baseline bots.";

    fn outputs(&self, _: &EvalParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new(
            "summary",
            super::EVAL_REPORT,
            "summary.json",
        )]
    }

    fn inputs(&self, p: &EvalParams) -> Vec<InputDecl> {
        let mut v = vec![
            InputDecl::stage("model", &p.model, &[CAUSAL_LM]),
            InputDecl::stage("scenarios", &p.scenarios, &[PROMPT_SET]),
            InputDecl::stage("train_prompts", &p.train_prompts, &[PROMPT_SET]),
        ];
        if let Some(s) = &p.sft {
            v.push(InputDecl::stage("sft", s, &[CAUSAL_LM]));
        }
        if let Some(r) = &p.reward {
            v.push(InputDecl::stage("reward", r, &[REWARD_MODEL]));
        }
        if let Some(pairs) = &p.pairs {
            v.push(InputDecl::stage("pairs", pairs, &[PAIRS_DATASET]));
        }
        v
    }

    fn check(&self, p: &EvalParams) -> Vec<(String, String)> {
        let mut problems: Vec<(String, String)> = p
            .arena
            .opponents
            .iter()
            .enumerate()
            .filter(|(_, o)| !BOT_NAMES.contains(&o.as_str()))
            .map(|(i, o)| {
                (
                    format!("arena.opponents.{i}"),
                    format!("unknown bot `{o}` (known: {})", BOT_NAMES.join(", ")),
                )
            })
            .collect();
        for (name, &hands) in &p.arena.hands_against {
            let field = format!("arena.hands_against.{name}");
            if !p.arena.opponents.contains(name) {
                problems.push((
                    field,
                    format!(
                        "`{name}` is not among arena.opponents ({})",
                        p.arena.opponents.join(", ")
                    ),
                ));
            } else if !(2..=MAX_HANDS).contains(&hands) {
                problems.push((
                    field,
                    format!("must be between 2 and {MAX_HANDS}, got {hands}"),
                ));
            }
        }
        if !(1..=64).contains(&p.reward_samples) {
            problems.push((
                "reward_samples".into(),
                format!("must be between 1 and 64, got {}", p.reward_samples),
            ));
        }
        if !(0.0..=10.0).contains(&p.reward_temperature) {
            problems.push((
                "reward_temperature".into(),
                format!("must be between 0 and 10, got {}", p.reward_temperature),
            ));
        }
        problems
    }

    fn run(&self, p: &EvalParams, ctx: &mut StageContext) -> StageResult {
        run_on_device(self, p, ctx)
    }
}

impl RunOnBackend for Eval {
    fn dtype(&self, params: &EvalParams) -> Dtype {
        params.dtype.unwrap_or_default()
    }

    fn run_on<B: Backend>(&self, be: &B, p: &EvalParams, ctx: &mut StageContext) -> StageResult {
        let result = run(be, p, ctx);
        StageError::or_interrupted(result, ctx)
    }
}

/// A held-out spot: its prompt, the spot, its type and the expert's answer.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub prompt: String,
    pub spot: Spot,
    pub spot_type: String,
    pub best: String,
}

fn read_lines(path: &Path) -> Result<Vec<(usize, Value)>, StageError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| StageError::runtime(miette!("cannot read `{}`: {e}", path.display())))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map(|v| (i + 1, v)).map_err(|e| {
                StageError::user(miette!("{}:{}: not JSON: {e}", path.display(), i + 1))
            })
        })
        .collect()
}

/// Reads poker-data prompts (`prompt`, `spot`, `spot_type`, `best`).
pub fn read_scenarios(path: &Path) -> Result<Vec<Scenario>, StageError> {
    read_lines(path)?
        .into_iter()
        .map(|(line, v)| {
            let bad = |what: &str| {
                StageError::user(miette!(
                    help = "eval needs poker-data prompt files, which carry each spot",
                    "{}:{line}: {what}",
                    path.display()
                ))
            };
            let text = |k: &str| {
                v.get(k)
                    .and_then(Value::as_str)
                    .map(String::from)
                    .ok_or_else(|| bad(&format!("no string field `{k}`")))
            };
            Ok(Scenario {
                prompt: text("prompt")?,
                spot_type: text("spot_type")?,
                best: text("best")?,
                spot: v
                    .get("spot")
                    .and_then(|s| serde_json::from_value(s.clone()).ok())
                    .ok_or_else(|| bad("no readable `spot`"))?,
            })
        })
        .collect()
}

/// The style the scenarios' prompts were written in: the one whose
/// rendering of each spot is its prompt. An explicit `style` must agree, so
/// the arena never prompts in a style the model was not trained on.
pub fn prompt_style(
    scenarios: &[Scenario],
    explicit: Option<PromptStyle>,
) -> Result<PromptStyle, StageError> {
    let matches = |style: PromptStyle| scenarios.iter().all(|s| render(&s.spot, style) == s.prompt);
    let found = [PromptStyle::Compact, PromptStyle::Natural]
        .into_iter()
        .find(|&style| matches(style));
    match (explicit, found) {
        (Some(want), Some(got)) if want != got => Err(StageError::user(miette!(
            help = "remove `style` from the eval stage: it follows the data stage's",
            "`style: {}` but the held-out prompts are in the {} style",
            want.name(),
            got.name()
        ))),
        (_, Some(got)) => Ok(got),
        (Some(want), None) => Ok(want),
        (None, None) => Err(StageError::user(miette!(
            help = "set the eval stage's `style` to the style of its prompts",
            "the held-out prompts are in neither the compact nor the natural style"
        ))),
    }
}

/// The card-blind baselines: the most common best answer overall, and per
/// spot type (ties broken by the answer text, so the result is stable).
pub fn baselines(train: &[Scenario]) -> (String, BTreeMap<String, String>) {
    fn most_common<'a>(answers: impl Iterator<Item = &'a str>) -> String {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for a in answers {
            *counts.entry(a).or_default() += 1;
        }
        counts
            .into_iter()
            .fold(
                ("", 0),
                |best, (a, n)| if n > best.1 { (a, n) } else { best },
            )
            .0
            .to_string()
    }
    let majority = most_common(train.iter().map(|s| s.best.as_str()));
    let mut types: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for s in train {
        types.entry(&s.spot_type).or_default().push(&s.best);
    }
    let per_type = types
        .into_iter()
        .map(|(t, answers)| (t.to_string(), most_common(answers.into_iter())))
        .collect();
    (majority, per_type)
}

/// Whether `answer` is the expert's best action in this spot.
fn correct(s: &Scenario, answer: &str) -> bool {
    match (
        parse_answer(&s.spot, answer),
        parse_answer(&s.spot, &s.best),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Reward-model scores of complete sequences (prompt, then an answer as
/// generation emits it: separator, words, EOS), pooled as the reward stage
/// trained them.
fn rm_scores<B: Backend>(
    be: &B,
    rm: &Llama<B>,
    seqs: &[Vec<u32>],
    cancel: &Cancel,
) -> Result<Vec<f32>, StageError> {
    let pad = reward::pad_id(rm);
    let mut out = Vec::with_capacity(seqs.len());
    for chunk in seqs.chunks(16) {
        if cancel.is_cancelled() {
            return Err(StageError::interrupted());
        }
        let batch = Batch::left_padded(chunk, pad);
        out.extend(
            rm.scores(be, &batch)
                .map_err(|e| StageError::runtime(miette::Report::new(e)))?,
        );
    }
    Ok(out)
}

/// Per spot type, the held-out spots, the model's accuracy and the
/// spot-type baseline's; and how often the model chose each kind of action
/// (`illegal` for an answer that does not parse) where the expert chose
/// each: `{expert: {model: count}}`.
fn breakdown(
    scenarios: &[Scenario],
    answers: &[String],
    per_type: &BTreeMap<String, String>,
) -> (Value, Value) {
    let mut types: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
    let mut confusion: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for (s, answer) in scenarios.iter().zip(answers) {
        let counts = types.entry(&s.spot_type).or_default();
        counts[0] += 1;
        counts[1] += usize::from(correct(s, answer));
        counts[2] += usize::from(per_type.get(&s.spot_type).is_some_and(|a| correct(s, a)));
        let kind = |text: &str| parse_answer(&s.spot, text).map_or("illegal", |a| a.kind());
        *confusion
            .entry(kind(&s.best))
            .or_default()
            .entry(kind(answer))
            .or_default() += 1;
    }
    let by_type = types
        .into_iter()
        .map(|(t, [n, right, baseline])| {
            let share = |k: usize| k as f64 / n.max(1) as f64;
            (
                t.to_string(),
                json!({"spots": n, "accuracy": share(right), "baseline": share(baseline)}),
            )
        })
        .collect::<serde_json::Map<_, _>>();
    (Value::Object(by_type), json!(confusion))
}

/// The summary's figures as TensorBoard scalars: `action_accuracy`, ...,
/// and `arena/<opponent>/bb_per_100` with its interval's ends.
fn summary_scalars(summary: &Value) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let Some(fields) = summary.as_object() else {
        return out;
    };
    for (name, value) in fields {
        if let Some(x) = value.as_f64() {
            out.push((name.clone(), x));
        }
    }
    for (opponent, result) in summary["arena"].as_object().into_iter().flatten() {
        let figures = [
            ("bb_per_100", result["bb_per_100"].as_f64()),
            ("ci95_low", result["ci95"][0].as_f64()),
            ("ci95_high", result["ci95"][1].as_f64()),
        ];
        for (figure, value) in figures {
            if let Some(x) = value {
                out.push((format!("arena/{opponent}/{figure}"), x));
            }
        }
    }
    out
}

fn mean(v: &[f32]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64)
}

fn run<B: Backend>(be: &B, p: &EvalParams, ctx: &mut StageContext) -> StageResult {
    let scenarios = read_scenarios(&ctx.input("scenarios")?.path.clone())?;
    let train = read_scenarios(&ctx.input("train_prompts")?.path.clone())?;
    let style = prompt_style(&scenarios, p.style)?;
    let model_dir = ctx.input("model")?.path.clone();
    let cancel = ctx.cancel_flag();
    let mut lm = LmAnswerer::load(be, &model_dir, p.max_new_tokens as usize, p.chat_template)?;
    lm.stop_on(cancel.clone());
    ctx.log(format!("answering {} held-out spots", scenarios.len()));
    let prompts: Vec<String> = scenarios.iter().map(|s| s.prompt.clone()).collect();
    // In chunks of whole generation batches: the same batches as one call,
    // with progress between them.
    let answering = ctx.work_progress("answers", prompts.len() as u64);
    let mut generated = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(4 * BATCH) {
        generated.extend(lm.generate_ids(chunk)?);
        answering.add(chunk.len() as u64);
    }
    answering.finish();
    let answers = lm.decode_answers(&generated)?;
    let n = scenarios.len().max(1) as f64;
    let legal = scenarios
        .iter()
        .zip(&answers)
        .filter(|(s, a)| parse_answer(&s.spot, a).is_ok())
        .count() as f64
        / n;
    let accuracy = scenarios
        .iter()
        .zip(&answers)
        .filter(|(s, a)| correct(s, a))
        .count() as f64
        / n;
    let (majority, per_type) = baselines(&train);
    let majority_acc = scenarios.iter().filter(|s| correct(s, &majority)).count() as f64 / n;
    let type_acc = scenarios
        .iter()
        .filter(|s| per_type.get(&s.spot_type).is_some_and(|a| correct(s, a)))
        .count() as f64
        / n;
    ctx.log(format!(
        "legal {legal:.3}, accuracy {accuracy:.3}, majority baseline {majority_acc:.3} (`{majority}`), spot-type baseline {type_acc:.3}"
    ));
    let (by_spot_type, confusion) = breakdown(&scenarios, &answers, &per_type);

    let (mut rm_acc, mut reward_sft, mut reward_ppo) = (None, [None; 2], [None; 2]);
    if ctx.input("reward").is_ok() {
        let rm_dir = ctx.input("reward")?.path.clone();
        let mut rm =
            load_dir(be, &rm_dir).map_err(|e| StageError::runtime(miette::Report::new(e)))?;
        lora::set_merged(be, &mut rm.model, true);
        rm.tokenizer.keep_chat_template(p.chat_template);
        if let Ok(pairs) = ctx.input("pairs").map(|i| i.path.clone()) {
            let eos = rm.model.cfg.eos_token_ids.first().copied();
            let max_len = rm.model.cfg.max_position_embeddings;
            let pairs = dataset::load_pairs(&pairs, &rm.tokenizer, eos, max_len)
                .map_err(|e| StageError::user(miette::Report::new(e)))?;
            let held_out = reward::evaluate(be, &rm.model, &pairs, reward::pad_id(&rm.model), 16)?;
            rm_acc = Some(held_out.accuracy);
        }
        let seqs = |g: &[PromptAndAnswer]| -> Vec<Vec<u32>> {
            g.iter()
                .map(|(p, r)| [p.as_slice(), r.as_slice()].concat())
                .collect()
        };
        let sampled = |lm: &LmAnswerer<B>| {
            lm.sample_ids(
                &prompts,
                p.reward_temperature,
                p.reward_samples,
                p.arena.seed,
            )
        };
        let score =
            |g: &[PromptAndAnswer]| rm_scores(be, &rm.model, &seqs(g), &cancel).map(|s| mean(&s));
        reward_ppo = [score(&sampled(&lm)?)?, score(&generated)?];
        if let Ok(sft) = ctx.input("sft").map(|i| i.path.clone()) {
            let mut sft_lm =
                LmAnswerer::load(be, &sft, p.max_new_tokens as usize, p.chat_template)?;
            sft_lm.stop_on(cancel.clone());
            reward_sft = [
                score(&sampled(&sft_lm)?)?,
                score(&sft_lm.generate_ids(&prompts)?)?,
            ];
        }
        let shown = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.4}"));
        ctx.log(format!(
            "reward model: pairwise accuracy {}; mean reward of {} sampled answers per prompt (temperature {}): sft {}, evaluated model {}; of greedy answers: sft {}, evaluated model {}",
            shown(rm_acc),
            p.reward_samples,
            p.reward_temperature,
            shown(reward_sft[0]),
            shown(reward_ppo[0]),
            shown(reward_sft[1]),
            shown(reward_ppo[1]),
        ));
    }

    let mut arena = serde_json::Map::new();
    for opponent in &p.arena.opponents {
        if ctx.is_cancelled() {
            ctx.finish();
            return Ok(Outcome::Interrupted);
        }
        let name = opponent.clone();
        let make_bot = move |seed: u64| -> Box<dyn Player> {
            bot(&name, seed).unwrap_or_else(|| Box::new(crate::poker::bots::CallingStation))
        };
        let hands = p.arena.hands_for(opponent);
        let cancel = ctx.cancel_flag();
        // The arena asks once per duplicate deal (two hands) before it.
        let playing = ctx.work_progress(&format!("arena vs {opponent} (deals)"), hands.div_ceil(2));
        let stop = || {
            playing.add(1);
            cancel.is_cancelled()
        };
        let played = model_seats::serve(&[&lm], BATCH, |seats| {
            let make_lm = |_seed: u64| seats[0].player(style);
            play_match_until(&make_lm, &make_bot, hands, p.arena.seed, &stop)
        })
        .map_err(StageError::runtime)?;
        playing.finish();
        let result = match played {
            Ok(result) => result,
            Err(ArenaError::Stopped) => {
                ctx.finish();
                return Ok(Outcome::Interrupted);
            }
            Err(e) => {
                return Err(StageError::runtime(miette!(
                    "arena against {opponent}: {e}"
                )));
            }
        };
        ctx.log(format!(
            "arena vs {opponent}: {:.1} bb/100, 95% CI [{:.1}, {:.1}] over {} hands, {} illegal answers",
            result.bb_per_100, result.ci95[0], result.ci95[1], result.hands, result.illegal[0]
        ));
        arena.insert(
            opponent.clone(),
            json!({"bb_per_100": result.bb_per_100, "ci95": result.ci95, "hands": result.hands}),
        );
    }

    let summary = json!({
        "legal_action_rate": legal,
        "action_accuracy": accuracy,
        "majority_baseline": majority_acc,
        "spot_type_baseline": type_acc,
        "by_spot_type": by_spot_type,
        "confusion": confusion,
        "rm_pairwise_accuracy": rm_acc,
        "reward_mean_sft": reward_sft[0],
        "reward_mean_ppo": reward_ppo[0],
        "reward_mean_sft_greedy": reward_sft[1],
        "reward_mean_ppo_greedy": reward_ppo[1],
        "arena": arena,
    });
    crate::train::metrics::write_summary(ctx.out_dir(), &summary)
        .map_err(|e| StageError::runtime(miette::Report::new(e)))?;
    EventWriter::create(ctx.out_dir())
        .and_then(|mut events| events.scalars(0, &summary_scalars(&summary)))
        .map_err(|e| StageError::runtime(miette::Report::new(e)))?;
    ctx.log(format!("summary {summary}"));
    ctx.finish();
    Ok(Outcome::Done)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::poker::scenario::{SpotMix, indexed_spot};

    const MIX: SpotMix = SpotMix {
        preflop: 0.5,
        heads_up: 0.3,
    };

    /// Even spots (type `a`) answered as the expert, odd ones (type `b`)
    /// with text that is no action.
    #[test]
    fn breakdown_counts_per_spot_type_and_action() {
        let scenarios: Vec<Scenario> = (0..20)
            .map(|i| {
                let (spot, _) = indexed_spot(11, i, &MIX);
                let best = if parse_answer(&spot, "fold").is_ok() {
                    "fold"
                } else {
                    "check"
                };
                Scenario {
                    prompt: render(&spot, PromptStyle::Compact),
                    spot_type: if i % 2 == 0 { "a" } else { "b" }.into(),
                    best: best.into(),
                    spot,
                }
            })
            .collect();
        let answers: Vec<String> = scenarios
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if i % 2 == 0 {
                    s.best.clone()
                } else {
                    "shrug".into()
                }
            })
            .collect();
        let per_type = BTreeMap::from([("b".to_string(), "fold".to_string())]);
        let (by_type, confusion) = breakdown(&scenarios, &answers, &per_type);
        assert_eq!(by_type["a"]["spots"], 10);
        assert_eq!(by_type["a"]["accuracy"], 1.0);
        assert_eq!(by_type["b"]["accuracy"], 0.0);
        let b_folds = scenarios
            .iter()
            .skip(1)
            .step_by(2)
            .filter(|s| s.best == "fold")
            .count();
        assert_eq!(by_type["b"]["baseline"], b_folds as f64 / 10.0);
        let cells: Vec<(&String, &String, u64)> = confusion
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(e, row)| {
                row.as_object()
                    .unwrap()
                    .iter()
                    .map(move |(m, c)| (e, m, c.as_u64().unwrap()))
            })
            .collect();
        assert_eq!(cells.iter().map(|c| c.2).sum::<u64>(), 20);
        assert_eq!(
            cells
                .iter()
                .filter(|c| c.1 == "illegal")
                .map(|c| c.2)
                .sum::<u64>(),
            10
        );
        assert!(
            cells
                .iter()
                .filter(|c| c.1 != "illegal")
                .all(|c| c.0 == c.1)
        );
    }

    #[test]
    fn summary_figures_become_scalars() {
        let summary = json!({
            "action_accuracy": 0.75,
            "rm_pairwise_accuracy": null,
            "arena": {"random": {"bb_per_100": 12.5, "ci95": [-3.0, 28.0], "hands": 400}},
        });
        let scalars = summary_scalars(&summary);
        assert_eq!(
            scalars,
            vec![
                ("action_accuracy".to_string(), 0.75),
                ("arena/random/bb_per_100".to_string(), 12.5),
                ("arena/random/ci95_low".to_string(), -3.0),
                ("arena/random/ci95_high".to_string(), 28.0),
            ]
        );
    }

    fn scenarios(style: PromptStyle) -> Vec<Scenario> {
        (0..20)
            .map(|i| {
                let (spot, _) = indexed_spot(11, i, &MIX);
                Scenario {
                    prompt: render(&spot, style),
                    spot_type: String::new(),
                    best: String::new(),
                    spot,
                }
            })
            .collect()
    }

    #[test]
    fn the_arena_prompts_in_the_style_of_the_held_out_prompts() {
        for style in [PromptStyle::Compact, PromptStyle::Natural] {
            let held_out = scenarios(style);
            assert_eq!(prompt_style(&held_out, None).unwrap(), style);
            assert_eq!(prompt_style(&held_out, Some(style)).unwrap(), style);
        }
        let compact = scenarios(PromptStyle::Compact);
        assert!(prompt_style(&compact, Some(PromptStyle::Natural)).is_err());
        let mut edited = compact;
        edited[3].prompt.push_str(" (edited)");
        assert!(prompt_style(&edited, None).is_err());
        assert_eq!(
            prompt_style(&edited, Some(PromptStyle::Natural)).unwrap(),
            PromptStyle::Natural
        );
    }
}
