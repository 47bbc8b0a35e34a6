//! `poker-pipe arena`: two players on duplicate heads-up deals.

use miette::miette;

use crate::error::{CmdResult, Exit, Failure};
use crate::poker::arena::play_match;
use crate::poker::bots::{BOT_NAMES, Player, bot};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Player A (results are from A's point of view).
    #[arg(long, value_name = "PLAYER")]
    pub a: String,
    /// Player B.
    #[arg(long, value_name = "PLAYER")]
    pub b: String,
    /// Hands to play; each deal is played twice with seats swapped.
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    pub hands: u64,
    #[arg(long, default_value_t = 1, value_name = "S")]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
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
            "players are {}; did you mean `{closest}`?",
            BOT_NAMES.join(", ")
        ),
        "unknown player `{name}` for {flag}"
    )))
}

pub fn run(args: Args) -> CmdResult {
    check_name("--a", &args.a)?;
    check_name("--b", &args.b)?;
    if args.hands < 2 {
        return Err(Failure::user(miette!(
            help = "a duplicate deal is two hands; ask for at least 2",
            "--hands must be at least 2, got {}",
            args.hands
        )));
    }
    let (a, b) = (args.a.clone(), args.b.clone());
    let make_a = move |seed| -> Box<dyn Player> {
        bot(&a, seed).unwrap_or_else(|| Box::new(crate::poker::bots::CallingStation))
    };
    let make_b = move |seed| -> Box<dyn Player> {
        bot(&b, seed).unwrap_or_else(|| Box::new(crate::poker::bots::CallingStation))
    };
    let result = play_match(&make_a, &make_b, args.hands, args.seed)
        .map_err(|e| Failure::runtime(miette!("{e}")))?;
    match args.format {
        Format::Json => {
            let json = serde_json::json!({"hands": result.hands, "bb_per_100": result.bb_per_100, "ci95": result.ci95});
            println!("{json}");
        }
        Format::Text => println!(
            "{} vs {}: {:+.1} bb/100 over {} hands (95% CI {:+.1} to {:+.1})",
            args.a, args.b, result.bb_per_100, result.hands, result.ci95[0], result.ci95[1]
        ),
    }
    Ok(Exit::Ok)
}
