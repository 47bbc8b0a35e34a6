//! A decision as the player to act sees it: the spot, its type, the
//! discrete actions offered, the prompt text in two styles, and parsing a
//! model's answer back into a legal action.
//!
//! Sizes offered come from a small grid so a tiny model can learn them:
//! opens 2.5 bb (3 bb from the small blind, 3 bb + 1 per limper), re-raises
//! to 3x the bet, postflop bets of 1/3 and 3/4 pot, all rounded to 0.5 bb,
//! plus all in.

use std::fmt::{self, Write as _};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cards::{Card, CardSet};
use super::eval::{Category, evaluate};
use super::game::{Action, BB, Event, Hand, IllegalAction, Position, Street, Table, bb_text};

/// The decision in front of one player.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spot {
    pub table: Table,
    pub hero: Position,
    pub hole: [Card; 2],
    pub board: Vec<Card>,
    pub street: Street,
    pub history: Vec<Event>,
    /// Chips in the middle, bets of this street included.
    pub pot: u32,
    pub to_call: u32,
    /// Hero's chips in on this street.
    pub hero_in: u32,
    pub current_bet: u32,
    pub min_raise_to: u32,
    /// Hero's chips behind.
    pub hero_stack: u32,
    /// Opponents still in the hand with their chips behind and in this street.
    pub opponents: Vec<Opponent>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opponent {
    pub position: Position,
    pub stack: u32,
    pub street_in: u32,
}

impl Spot {
    /// The spot of the player to act in `hand`, if the hand is not over.
    pub fn from_hand(hand: &Hand) -> Option<Spot> {
        let i = hand.to_act?;
        let seat = &hand.seats[i];
        Some(Spot {
            table: hand.table,
            hero: seat.position,
            hole: seat.hole,
            board: hand.board().to_vec(),
            street: hand.street,
            history: hand.history.clone(),
            pot: hand.pot(),
            to_call: hand
                .current_bet
                .saturating_sub(seat.street_in)
                .min(seat.stack),
            hero_in: seat.street_in,
            current_bet: hand.current_bet,
            min_raise_to: hand.current_bet + hand.last_raise,
            hero_stack: seat.stack,
            opponents: hand
                .seats
                .iter()
                .enumerate()
                .filter(|(j, s)| *j != i && !s.folded)
                .map(|(_, s)| Opponent {
                    position: s.position,
                    stack: s.stack,
                    street_in: s.street_in,
                })
                .collect(),
        })
    }

    /// Hero's street total if all in.
    pub fn all_in_to(&self) -> u32 {
        self.hero_in + self.hero_stack
    }

    /// The most any opponent can still put in on this street, counting what
    /// they have in already: a bet above this is partly uncalled.
    pub fn covered_to(&self) -> u32 {
        self.opponents
            .iter()
            .map(|o| o.street_in + o.stack)
            .max()
            .unwrap_or(0)
    }

    /// Raises made so far this street (the blinds are not raises).
    pub fn raises_this_street(&self) -> usize {
        self.history
            .iter()
            .filter(|e| {
                e.street == self.street && matches!(e.action, Action::Bet(_) | Action::Raise(_))
            })
            .count()
    }

    fn round_size(chips: u32) -> u32 {
        (chips + 2) / 5 * 5
    }

    /// The bet or raise sizes on the grid (street totals) that are legal and
    /// below all in.
    fn sizes(&self) -> Vec<u32> {
        let all_in = self.all_in_to();
        let limit = all_in.min(self.covered_to());
        let mut sizes = Vec::new();
        if self.street == Street::Preflop {
            let to = if self.current_bet == BB {
                let limpers = self
                    .history
                    .iter()
                    .filter(|e| e.action == Action::Call)
                    .count() as u32;
                if limpers > 0 {
                    3 * BB + limpers * BB
                } else if self.hero == Position::Sb
                    || (self.table == Table::HeadsUp && self.hero == Position::Btn)
                {
                    if self.table == Table::HeadsUp {
                        25
                    } else {
                        3 * BB
                    }
                } else {
                    25
                }
            } else {
                3 * self.current_bet
            };
            sizes.push(to);
        } else if self.current_bet == 0 {
            sizes.push(Self::round_size(self.pot / 3).max(BB));
            sizes.push(Self::round_size(self.pot * 3 / 4).max(BB));
        } else {
            sizes.push(Self::round_size(3 * self.current_bet));
        }
        sizes.retain(|&to| to >= self.min_raise_to.min(all_in) && to < all_in && to <= limit);
        sizes.dedup();
        sizes
    }

