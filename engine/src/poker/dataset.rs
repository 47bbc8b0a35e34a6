//! Training data from generated spots: SFT examples (prompt, best action),
//! preference pairs (prompt, better action, worse action by at least a
//! margin of EV) and PPO prompts (with the spot itself so a reward can be
//! computed for any answer), each with a held-out test file.
//!
//! Every record comes from its own RNG stream (seed, file, index), and
//! batches are labelled in parallel but written in index order, so the
//! output is byte-identical for the same parameters on any thread count.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use miette::Diagnostic;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::bots::BOT_NAMES;
use super::expert::{Expert, Judgement};
use super::game::Action;
use super::played::played_spot;
use super::scenario::{SpotMix, indexed_spot};
use super::spot::{PromptStyle, Spot, render};

/// Parameters of the `poker-data` stage kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PokerDataParams {
    /// SFT examples (prompt and best action), held-out test share included.
    #[serde(default = "defaults::scenarios")]
    #[schemars(range(min = 1, max = 10000000))]
    pub scenarios: u64,
    /// Preference pairs (prompt, chosen, rejected), test share included.
    #[serde(default = "defaults::pairs")]
    #[schemars(range(min = 1, max = 10000000))]
    pub pairs: u64,
    /// PPO prompts, test share included.
    #[serde(default = "defaults::prompts")]
    #[schemars(range(min = 1, max = 10000000))]
    pub prompts: u64,
    /// Share of preflop spots; the rest are flop, turn and river.
    #[serde(default = "defaults::preflop_fraction")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub preflop_fraction: f64,
    /// Share of heads-up tables; the rest are 6-max.
    #[serde(default = "defaults::heads_up_fraction")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub heads_up_fraction: f64,
    /// Prompt wording: `compact` (a few dozen tokens, for tiny models) or
    /// `natural` (full sentences).
    #[serde(default)]
    pub style: PromptStyle,
    /// Seed of spots, labels and the train/test split.
    #[serde(default = "defaults::seed")]
    pub seed: u64,
    /// Share of each file held out for testing.
    #[serde(default = "defaults::test_fraction")]
    #[schemars(range(min = 0.0, max = 0.9))]
    pub test_fraction: f64,
    /// Minimum EV gap in big blinds between a pair's chosen and rejected
    /// answers, so pairs teach real differences rather than noise.
    #[serde(default = "defaults::pair_margin")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub pair_margin: f64,
    /// Turn-river runouts the expert samples per flop spot (more is slower
    /// and more stable).
    #[serde(default = "defaults::flop_runouts")]
    #[schemars(range(min = 50, max = 5000))]
    pub flop_runouts: u32,
    /// Share of records taken from hands the expert plays heads-up against
    /// `played_opponents` (one of its decisions per hand) rather than from
    /// scripted lines: the lines the arena's bots take, as often as they
    /// take them.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub played_fraction: f64,
    /// Baseline bots the expert plays for `played_fraction`'s records.
    #[serde(default = "defaults::played_opponents")]
    pub played_opponents: Vec<String>,
}

/// Most records of one kind a stage may make: ten million spots take
/// hours already; more is a typo, not a plan.
pub const MAX_RECORDS: u64 = 10_000_000;

mod defaults {
    pub fn scenarios() -> u64 {
        5000
    }
    pub fn pairs() -> u64 {
        5000
    }
    pub fn prompts() -> u64 {
        1000
    }
    pub fn preflop_fraction() -> f64 {
        0.4
    }
    pub fn heads_up_fraction() -> f64 {
        0.3
    }
    pub fn seed() -> u64 {
        7
    }
    pub fn test_fraction() -> f64 {
        0.1
    }
    pub fn pair_margin() -> f64 {
        0.25
    }
    pub fn flop_runouts() -> u32 {
        400
    }
    pub fn played_opponents() -> Vec<String> {
        ["random", "calling-station", "tight-aggressive"]
            .map(String::from)
            .to_vec()
    }
}

impl Default for PokerDataParams {
    fn default() -> Self {
        PokerDataParams {
            scenarios: defaults::scenarios(),
            pairs: defaults::pairs(),
            prompts: defaults::prompts(),
            preflop_fraction: defaults::preflop_fraction(),
            heads_up_fraction: defaults::heads_up_fraction(),
            style: PromptStyle::default(),
            seed: defaults::seed(),
            test_fraction: defaults::test_fraction(),
            pair_margin: defaults::pair_margin(),
            flop_runouts: defaults::flop_runouts(),
            played_fraction: 0.0,
            played_opponents: defaults::played_opponents(),
        }
    }
}

