//! `poker-pipe arena`: two players on duplicate heads-up deals (and with
//! `--compare`, a third against the same B on the same deals, reported as
//! the paired difference). A player
//! is a baseline bot or `model:DIR`, a trained model answering prompts
//! greedily on `--device`, served from one thread as the eval stage plays
//! it ([`crate::stages::model_seats`]).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use miette::miette;

use super::device::on_device;
use crate::backend::{Backend, Device, Dtype, OnBackend};
use crate::error::{CmdResult, Exit, Failure};
use crate::poker::arena::{ArenaResult, paired_difference, play_match};
use crate::poker::bots::{BOT_NAMES, Player, bot};
use crate::poker::spot::PromptStyle;
use crate::poker::trace::{Decision, Traced, regret_by_spot_type};
use crate::stages::lm_answerer::{BATCH, LmAnswerer};
use crate::stages::model_seats::{self, ModelSeat};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Player A (results are from A's point of view): a bot name or
    /// `model:DIR` (a model folder, e.g. `model:runs/tiny/rlhf/actor`, or
    /// `model:gguf:FILE`, `model:hf:owner/name`).
    #[arg(long, value_name = "PLAYER")]
    pub a: String,
    /// Player B, as for --a.
    #[arg(long, value_name = "PLAYER")]
    pub b: String,
    /// Also play this player against B on the same deals, and report A
    /// minus it per deal (the paired difference, with its 95% interval):
    /// how two models compare against one opponent, with the luck of the
    /// cards taken out.
    #[arg(long, value_name = "PLAYER")]
    pub compare: Option<String>,
    /// Prompt style of `model:` players (the style they were trained on).
    #[arg(long, value_enum, default_value_t = PromptStyle::Compact)]
    pub style: PromptStyle,
    /// Tokens a `model:` player may generate per answer.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub max_new_tokens: usize,
    /// Send prompts bare, without the model's chat template (by default a
    /// model whose tokenizer_config.json has one is prompted in it).
    #[arg(long)]
    pub no_chat_template: bool,
    /// Decisions a `model:` player answers together, in one batch (1: one
    /// at a time). The result does not depend on it; the speed does.
    #[arg(long, default_value_t = BATCH as u16, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub batch: u16,
    /// Hands to play; each deal is played twice with seats swapped.
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    pub hands: u64,
    #[arg(long, default_value_t = 1, value_name = "S")]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write every decision of player A to this JSONL file, in deal order:
    /// spot type, prompt, action, the expert's best action and the regret
    /// in big blinds by the expert's EVs (sort by it to see what loses).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Where `model:` players run: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// Storage of the model's weights: `f32`, or `bf16` (frozen weights in
    /// bfloat16, rounding as the CUDA kernels do, on any device).
    #[arg(long, default_value = "f32")]
    pub dtype: Dtype,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Makes a fresh player for each chunk of deals (bots are seeded per
/// chunk; a model is loaded once and served from one thread).
type MakePlayer = Box<dyn Fn(u64) -> Box<dyn Player> + Send + Sync>;

/// What a `--a`/`--b` value names: a bot, or the `index`th model folder
/// named on the command line.
enum Seat {
    Bot(String),
    Model { dir: PathBuf, index: usize },
}

impl Seat {
    fn parse(flag: &str, spec: &str, models_before: usize) -> Result<Self, Failure> {
        match spec.strip_prefix("model:") {
            Some(dir) => Ok(Seat::Model {
                dir: PathBuf::from(dir),
                index: models_before,
            }),
            None => check_name(flag, spec).map(|()| Seat::Bot(spec.to_string())),
        }
    }

    fn is_model(&self) -> bool {
        matches!(self, Seat::Model { .. })
    }

    /// The player maker of this seat, a model's from its served seat.
    fn maker(&self, served: &[ModelSeat], style: PromptStyle) -> MakePlayer {
        match self {
            Seat::Model { index, .. } => {
                let model = served[*index].clone();
                Box::new(move |_| model.player(style))
            }
            Seat::Bot(name) => {
                let name = name.clone();
                Box::new(move |seed| {
                    bot(&name, seed).unwrap_or_else(|| Box::new(crate::poker::bots::CallingStation))
                })
            }
        }
    }
}

/// The matches, waiting for the backend their models run on: A against B,
/// and the `--compare` player against B on the same deals.
struct Match<'a> {
    args: &'a Args,
    /// A, B and the `--compare` player when there is one.
    seats: Vec<(&'static str, Seat)>,
    traced: bool,
}

impl OnBackend for Match<'_> {
    type Output = Result<Vec<ArenaResult>, Failure>;

    fn run<B: Backend>(self, be: &B) -> Result<Vec<ArenaResult>, Failure> {
        let mut models = Vec::new();
        for (flag, seat) in &self.seats {
            if let Seat::Model { dir, .. } = seat {
                let text = dir.to_string_lossy();
                let dir = crate::model::source::local_dir(&text).map_err(|e| {
                    Failure::user(miette::Report::new(e).wrap_err(format!("{flag}: `{text}`")))
                })?;
                let lm = LmAnswerer::load(
                    be,
                    &dir,
                    self.args.max_new_tokens,
                    !self.args.no_chat_template,
                )
                .map_err(|e| {
                    Failure::user(
                        e.report
                            .wrap_err(format!("{flag}: cannot load `{}`", dir.display())),
                    )
                })?;
                models.push(lm);
            }
        }
        let models: Vec<&LmAnswerer<'_, B>> = models.iter().collect();
        let (args, style) = (self.args, self.args.style);
        model_seats::serve(&models, usize::from(args.batch), |served| {
            let mut makers: Vec<MakePlayer> = self
                .seats
                .iter()
                .map(|(_, s)| s.maker(&served, style))
                .collect();
            if self.traced {
                let a = makers.remove(0);
                makers.insert(
                    0,
                    Box::new(move |seed| Box::new(Traced::new(a(seed), style))),
                );
            }
            let make_b = &makers[1];
            [0, 2]
                .into_iter()
                .filter_map(|i| makers.get(i))
                .map(|make| play_match(&**make, &**make_b, args.hands, args.seed))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(Failure::runtime)?
        .map_err(|e| Failure::runtime(miette!("{e}")))
    }
}

fn check_name(flag: &str, name: &str) -> Result<(), Failure> {
    if bot(name, 0).is_some() {
        return Ok(());
    }
    let closest = BOT_NAMES
        .iter()
        .min_by_key(|n| strsim::levenshtein(n, name))
        .copied()
        .unwrap_or("random");
    Err(Failure::user(miette!(
        help = format!(
            "players are {} or model:DIR; did you mean `{closest}`?",
            BOT_NAMES.join(", ")
        ),
        "unknown player `{name}` for {flag}"
    )))
}

pub fn run(args: Args) -> CmdResult {
    if args.hands < 2 {
        return Err(Failure::user(miette!(
            help = "a duplicate deal is two hands; ask for at least 2",
            "--hands must be at least 2, got {}",
            args.hands
        )));
    }
    let a = Seat::parse("--a", &args.a, 0)?;
    let b = Seat::parse("--b", &args.b, usize::from(a.is_model()))?;
    let compare = match &args.compare {
        Some(spec) => {
            let before = usize::from(a.is_model()) + usize::from(b.is_model());
            Some(Seat::parse("--compare", spec, before)?)
        }
        None => None,
    };
    // The trace file is created before the match, so a bad path costs no
    // play.
    let trace = match &args.trace {
        Some(path) => Some((path, File::create(path).map_err(|e| trace_error(path, e))?)),
        None => None,
    };
    // Bots alone need no device.
    let any_model = a.is_model() || b.is_model() || compare.as_ref().is_some_and(Seat::is_model);
    let device = if any_model { args.device } else { Device::Cpu };
    let mut seats = vec![("--a", a), ("--b", b)];
    seats.extend(compare.map(|c| ("--compare", c)));
    let results = on_device(
        device,
        args.dtype,
        Match {
            args: &args,
            seats,
            traced: trace.is_some(),
        },
    )?;
    let [result, compared @ ..] = results.as_slice() else {
        return Err(Failure::runtime(miette!("the match returned no result")));
    };
    if let Some((path, file)) = trace {
        write_trace(path, file, &result.trace)?;
    }
    let paired = compared.first().map(|c| (c, paired_difference(result, c)));
    let figures = |r: &ArenaResult| serde_json::json!({"hands": r.hands, "bb_per_100": r.bb_per_100, "ci95": r.ci95});
    match args.format {
        Format::Json => {
            let mut json = figures(result);
            if let Some((c, d)) = &paired {
                json["compare"] = figures(c);
                json["difference"] = d.as_ref().map(figures).unwrap_or_default();
            }
            println!("{json}");
        }
        Format::Text => {
            let line = |who: &str, r: &ArenaResult| {
                println!(
                    "{who} vs {}: {:+.1} bb/100 over {} hands (95% CI {:+.1} to {:+.1})",
                    args.b, r.bb_per_100, r.hands, r.ci95[0], r.ci95[1]
                );
            };
            line(&args.a, result);
            if let (Some((c, d)), Some(name)) = (&paired, &args.compare) {
                line(name, c);
                if let Some(d) = d {
                    println!(
                        "{} minus {name}, paired on the same deals: {:+.1} bb/100 (95% CI {:+.1} to {:+.1})",
                        args.a, d.bb_per_100, d.ci95[0], d.ci95[1]
                    );
                }
            }
            if let Some(path) = &args.trace {
                print_regret(path, &result.trace);
            }
        }
    }
    Ok(Exit::Ok)
}

fn trace_error(path: &Path, e: std::io::Error) -> Failure {
    Failure::user(miette!(
        help = "--trace names a file to create; its folder must exist and be writable",
        "cannot write `{}`: {e}",
        path.display()
    ))
}

fn write_trace(path: &Path, file: File, trace: &[Decision]) -> Result<(), Failure> {
    let io = |e: std::io::Error| trace_error(path, e);
    let mut out = BufWriter::new(file);
    for decision in trace {
        let line = serde_json::to_string(decision).map_err(|e| io(e.into()))?;
        writeln!(out, "{line}").map_err(io)?;
    }
    out.flush().map_err(io)
}

/// The trace's total regret and its three costliest spot types.
fn print_regret(path: &Path, trace: &[Decision]) {
    let total: f64 = trace.iter().map(|d| d.regret_bb).sum();
    let agree = trace.iter().filter(|d| d.action == d.expert).count();
    println!(
        "{} decisions of A in {}: {agree} as the expert plays them, {total:.1} bb of regret by its EVs",
        trace.len(),
        path.display()
    );
    for (spot_type, regret, n) in regret_by_spot_type(trace).into_iter().take(3) {
        println!("  {spot_type}: {regret:.1} bb over {n} decisions");
    }
}