    /// The discrete actions offered in this spot, in a fixed order.
    pub fn options(&self) -> Vec<Action> {
        let mut out = Vec::new();
        let facing = self.to_call > 0;
        if facing {
            out.push(Action::Fold);
            if self.to_call < self.hero_stack {
                out.push(Action::Call);
            }
        } else {
            out.push(Action::Check);
        }
        // Re-raising is pointless when every opponent is all in.
        let can_raise = self.covered_to() > self.current_bet;
        if can_raise {
            for to in self.sizes() {
                out.push(if self.current_bet == 0 {
                    Action::Bet(to)
                } else {
                    Action::Raise(to)
                });
            }
        }
        if can_raise || self.to_call >= self.hero_stack {
            out.push(Action::AllIn);
        }
        out
    }

    /// Chips hero adds with `action` (all in is capped by hero's stack).
    pub fn chips_added(&self, action: Action) -> u32 {
        match action {
            Action::Fold | Action::Check => 0,
            Action::Call => self.to_call,
            Action::Bet(to) | Action::Raise(to) => to.saturating_sub(self.hero_in),
            Action::AllIn => self.hero_stack,
        }
    }

    pub fn spot_type(&self) -> SpotType {
        spot_type(self)
    }
}

/// What kind of decision a spot is, for per-type baselines and reports.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Situation {
    /// Preflop, nobody has come in yet.
    Unopened,
    /// Preflop, one or more players limped.
    FacingLimp,
    /// Preflop, facing a single raise.
    FacingOpen,
    /// Preflop, facing a re-raise (3-bet) or more.
    #[serde(rename = "facing-3bet")]
    Facing3Bet,
    /// Postflop, first to act.
    FirstToAct,
    /// Postflop, everyone before checked.
    CheckedTo,
    /// Postflop, facing a bet.
    FacingBet,
    /// Postflop, facing a raise.
    FacingRaise,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SpotType {
    pub street: Street,
    pub situation: Situation,
}

impl fmt::Display for SpotType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let situation = serde_json::to_value(self.situation)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        write!(f, "{}/{}", self.street.name(), situation)
    }
}

/// The type of `spot` from the action so far on its street.
pub fn spot_type(spot: &Spot) -> SpotType {
    let street_events: Vec<&Event> = spot
        .history
        .iter()
        .filter(|e| e.street == spot.street)
        .collect();
    let raises = spot.raises_this_street();
    let situation = if spot.street == Street::Preflop {
        let limped = street_events.iter().any(|e| e.action == Action::Call);
        match raises {
            0 if limped => Situation::FacingLimp,
            0 => Situation::Unopened,
            1 => Situation::FacingOpen,
            _ => Situation::Facing3Bet,
        }
    } else {
        match raises {
            0 if street_events.is_empty() => Situation::FirstToAct,
            0 => Situation::CheckedTo,
            1 => Situation::FacingBet,
            _ => Situation::FacingRaise,
        }
    };
    SpotType {
        street: spot.street,
        situation,
    }
}

/// How prompts are written.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum PromptStyle {
    /// Full sentences in the style of public poker-decision benchmarks.
    Natural,
    /// A few dozen tokens for tiny models.
    #[default]
    Compact,
}

impl PromptStyle {
    /// The name pipeline files and the command line use.
    pub fn name(self) -> &'static str {
        match self {
            PromptStyle::Natural => "natural",
            PromptStyle::Compact => "compact",
        }
    }
}