impl PokerDataParams {
    /// Check the ranges the schema states; each problem as (field, message).
    pub fn check(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        for (field, value) in [
            ("scenarios", self.scenarios),
            ("pairs", self.pairs),
            ("prompts", self.prompts),
        ] {
            if !(1..=MAX_RECORDS).contains(&value) {
                problems.push((
                    field,
                    format!("must be between 1 and {MAX_RECORDS}, got {value}"),
                ));
            }
        }
        for (field, value, max) in [
            ("preflop_fraction", self.preflop_fraction, 1.0),
            ("heads_up_fraction", self.heads_up_fraction, 1.0),
            ("test_fraction", self.test_fraction, 0.9),
            ("pair_margin", self.pair_margin, 100.0),
            ("played_fraction", self.played_fraction, 1.0),
        ] {
            if !(0.0..=max).contains(&value) {
                problems.push((field, format!("must be between 0 and {max}, got {value}")));
            }
        }
        if !(50..=5000).contains(&self.flop_runouts) {
            problems.push((
                "flop_runouts",
                format!("must be between 50 and 5000, got {}", self.flop_runouts),
            ));
        }
        if self.played_opponents.is_empty() {
            problems.push((
                "played_opponents",
                format!("needs at least one bot, one of: {}", BOT_NAMES.join(", ")),
            ));
        }
        for name in &self.played_opponents {
            if !BOT_NAMES.contains(&name.as_str()) {
                problems.push((
                    "played_opponents",
                    format!(
                        "unknown bot `{name}`, expected one of: {}",
                        BOT_NAMES.join(", ")
                    ),
                ));
            }
        }
        problems
    }

    fn mix(&self) -> SpotMix {
        SpotMix {
            preflop: self.preflop_fraction,
            heads_up: self.heads_up_fraction,
        }
    }

    fn expert(&self) -> Expert {
        Expert {
            seed: self.seed ^ 0xE4_9E57,
            flop_runouts: self.flop_runouts as usize,
        }
    }

    fn held_out(&self, count: u64) -> u64 {
        ((count as f64) * self.test_fraction).round() as u64
    }
}

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DatasetSummary {
    /// Records per file name.
    pub files: BTreeMap<String, u64>,
    /// SFT examples per spot type (e.g. `flop/facing-bet`).
    pub spot_types: BTreeMap<String, u64>,
    /// SFT labels per action kind (fold, check, call, bet, raise, all in).
    pub labels: BTreeMap<String, u64>,
    /// Spots drawn for pairs that had no action worse than the best by the
    /// margin.
    pub spots_without_pair: u64,
    /// Mean prompt length in characters.
    pub mean_prompt_chars: f64,
}

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum DatasetError {
    #[error("invalid poker-data parameter `{field}`: {message}")]
    #[diagnostic(
        code(poker::params),
        help("see `poker-pipe schema` for the allowed ranges")
    )]
    Params {
        field: &'static str,
        message: String,
    },
    #[error("cannot write {path}")]
    #[diagnostic(
        code(poker::io),
        help("check that the output directory exists and is writable")
    )]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("stopped before the data was complete")]
    #[diagnostic(code(poker::stopped))]
    Stopped,
}

/// One JSONL file being written, with its train/test split point.
struct Sink {
    train: (PathBuf, BufWriter<File>),
    test: (PathBuf, BufWriter<File>),
    train_count: u64,
    written: u64,
}

fn create(path: PathBuf) -> Result<(PathBuf, BufWriter<File>), DatasetError> {
    match File::create(&path) {
        Ok(file) => Ok((path, BufWriter::new(file))),
        Err(source) => Err(DatasetError::Io { path, source }),
    }
}

impl Sink {
    fn new(dir: &Path, name: &str, total: u64, test: u64) -> Result<Sink, DatasetError> {
        Ok(Sink {
            train: create(dir.join(format!("{name}.jsonl")))?,
            test: create(dir.join(format!("test_{name}.jsonl")))?,
            train_count: total - test,
            written: 0,
        })
    }

    fn write(&mut self, line: &str) -> Result<(), DatasetError> {
        let (path, out) = if self.written < self.train_count {
            &mut self.train
        } else {
            &mut self.test
        };
        self.written += 1;
        writeln!(out, "{line}").map_err(|source| DatasetError::Io {
            path: path.clone(),
            source,
        })
    }

