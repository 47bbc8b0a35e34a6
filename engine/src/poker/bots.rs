//! Players: the [`Player`] interface and the baseline bots (random, calling
//! station, tight-aggressive, expert), plus [`PromptPlayer`], the adapter a
//! language model plugs into (prompt text in, answer text out).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::cards::CardSet;
use super::equity::deal;
use super::eval::evaluate;
use super::expert::Expert;
use super::game::{Action, BB, Street};
use super::preflop::PreflopTable;
use super::range::HandClass;
use super::spot::{PromptStyle, Spot, parse_answer, render};
use super::trace::Decision;

/// Anything that can decide an action in a spot. Answers should be legal;
/// the arena replaces an illegal one by check, else fold, and counts it.
pub trait Player: Send {
    fn name(&self) -> String;
    fn act(&mut self, spot: &Spot) -> Action;
    /// Answers that were not legal actions so far (for reports).
    fn illegal_answers(&self) -> u64 {
        0
    }
    /// The decisions recorded since the last call, for players that keep
    /// them ([`super::trace::Traced`]).
    fn take_trace(&mut self) -> Vec<Decision> {
        Vec::new()
    }
}

/// The bot names `poker-pipe arena` accepts.
pub const BOT_NAMES: &[&str] = &["random", "calling-station", "tight-aggressive", "expert"];

/// A bot by name, seeded.
pub fn bot(name: &str, seed: u64) -> Option<Box<dyn Player>> {
    Some(match name {
        "random" => Box::new(RandomPlayer::new(seed)),
        "calling-station" => Box::new(CallingStation),
        "tight-aggressive" => Box::new(TightAggressive::new(seed)),
        "expert" => Box::new(ExpertPlayer {
            expert: Expert::new(seed),
        }),
        _ => return None,
    })
}

/// Picks uniformly among the offered actions.
pub struct RandomPlayer {
    rng: ChaCha8Rng,
}

impl RandomPlayer {
    pub fn new(seed: u64) -> Self {
        RandomPlayer {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }
}

impl Player for RandomPlayer {
    fn name(&self) -> String {
        "random".into()
    }
    fn act(&mut self, spot: &Spot) -> Action {
        let options = spot.options();
        options[self.rng.random_range(0..options.len())]
    }
}

/// Checks when it can, calls everything else (all in if the call is).
pub struct CallingStation;

impl Player for CallingStation {
    fn name(&self) -> String {
        "calling-station".into()
    }
    fn act(&mut self, spot: &Spot) -> Action {
        if spot.to_call == 0 {
            Action::Check
        } else if spot.to_call < spot.hero_stack {
            Action::Call
        } else {
            Action::AllIn
        }
    }
}

/// Plays the top of the preflop chart and bets or calls by equity against
/// a random hand, with pot odds.
pub struct TightAggressive {
    rng: ChaCha8Rng,
}

impl TightAggressive {
    pub fn new(seed: u64) -> Self {
        TightAggressive {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Equity against one random hand, 400 seeded samples.
    fn equity(&mut self, spot: &Spot) -> f64 {
        let hero = CardSet::of(&spot.hole).0;
        let board = CardSet::of(&spot.board).0;
        let missing = 5 - spot.board.len() as u32;
        let mut won = 0.0;
        for _ in 0..400 {
            let villain = deal(&mut self.rng, hero | board, 2);
            let rest = deal(&mut self.rng, hero | board | villain, missing);
            let (h, v) = (
                evaluate(CardSet(hero | board | rest)),
                evaluate(CardSet(villain | board | rest)),
            );
            won += if h > v {
                1.0
            } else if h == v {
                0.5
            } else {
                0.0
            };
        }
        won / 400.0
    }
}

fn sized(options: &[Action], largest: bool) -> Option<Action> {
    let mut sizes = options
        .iter()
        .copied()
        .filter(|a| matches!(a, Action::Bet(_) | Action::Raise(_)));
    if largest {
        sizes.next_back()
    } else {
        sizes.next()
    }
}

impl Player for TightAggressive {
    fn name(&self) -> String {
        "tight-aggressive".into()
    }
    fn act(&mut self, spot: &Spot) -> Action {
        let options = spot.options();
        let passive = if spot.to_call == 0 {
            Action::Check
        } else {
            Action::Fold
        };
        let call = if options.contains(&Action::Call) {
            Action::Call
        } else {
            Action::AllIn
        };
        let raise = |largest| sized(&options, largest).unwrap_or(Action::AllIn);
        if spot.street == Street::Preflop {
            let strength = PreflopTable::get().percentile(HandClass::of(spot.hole));
            let unopened = spot.current_bet <= BB;
            return match (unopened, strength) {
                (true, s) if s <= 0.20 => raise(false),
                (true, _) => passive,
                (false, s) if s <= 0.04 => raise(false),
                (false, s) if s <= 0.15 && spot.to_call <= 10 * BB => call,
                _ => passive,
            };
        }
        let e = self.equity(spot);
        if spot.to_call == 0 {
            if e >= 0.75 {
                raise(true)
            } else if e >= 0.55 {
                raise(false)
            } else {
                Action::Check
            }
        } else {
            let odds = f64::from(spot.to_call) / f64::from(spot.pot + spot.to_call);
            if e >= 0.85 {
                raise(false)
            } else if e >= odds + 0.15 {
                call
            } else {
                Action::Fold
            }
        }
    }
}

/// Plays the expert's best action.
pub struct ExpertPlayer {
    pub expert: Expert,
}

impl Player for ExpertPlayer {
    fn name(&self) -> String {
        "expert".into()
    }
    fn act(&mut self, spot: &Spot) -> Action {
        self.expert.judge(spot).best_action()
    }
}

/// A player that answers prompt text, e.g. a language model:
/// `PromptPlayer::new("model", PromptStyle::Compact, |prompt| generate(prompt))`.
/// Answers that do not parse to a legal action count as illegal and become
/// check (when free) or fold.
pub struct PromptPlayer<F: FnMut(&str) -> String + Send> {
    name: String,
    style: PromptStyle,
    answer: F,
    illegal: u64,
}

impl<F: FnMut(&str) -> String + Send> PromptPlayer<F> {
    pub fn new(name: impl Into<String>, style: PromptStyle, answer: F) -> Self {
        PromptPlayer {
            name: name.into(),
            style,
            answer,
            illegal: 0,
        }
    }
}

impl<F: FnMut(&str) -> String + Send> Player for PromptPlayer<F> {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn act(&mut self, spot: &Spot) -> Action {
        let text = (self.answer)(&render(spot, self.style));
        match parse_answer(spot, &text) {
            Ok(action) => action,
            Err(_) => {
                self.illegal += 1;
                if spot.to_call == 0 {
                    Action::Check
                } else {
                    Action::Fold
                }
            }
        }
    }
    fn illegal_answers(&self) -> u64 {
        self.illegal
    }
}
