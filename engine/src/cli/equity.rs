//! `poker-pipe equity`: equity of hands against hands or a range.

use std::fmt::Write as _;

use miette::miette;

use crate::error::{CmdResult, Exit, Failure};
use crate::poker::cards::{Card, CardSet, ParseError, parse_board, parse_hole};
use crate::poker::equity::{DEFAULT_EXACT_LIMIT, Holding, Method, equity};
use crate::poker::range::parse_range;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Hole cards of each player, e.g. `AhKh QsQd`.
    #[arg(value_name = "HAND", required = true)]
    pub hands: Vec<String>,
    /// Known board cards (flop, turn or river), e.g. `Ts3s2d`.
    #[arg(long, value_name = "CARDS")]
    pub board: Option<String>,
    /// One more opponent holding any hand of this range, e.g. `QQ+, AKs, ATo+`.
    #[arg(long, value_name = "RANGE")]
    pub vs_range: Option<String>,
    /// Monte Carlo samples when exact enumeration is too large.
    #[arg(long, default_value_t = 200_000, value_name = "N")]
    pub iters: u64,
    /// Monte Carlo seed.
    #[arg(long, default_value_t = 1, value_name = "S")]
    pub seed: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

fn bad(err: ParseError, name: &str, source: &str) -> Failure {
    Failure::user(err.into_diagnostic(name, source))
}

/// A card already used elsewhere on the command line, located in its argument.
fn duplicate(seen: &mut CardSet, cards: &[Card], name: &str, source: &str) -> Result<(), Failure> {
    for card in cards {
        if seen.contains(*card) {
            let at = source
                .to_ascii_lowercase()
                .find(&card.to_string().to_ascii_lowercase())
                .unwrap_or(0);
            let err = ParseError::new(
                format!("{card} is already used by another hand or the board"),
                at,
                2,
                "each card of the deck can be used only once",
            );
            return Err(bad(err, name, source));
        }
        *seen = seen.with(*card);
    }
    Ok(())
}

pub fn run(args: Args) -> CmdResult {
    let mut seen = CardSet::default();
    let board = match &args.board {
        Some(text) => {
            let cards = parse_board(text).map_err(|e| bad(e, "--board", text))?;
            duplicate(&mut seen, &cards, "--board", text)?;
            cards
        }
        None => Vec::new(),
    };
    let mut holdings = Vec::new();
    for (i, text) in args.hands.iter().enumerate() {
        let name = format!("HAND {}", i + 1);
        let hole = parse_hole(text).map_err(|e| bad(e, &name, text))?;
        duplicate(&mut seen, &hole, &name, text)?;
        holdings.push(Holding::Hand(hole));
    }
    if let Some(text) = &args.vs_range {
        let range = parse_range(text).map_err(|e| bad(e, "--vs-range", text))?;
        holdings.push(Holding::Range(range.combos));
    }
    let result = equity(
        &holdings,
        &board,
        args.iters,
        args.seed,
        DEFAULT_EXACT_LIMIT,
    )
    .map_err(|e| {
        Failure::user(miette!(
            help = "give two or more hands, or one hand and --vs-range, with no card twice",
            "{e}"
        ))
    })?;
    match args.format {
        Format::Json => {
            let json =
                serde_json::to_string(&result).map_err(|e| Failure::runtime(miette!("{e}")))?;
            println!("{json}");
        }
        Format::Text => {
            let mut out = String::new();
            let mut names: Vec<String> = args.hands.clone();
            if let Some(range) = &args.vs_range {
                names.push(format!("range {range}"));
            }
            for (i, (name, eq)) in names.iter().zip(&result.equity).enumerate() {
                let se = result.std_error[i];
                let _ = match result.method {
                    Method::Exact => writeln!(out, "{name:>12}  {:6.2}%", eq * 100.0),
                    Method::MonteCarlo => {
                        writeln!(out, "{name:>12}  {:6.2}% ± {:.2}", eq * 100.0, 196.0 * se)
                    }
                };
            }
            let method = match result.method {
                Method::Exact => "exact",
                Method::MonteCarlo => "monte carlo (95% interval)",
            };
            let _ = writeln!(out, "{method}, {} outcomes", result.samples);
            print!("{out}");
        }
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(hands: &[&str], board: Option<&str>) -> Args {
        Args {
            hands: hands.iter().map(|h| h.to_string()).collect(),
            board: board.map(str::to_string),
            vs_range: None,
            iters: 1000,
            seed: 1,
            format: Format::Json,
        }
    }

    fn exit_of(result: CmdResult) -> Exit {
        match result {
            Ok(exit) => exit,
            Err(failure) => failure.exit,
        }
    }

    #[test]
    fn bad_and_duplicated_cards_are_user_errors() {
        assert_eq!(exit_of(run(args(&["AhKx", "QsQd"], None))), Exit::User);
        assert_eq!(exit_of(run(args(&["AhKh", "AhQd"], None))), Exit::User);
        assert_eq!(
            exit_of(run(args(&["AhKh", "QsQd"], Some("Qs2c3d")))),
            Exit::User
        );
        assert_eq!(exit_of(run(args(&["AhKh"], None))), Exit::User);
        assert_eq!(
            exit_of(run(args(&["AhKh", "QsQd"], Some("2c3d4h")))),
            Exit::Ok
        );
    }

    #[test]
    fn duplicate_is_located_in_its_argument() {
        let mut seen = CardSet::of(&parse_board("Qs2c3d").unwrap_or_default());
        let hole = parse_hole("AhQs").unwrap_or([Card::from_index(0); 2]);
        let failure = duplicate(&mut seen, &hole, "HAND 1", "AhQs").err();
        let report = failure
            .map(|f| format!("{:?}", f.report))
            .unwrap_or_default();
        assert!(report.contains("Qs is already used"), "{report}");
    }
}