/// The action in words, third person for opponents and second for hero.
fn verb(event: &Event, you: bool) -> String {
    let all_in = if event.all_in { " (all in)" } else { "" };
    let s = if you { "" } else { "s" };
    match event.action {
        Action::Fold => format!("fold{s}"),
        Action::Check => format!("check{s}"),
        Action::Call => format!("call{s}{all_in}"),
        Action::Bet(to) => format!("bet{s} {}{all_in}", bb_text(to)),
        Action::Raise(to) => format!("raise{s} to {}{all_in}", bb_text(to)),
        Action::AllIn => format!("go{} all in", if you { "" } else { "es" }),
    }
}

fn short(event: &Event) -> String {
    match event.action {
        Action::Fold => "f".into(),
        Action::Check => "x".into(),
        Action::Call => "c".into(),
        Action::Bet(to) => format!("b{}", bb_text(to)),
        Action::Raise(to) => format!("r{}", bb_text(to)),
        Action::AllIn => "allin".into(),
    }
}

/// Hole cards high card first, so the same hand is always written the same way.
fn hole_text(hole: [Card; 2]) -> [Card; 2] {
    if hole[1] > hole[0] {
        [hole[1], hole[0]]
    } else {
        hole
    }
}

fn spaced(cards: &[Card]) -> String {
    cards
        .iter()
        .map(Card::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Pot at the start of each street (before any bet on it).
fn street_start_pots(spot: &Spot) -> [u32; 4] {
    let mut pots = [0u32; 4];
    let mut street_in: std::collections::BTreeMap<Position, u32> = Default::default();
    let mut total = 3 * BB / 2;
    let mut current = Street::Preflop;
    street_in.insert(Position::Bb, BB);
    street_in.insert(
        if spot.table == Table::HeadsUp {
            Position::Btn
        } else {
            Position::Sb
        },
        BB / 2,
    );
    for event in &spot.history {
        if event.street != current {
            current = event.street;
            pots[current as usize] = total;
            street_in.clear();
        }
        let before = street_in.get(&event.position).copied().unwrap_or(0);
        total += event.to - before;
        street_in.insert(event.position, event.to);
    }
    if spot.street != current {
        pots[spot.street as usize] = total;
    }
    pots
}

/// The prompt for `spot` in `style`. Folds before the first voluntary
/// action are summarised so prompts stay short.
pub fn render(spot: &Spot, style: PromptStyle) -> String {
    match style {
        PromptStyle::Natural => render_natural(spot),
        PromptStyle::Compact => render_compact(spot),
    }
}

fn render_natural(spot: &Spot) -> String {
    let mut out = format!(
        "No-limit hold'em, {} table, 100 big blind stacks, blinds 0.5/1. You are {} with {}.",
        spot.table.name(),
        spot.hero.name(),
        spaced(&hole_text(spot.hole))
    );
    let pots = street_start_pots(spot);
    for street in [Street::Preflop, Street::Flop, Street::Turn, Street::River] {
        if street > spot.street {
            break;
        }
        let events: Vec<&Event> = spot.history.iter().filter(|e| e.street == street).collect();
        if street == Street::Preflop {
            out.push_str(" Preflop:");
        } else {
            let _ = write!(
                out,
                " {} ({} bb pot): {}.",
                match street {
                    Street::Flop => "Flop",
                    Street::Turn => "Turn",
                    _ => "River",
                },
                bb_text(pots[street as usize]),
                spaced(&spot.board[..street.board_len()])
            );
        }
        let parts: Vec<String> = events
            .iter()
            .filter(|e| !(street == Street::Preflop && e.action == Action::Fold))
            .map(|e| {
                if e.position == spot.hero {
                    format!("you {}", verb(e, true))
                } else {
                    format!("{} {}", e.position.name(), verb(e, false))
                }
            })
            .collect();
        if street == Street::Preflop {
            let folds = events.iter().filter(|e| e.action == Action::Fold).count();
            if parts.is_empty() {
                out.push_str(if folds > 0 {
                    " folded to you."
                } else {
                    " you are first to act."
                });
            } else {
                let _ = write!(out, " {}.", parts.join(", "));
            }
        } else if !parts.is_empty() {
            let _ = write!(out, " {}.", parts.join(", "));
        }
    }
    let options: Vec<String> = spot.options().iter().map(|a| a.answer()).collect();
    let _ = write!(out, " Pot {} bb", bb_text(spot.pot));
    if spot.to_call > 0 {
        let _ = write!(out, ", {} bb to call", bb_text(spot.to_call));
    }
    let _ = write!(
        out,
        ", your stack {} bb. Legal actions: {}. Your action?",
        bb_text(spot.hero_stack),
        options.join(", ")
    );
    out
}

/// Hero's made hand after the flop, as compact prompts name it: the
/// category of the best five of hole and board cards, with what the hole
/// cards add. `board pair` (or `board two pair`, ...) when the board alone
/// makes that category, so hero's cards add nothing to it; a pair made
/// with a hole card is `top pair` when it is at least the board's highest
/// rank (top pair or an overpair), else `low pair`.
fn made_hand(spot: &Spot) -> String {
    let all: Vec<Card> = spot.hole.iter().chain(&spot.board).copied().collect();
    let category = evaluate(CardSet::of(&all)).category();
    if category == Category::HighCard {
        return category.name().to_string();
    }
    if evaluate(CardSet::of(&spot.board)).category() == category {
        return format!("board {}", category.name());
    }
    if category == Category::Pair {
        let mut counts = [0u8; 13];
        for card in &all {
            counts[card.rank() as usize] += 1;
        }
        let pair = (0..13u8).rev().find(|&r| counts[r as usize] == 2);
        let top = spot.board.iter().map(|c| c.rank()).max();
        return if pair >= top { "top pair" } else { "low pair" }.to_string();
    }
    category.name().to_string()
}

/// The compact style: a few dozen tokens. After the flop it names hero's
/// made hand (`top pair`, `board pair`, `flush`, ...), which the natural
/// style leaves to the reader: a model of a few hundred thousand weights
/// cannot afford to work out hand strength from seven cards, and it is a
/// fact of the visible cards, not advice.
fn render_compact(spot: &Spot) -> String {
    let mut out = format!(
        "{} {} {}",
        if spot.table == Table::HeadsUp {
            "HU"
        } else {
            "6max"
        },
        spot.hero.name(),
        spaced(&hole_text(spot.hole))
    );
    let pots = street_start_pots(spot);
    for street in [Street::Preflop, Street::Flop, Street::Turn, Street::River] {
        if street > spot.street {
            break;
        }
        if street != Street::Preflop {
            let _ = write!(
                out,
                " | {} {} {}",
                spaced(
                    &spot.board[street.board_len() - if street == Street::Flop { 3 } else { 1 }
                        ..street.board_len()]
                ),
                match street {
                    Street::Flop => "F",
                    Street::Turn => "T",
                    _ => "R",
                },
                bb_text(pots[street as usize])
            );
        } else {
            out.push_str(" |");
        }
        for e in spot.history.iter().filter(|e| e.street == street) {
            if street == Street::Preflop && e.action == Action::Fold {
                continue;
            }
            let _ = write!(out, " {} {}", e.position.name(), short(e));
        }
    }
    if spot.street != Street::Preflop {
        let _ = write!(out, " | {}", made_hand(spot));
    }
    let _ = write!(out, " | pot {}", bb_text(spot.pot));
    if spot.to_call > 0 {
        let _ = write!(out, " call {}", bb_text(spot.to_call));
    }
    let options: Vec<String> = spot.options().iter().map(|a| a.answer()).collect();
    let _ = write!(
        out,
        " stack {} | {} ->",
        bb_text(spot.hero_stack),
        options.join(", ")
    );
    out
}

/// What is wrong with an answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("`{0}` is not an action: answer fold, check, call, bet N, raise N or all in")]
    Malformed(String),
    #[error("`{0}` is not legal here: {1}")]
    Illegal(String, IllegalAction),
}

/// Parse a model's answer. Accepts the trained forms plus light variants
/// (case, a trailing period, `raise to N`, `N bb`, `all-in`); any legal
/// size is accepted, not just the grid.
pub fn parse_answer(spot: &Spot, text: &str) -> Result<Action, AnswerError> {
    let clean = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let words: Vec<&str> = clean.split_whitespace().collect();
    let malformed = || AnswerError::Malformed(text.trim().to_string());
    let amount = |rest: &[&str]| -> Option<u32> {
        let rest: Vec<&str> = rest
            .iter()
            .copied()
            .filter(|w| *w != "to" && *w != "bb")
            .collect();
        let [number] = rest.as_slice() else {
            return None;
        };
        let value: f64 = number.trim_end_matches("bb").parse().ok()?;
        let chips = value * f64::from(BB);
        (value.is_finite() && value > 0.0 && (chips - chips.round()).abs() < 1e-6)
            .then_some(chips.round() as u32)
    };
    let action = match words.as_slice() {
        ["fold"] => Action::Fold,
        ["check"] => Action::Check,
        ["call"] => Action::Call,
        ["all", "in"] | ["all-in"] | ["allin"] | ["shove"] => Action::AllIn,
        ["bet", rest @ ..] => Action::Bet(amount(rest).ok_or_else(malformed)?),
        ["raise", rest @ ..] => Action::Raise(amount(rest).ok_or_else(malformed)?),
        _ => return Err(malformed()),
    };
    check_legal(spot, action).map_err(|e| AnswerError::Illegal(text.trim().to_string(), e))?;
    // A bet or raise of the whole stack is the same decision as all in.
    Ok(match action {
        Action::Bet(to) | Action::Raise(to) if to == spot.all_in_to() => Action::AllIn,
        other => other,
    })
}

/// Whether `action` follows the rules in `spot` (the same checks as
/// [`Hand::apply`]).
pub fn check_legal(spot: &Spot, action: Action) -> Result<(), IllegalAction> {
    let max_to = spot.all_in_to();
    let min_to = spot.min_raise_to.min(max_to).max(BB.min(max_to));
    match action {
        Action::Fold if spot.to_call == 0 => Err(IllegalAction::FreeCheck),
        Action::Check if spot.to_call > 0 => Err(IllegalAction::FacingBet(bb_text(spot.to_call))),
        Action::Call if spot.to_call == 0 => Err(IllegalAction::NothingToCall),
        Action::Bet(_) if spot.current_bet > 0 => Err(IllegalAction::AlreadyBet),
        Action::Raise(_) if spot.current_bet == 0 => Err(IllegalAction::NothingToRaise),
        Action::Bet(to) | Action::Raise(to) if to > max_to => {
            Err(IllegalAction::TooLarge(bb_text(to), bb_text(max_to)))
        }
        Action::Bet(to) | Action::Raise(to) if to < min_to => {
            Err(IllegalAction::TooSmall(bb_text(to), bb_text(min_to)))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::poker::cards::parse_cards;

    fn six_max() -> Hand {
        let c = parse_cards("AhKd2c2d3c3d4c4d5c5d6c6d").unwrap();
        let holes: Vec<[Card; 2]> = c.chunks(2).map(|p| [p[0], p[1]]).collect();
        let b = parse_cards("Ts9s8h7h2s").unwrap();
        Hand::new(Table::SixMax, &holes, [b[0], b[1], b[2], b[3], b[4]])
    }

    #[test]
    fn unopened_and_facing_open_spots() {
        let mut hand = six_max();
        let spot = Spot::from_hand(&hand).unwrap();
        assert_eq!(spot.spot_type().situation, Situation::Unopened);
        assert_eq!(
            spot.options(),
            vec![Action::Fold, Action::Call, Action::Raise(25), Action::AllIn]
        );
        hand.apply(Action::Raise(25)).unwrap();
        hand.apply(Action::Fold).unwrap();
        let spot = Spot::from_hand(&hand).unwrap();
        assert_eq!(spot.hero, Position::Co);
        assert_eq!(spot.spot_type().situation, Situation::FacingOpen);
        assert_eq!(
            spot.options(),
            vec![Action::Fold, Action::Call, Action::Raise(75), Action::AllIn]
        );
        let text = render(&spot, PromptStyle::Compact);
        assert_eq!(
            text,
            "6max CO 3d 3c | UTG r2.5 | pot 4 call 2.5 stack 100 | fold, call, raise 7.5, all in ->"
        );
        let natural = render(&spot, PromptStyle::Natural);
        assert!(natural.contains("UTG raises to 2.5"), "{natural}");
    }

    #[test]
    fn postflop_spot_types_and_pots() {
        let mut hand = six_max();
        hand.apply(Action::Raise(25)).unwrap();
        for _ in 0..4 {
            hand.apply(Action::Fold).unwrap();
        }
        hand.apply(Action::Call).unwrap();
        let spot = Spot::from_hand(&hand).unwrap();
        assert_eq!(spot.hero, Position::Bb);
        assert_eq!(spot.spot_type().to_string(), "flop/first-to-act");
        assert_eq!(
            spot.options(),
            vec![
                Action::Check,
                Action::Bet(20),
                Action::Bet(40),
                Action::AllIn
            ]
        );
        hand.apply(Action::Bet(20)).unwrap();
        let spot = Spot::from_hand(&hand).unwrap();
        assert_eq!(spot.spot_type().to_string(), "flop/facing-bet");
        let text = render(&spot, PromptStyle::Compact);
        assert_eq!(
            text,
            "6max UTG Ah Kd | UTG r2.5 BB c | Ts 9s 8h F 5.5 BB b2 | high card | pot 7.5 call 2 stack 97.5 | fold, call, raise 6, all in ->"
        );
        // The made hand counts hole and board cards together; on a paired
        // board, a pair hero's cards do not improve is the board's.
        let paired = parse_cards("TsTd8h").unwrap();
        for (board, hole, made) in [
            (&spot.board, "9h9d", "three of a kind"),
            (&spot.board, "Jh7c", "straight"),
            (&spot.board, "As2s", "high card"),
            (&spot.board, "Tc2d", "top pair"),
            (&spot.board, "QdQc", "top pair"),
            (&spot.board, "8c2d", "low pair"),
            (&spot.board, "6c6d", "low pair"),
            (&paired, "As2c", "board pair"),
            (&paired, "8c2d", "two pair"),
            (&paired, "TcAh", "three of a kind"),
        ] {
            let cards = parse_cards(hole).unwrap();
            let mut set = spot.clone();
            set.board = board.clone();
            set.hole = [cards[0], cards[1]];
            let text = render(&set, PromptStyle::Compact);
            assert!(text.contains(&format!(" | {made} | pot")), "{text}");
        }
    }

    #[test]
    fn answers_parse_to_legal_actions() {
        let mut hand = six_max();
        hand.apply(Action::Raise(25)).unwrap();
        let spot = Spot::from_hand(&hand).unwrap();
        assert_eq!(parse_answer(&spot, "Raise 7.5."), Ok(Action::Raise(75)));
        assert_eq!(parse_answer(&spot, "raise to 9 bb"), Ok(Action::Raise(90)));
        assert_eq!(parse_answer(&spot, "all-in"), Ok(Action::AllIn));
        assert_eq!(parse_answer(&spot, "raise 100"), Ok(Action::AllIn));
        assert!(matches!(
            parse_answer(&spot, "check"),
            Err(AnswerError::Illegal(..))
        ));
        assert!(matches!(
            parse_answer(&spot, "raise 3"),
            Err(AnswerError::Illegal(..))
        ));
        assert!(matches!(
            parse_answer(&spot, "bet 3"),
            Err(AnswerError::Illegal(..))
        ));
        assert!(matches!(
            parse_answer(&spot, "raise 101"),
            Err(AnswerError::Illegal(..))
        ));
        assert!(matches!(
            parse_answer(&spot, "raise lots"),
            Err(AnswerError::Malformed(_))
        ));
        assert!(matches!(
            parse_answer(&spot, "I think I fold"),
            Err(AnswerError::Malformed(_))
        ));
        for action in spot.options() {
            assert_eq!(parse_answer(&spot, &action.answer()), Ok(action));
        }
    }
}