    fn finish(mut self) -> Result<(), DatasetError> {
        for (path, out) in [&mut self.train, &mut self.test] {
            out.flush().map_err(|source| DatasetError::Io {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// Indices labelled per parallel batch.
const BATCH: u64 = 512;

/// Which file a record stream feeds.
#[derive(Clone, Copy)]
enum Stream {
    Sft = 1,
    Pairs = 2,
    Prompts = 3,
}

/// The spot for record `index` of `stream`, its expert judgement and its
/// RNG. Played records are spread evenly: index `i` is played when
/// `floor((i + 1) f)` passes an integer, so any prefix holds its share;
/// their judgement comes from the hand, scripted ones are judged here.
fn draw(params: &PokerDataParams, stream: Stream, index: u64) -> (Spot, Judgement, ChaCha8Rng) {
    let key = ((stream as u64) << 48) | index;
    let f = params.played_fraction;
    let played = ((index + 1) as f64 * f).floor() > (index as f64 * f).floor();
    if played
        && let Some(p) = played_spot(params.seed, key, &params.played_opponents, params.expert())
    {
        return (p.spot, p.judged, p.rng);
    }
    let (spot, rng) = indexed_spot(params.seed, key, &params.mix());
    let judged = params.expert().judge(&spot);
    (spot, judged, rng)
}

/// Generate the six JSONL files into `out_dir` (which must exist).
/// `progress(done, total)` is called after every batch. `stop` is polled
/// before every record (so a Ctrl-C is seen within one record's time, not a
/// batch's); once it says yes, generation ends with [`DatasetError::Stopped`].
pub fn generate(
    params: &PokerDataParams,
    out_dir: &Path,
    mut progress: impl FnMut(u64, u64),
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<DatasetSummary, DatasetError> {
    if let Some((field, message)) = params.check().into_iter().next() {
        return Err(DatasetError::Params { field, message });
    }
    let style = params.style;
    let total = params.scenarios + params.pairs + params.prompts;
    let mut done = 0;
    let mut summary = DatasetSummary::default();
    let mut prompt_chars = 0u64;

    let mut sft = Sink::new(
        out_dir,
        "sft",
        params.scenarios,
        params.held_out(params.scenarios),
    )?;
    let mut start = 0;
    while start < params.scenarios {
        let end = (start + BATCH).min(params.scenarios);
        let lines: Vec<(String, String, Action, usize)> =
            unless_stopped((start..end).into_par_iter().map(|i| {
                (!stop()).then(|| {
                    let (spot, judged, _) = draw(params, Stream::Sft, i);
                    let best = judged.best_action();
                    let prompt = render(&spot, style);
                    let line = json!({"prompt": prompt, "response": best.answer()}).to_string();
                    (line, spot.spot_type().to_string(), best, prompt.len())
                })
            }))?;
        for (line, kind, best, chars) in lines {
            sft.write(&line)?;
            *summary.spot_types.entry(kind).or_default() += 1;
            *summary.labels.entry(best.kind().to_string()).or_default() += 1;
            prompt_chars += chars as u64;
        }
        done += end - start;
        progress(done, total);
        start = end;
    }
    sft.finish()?;

    let mut pairs = Sink::new(
        out_dir,
        "pairs",
        params.pairs,
        params.held_out(params.pairs),
    )?;
    let (mut written, mut next) = (0, 0);
    while written < params.pairs {
        let lines: Vec<Option<String>> =
            unless_stopped((next..next + BATCH).into_par_iter().map(|i| {
                if stop() {
                    return None;
                }
                let (spot, judged, mut rng) = draw(params, Stream::Pairs, i);
                let worse: Vec<Action> = judged
                    .values
                    .iter()
                    .filter(|v| v.ev <= judged.best_ev() - params.pair_margin)
                    .map(|v| v.action)
                    .collect();
                if worse.is_empty() {
                    return Some(None);
                }
                let rejected = worse[rng.random_range(0..worse.len())];
                Some(Some(
                    json!({
                        "prompt": render(&spot, style),
                        "chosen": judged.best_action().answer(),
                        "rejected": rejected.answer(),
                    })
                    .to_string(),
                ))
            }))?;
        next += BATCH;
        for line in lines {
            match line {
                Some(line) if written < params.pairs => {
                    pairs.write(&line)?;
                    written += 1;
                }
                Some(_) => {}
                None => summary.spots_without_pair += 1,
            }
        }
        progress(done + written, total);
    }
    pairs.finish()?;
    done += written;

    let mut prompts = Sink::new(
        out_dir,
        "prompts",
        params.prompts,
        params.held_out(params.prompts),
    )?;
    let mut start = 0;
    while start < params.prompts {
        let end = (start + BATCH).min(params.prompts);
        let lines: Vec<String> = unless_stopped((start..end).into_par_iter().map(|i| {
            (!stop()).then(|| {
                let (spot, judged, _) = draw(params, Stream::Prompts, i);
                let evs: serde_json::Map<String, serde_json::Value> = judged
                    .values
                    .iter()
                    .map(|v| (v.action.answer(), json!((v.ev * 1000.0).round() / 1000.0)))
                    .collect();
                json!({
                    "prompt": render(&spot, style),
                    "best": judged.best_action().answer(),
                    "evs": evs,
                    "spot_type": spot.spot_type().to_string(),
                    "spot": spot,
                })
                .to_string()
            })
        }))?;
        for line in lines {
            prompts.write(&line)?;
        }
        done += end - start;
        progress(done, total);
        start = end;
    }
    prompts.finish()?;

    for (name, count) in [
        ("sft", params.scenarios),
        ("pairs", params.pairs),
        ("prompts", params.prompts),
    ] {
        let test = params.held_out(count);
        summary.files.insert(format!("{name}.jsonl"), count - test);
        summary.files.insert(format!("test_{name}.jsonl"), test);
    }
    summary.mean_prompt_chars = prompt_chars as f64 / params.scenarios as f64;
    Ok(summary)
}

/// The records of a batch, or [`DatasetError::Stopped`] if any was skipped
/// because a stop was asked for.
fn unless_stopped<T: Send>(
    records: impl ParallelIterator<Item = Option<T>>,
) -> Result<Vec<T>, DatasetError> {
    records
        .collect::<Option<Vec<T>>>()
        .ok_or(DatasetError::Stopped)
}

/// A `stop` for [`generate`] that never stops.
pub fn never() -> bool {
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn small() -> PokerDataParams {
        PokerDataParams {
            scenarios: 120,
            pairs: 60,
            prompts: 30,
            ..PokerDataParams::default()
        }
    }

    #[test]
    fn a_stop_ends_generation() {
        let dir = tempfile::tempdir().unwrap();
        let err = generate(&small(), dir.path(), |_, _| {}, &|| true).unwrap_err();
        assert!(matches!(err, DatasetError::Stopped), "{err:?}");
    }

    #[test]
    fn writes_six_files_deterministically() {
        let params = small();
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let summary = generate(&params, a.path(), |_, _| {}, &never).unwrap();
        let single = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        single
            .install(|| generate(&params, b.path(), |_, _| {}, &never))
            .unwrap();
        for name in [
            "sft",
            "pairs",
            "prompts",
            "test_sft",
            "test_pairs",
            "test_prompts",
        ] {
            let file = format!("{name}.jsonl");
            let x = std::fs::read_to_string(a.path().join(&file)).unwrap();
            let y = std::fs::read_to_string(b.path().join(&file)).unwrap();
            assert_eq!(x, y, "{file}");
            assert_eq!(x.lines().count() as u64, summary.files[&file], "{file}");
        }
        assert_eq!(summary.files["test_sft.jsonl"], 12);
        let first: serde_json::Value = serde_json::from_str(
            std::fs::read_to_string(a.path().join("pairs.jsonl"))
                .unwrap()
                .lines()
                .next()
                .unwrap(),
        )
        .unwrap();
        assert_ne!(first["chosen"], first["rejected"]);
        let prompt: serde_json::Value = serde_json::from_str(
            std::fs::read_to_string(a.path().join("prompts.jsonl"))
                .unwrap()
                .lines()
                .next()
                .unwrap(),
        )
        .unwrap();
        let spot: Spot = serde_json::from_value(prompt["spot"].clone()).unwrap();
        assert_eq!(render(&spot, params.style), prompt["prompt"]);
    }

    #[test]
    fn rejects_out_of_range_parameters() {
        let params = PokerDataParams {
            test_fraction: 1.5,
            ..small()
        };
        let dir = tempfile::tempdir().unwrap();
        let err = generate(&params, dir.path(), |_, _| {}, &never).unwrap_err();
        assert!(err.to_string().contains("test_fraction"));
        let parsed: Result<PokerDataParams, _> =
            serde_json::from_str(r#"{"scenarios": 3, "bogus": 1}"#);
        assert!(parsed.is_err());
        let params = PokerDataParams {
            played_opponents: vec!["random".into(), "shark".into()],
            ..small()
        };
        let problems = params.check();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "played_opponents");
        assert!(problems[0].1.contains("`shark`"), "{}", problems[0].1);
    }

    #[test]
    fn played_records_take_their_share_from_played_hands() {
        // 6-max only for scripted lines, so heads-up spots are played ones.
        let params = PokerDataParams {
            heads_up_fraction: 0.0,
            played_fraction: 0.25,
            ..small()
        };
        let dir = tempfile::tempdir().unwrap();
        generate(&params, dir.path(), |_, _| {}, &never).unwrap();
        let text = std::fs::read_to_string(dir.path().join("prompts.jsonl")).unwrap();
        let tables: Vec<bool> = text
            .lines()
            .map(|line| {
                let record: serde_json::Value = serde_json::from_str(line).unwrap();
                let spot: Spot = serde_json::from_value(record["spot"].clone()).unwrap();
                spot.table == crate::poker::game::Table::HeadsUp
            })
            .collect();
        // Records 3, 7, 11, ... of 27 training prompts: every fourth.
        let expected: Vec<bool> = (0..tables.len() as u64).map(|i| i % 4 == 3).collect();
        assert_eq!(tables, expected);
    }
}
