//! The rules of one no-limit hold'em hand: seats, blinds, betting rounds,
//! legal actions, side pots and payouts. Scenarios drive it with scripted
//! lines, the arena with players; both read spots from it, so the text a
//! model sees always comes from a state the rules allowed.
//!
//! Chips are tenths of a big blind (a small blind is 5), so every size on
//! the 0.5 bb grid is exact.

use serde::{Deserialize, Serialize};

use super::cards::{Card, CardSet};
use super::eval::evaluate;

/// Chips per big blind.
pub const BB: u32 = 10;
/// Starting stack: 100 big blinds.
pub const STACK: u32 = 100 * BB;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Table {
    HeadsUp,
    SixMax,
}

impl Table {
    /// Seats in preflop acting order (the button posts the small blind
    /// heads-up).
    pub fn positions(self) -> &'static [Position] {
        match self {
            Table::HeadsUp => &[Position::Btn, Position::Bb],
            Table::SixMax => &[
                Position::Utg,
                Position::Hj,
                Position::Co,
                Position::Btn,
                Position::Sb,
                Position::Bb,
            ],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::HeadsUp => "heads-up",
            Table::SixMax => "6-max",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Position {
    #[serde(rename = "UTG")]
    Utg,
    #[serde(rename = "HJ")]
    Hj,
    #[serde(rename = "CO")]
    Co,
    #[serde(rename = "BTN")]
    Btn,
    #[serde(rename = "SB")]
    Sb,
    #[serde(rename = "BB")]
    Bb,
}

impl Position {
    pub fn name(self) -> &'static str {
        match self {
            Position::Utg => "UTG",
            Position::Hj => "HJ",
            Position::Co => "CO",
            Position::Btn => "BTN",
            Position::Sb => "SB",
            Position::Bb => "BB",
        }
    }

    /// Postflop acting order: lower acts first. The blinds act first, the
    /// button last (heads-up the big blind acts first after the flop).
    pub fn postflop_order(self) -> u8 {
        match self {
            Position::Sb => 0,
            Position::Bb => 1,
            Position::Utg => 2,
            Position::Hj => 3,
            Position::Co => 4,
            Position::Btn => 5,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Street {
    Preflop,
    Flop,
    Turn,
    River,
}

impl Street {
    pub fn board_len(self) -> usize {
        match self {
            Street::Preflop => 0,
            Street::Flop => 3,
            Street::Turn => 4,
            Street::River => 5,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Street::Preflop => "preflop",
            Street::Flop => "flop",
            Street::Turn => "turn",
            Street::River => "river",
        }
    }
}

/// A player's decision. `Bet` and `Raise` carry the total the player puts
/// in on this street ("raise to"); `AllIn` puts in the whole stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Fold,
    Check,
    Call,
    Bet(u32),
    Raise(u32),
    AllIn,
}

/// Write a chip amount in big blinds: `2.5`, `8`.
pub fn bb_text(chips: u32) -> String {
    if chips.is_multiple_of(BB) {
        format!("{}", chips / BB)
    } else {
        format!("{}.{}", chips / BB, chips % BB)
    }
}

impl Action {
    /// The answer text a model is trained to produce.
    pub fn answer(self) -> String {
        match self {
            Action::Fold => "fold".into(),
            Action::Check => "check".into(),
            Action::Call => "call".into(),
            Action::Bet(to) => format!("bet {}", bb_text(to)),
            Action::Raise(to) => format!("raise {}", bb_text(to)),
            Action::AllIn => "all in".into(),
        }
    }

    /// The action without its amount: `fold`, `check`, `call`, `bet`,
    /// `raise` or `all in`.
    pub fn kind(self) -> &'static str {
        match self {
            Action::Fold => "fold",
            Action::Check => "check",
            Action::Call => "call",
            Action::Bet(_) => "bet",
            Action::Raise(_) => "raise",
            Action::AllIn => "all in",
        }
    }

    pub fn is_aggressive(self) -> bool {
        matches!(self, Action::Bet(_) | Action::Raise(_) | Action::AllIn)
    }
}

/// What a player did, as it happened: `to` is the player's street total
/// after acting, `all_in` whether that emptied the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub position: Position,
    pub street: Street,
    /// Fold, Check, Call, Bet or Raise (all-ins resolved to one of these).
    pub action: Action,
    pub to: u32,
    pub all_in: bool,
}

#[derive(Clone, Debug)]
pub struct Seat {
    pub position: Position,
    pub hole: [Card; 2],
    /// Chips behind.
    pub stack: u32,
    /// Put in on the current street.
    pub street_in: u32,
    /// Put in over the whole hand.
    pub total_in: u32,
    pub folded: bool,
}

/// Why an action is not allowed now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IllegalAction {
    #[error("the hand is over")]
    HandOver,
    #[error("nothing to call: check instead")]
    NothingToCall,
    #[error("cannot check facing a bet of {0} bb")]
    FacingBet(String),
    #[error("folding is not offered when checking is free")]
    FreeCheck,
    #[error("there is a bet already: raise instead")]
    AlreadyBet,
    #[error("nothing to raise: bet instead")]
    NothingToRaise,
    #[error("{0} bb is below the minimum of {1} bb")]
    TooSmall(String, String),
    #[error("{0} bb is more than the {1} bb this player has")]
    TooLarge(String, String),
}

/// One hand in progress.
#[derive(Clone, Debug)]
pub struct Hand {
    pub table: Table,
    pub seats: Vec<Seat>,
    /// All five board cards, dealt up front; only `street.board_len()` are
    /// visible.
    pub deck_board: [Card; 5],
    pub street: Street,
    /// Index into `seats` of the player to act, `None` once the hand is over.
    pub to_act: Option<usize>,
    pub current_bet: u32,
    /// Size of the last bet or raise increment (the minimum next raise).
    pub last_raise: u32,
    pub history: Vec<Event>,
    /// Whether each seat has acted since the last bet or raise.
    acted: Vec<bool>,
}

impl Hand {
    /// Seat the players (in `table.positions()` order) with 100 bb and post
    /// the blinds.
    pub fn new(table: Table, holes: &[[Card; 2]], board: [Card; 5]) -> Hand {
        let seats = table
            .positions()
            .iter()
            .zip(holes)
            .map(|(&position, &hole)| Seat {
                position,
                hole,
                stack: STACK,
                street_in: 0,
                total_in: 0,
                folded: false,
            })
            .collect();
        let mut hand = Hand {
            table,
            seats,
            deck_board: board,
            street: Street::Preflop,
            to_act: Some(0),
            current_bet: BB,
            last_raise: BB,
            history: Vec::new(),
            acted: vec![false; table.positions().len()],
        };
        let n = hand.seats.len();
        let (sb, bb) = if n == 2 { (0, 1) } else { (n - 2, n - 1) };
        hand.post(sb, BB / 2);
        hand.post(bb, BB);
        hand
    }

    fn post(&mut self, seat: usize, chips: u32) {
        let s = &mut self.seats[seat];
        s.stack -= chips;
        s.street_in += chips;
        s.total_in += chips;
    }

    pub fn board(&self) -> &[Card] {
        &self.deck_board[..self.street.board_len()]
    }

    pub fn pot(&self) -> u32 {
        self.seats.iter().map(|s| s.total_in).sum()
    }

    pub fn seat_of(&self, position: Position) -> Option<usize> {
        self.seats.iter().position(|s| s.position == position)
    }

    pub fn is_over(&self) -> bool {
        self.to_act.is_none()
    }

    fn live(&self) -> impl Iterator<Item = &Seat> {
        self.seats.iter().filter(|s| !s.folded)
    }

    /// Apply `action` for the player to act; all-ins resolve to a bet,
    /// raise or call.
    pub fn apply(&mut self, action: Action) -> Result<(), IllegalAction> {
        let i = self.to_act.ok_or(IllegalAction::HandOver)?;
        let seat = &self.seats[i];
        let to_call = self.current_bet.saturating_sub(seat.street_in);
        let max_to = seat.street_in + seat.stack;
        let min_to = (self.current_bet + self.last_raise).min(max_to);
        let resolved = match action {
            Action::Fold if to_call == 0 => return Err(IllegalAction::FreeCheck),
            Action::Check if to_call > 0 => return Err(IllegalAction::FacingBet(bb_text(to_call))),
            Action::Call if to_call == 0 => return Err(IllegalAction::NothingToCall),
            Action::Bet(_) if self.current_bet > 0 => return Err(IllegalAction::AlreadyBet),
            Action::Raise(_) if self.current_bet == 0 => return Err(IllegalAction::NothingToRaise),
            Action::Bet(to) | Action::Raise(to) if to > max_to => {
                return Err(IllegalAction::TooLarge(bb_text(to), bb_text(max_to)));
            }
            Action::Bet(to) | Action::Raise(to) if to < min_to.max(BB.min(max_to)) => {
                return Err(IllegalAction::TooSmall(
                    bb_text(to),
                    bb_text(min_to.max(BB.min(max_to))),
                ));
            }
            Action::AllIn if max_to <= self.current_bet => Action::Call,
            Action::AllIn if self.current_bet == 0 => Action::Bet(max_to),
            Action::AllIn => Action::Raise(max_to),
            other => other,
        };
        let to = match resolved {
            Action::Fold | Action::Check => seat.street_in,
            Action::Call => self.current_bet.min(max_to),
            Action::Bet(to) | Action::Raise(to) => to,
            Action::AllIn => max_to,
        };
        let seat = &mut self.seats[i];
        let added = to - seat.street_in;
        seat.stack -= added;
        seat.street_in = to;
        seat.total_in += added;
        if resolved == Action::Fold {
            seat.folded = true;
        }
        let all_in = seat.stack == 0 && !seat.folded;
        self.history.push(Event {
            position: seat.position,
            street: self.street,
            action: resolved,
            to,
            all_in,
        });
        self.acted[i] = true;
        if to > self.current_bet {
            let increment = to - self.current_bet;
            // A short all-in does not reopen the betting for a full raise.
            if increment >= self.last_raise {
                self.last_raise = increment;
            }
            self.current_bet = to;
            for (j, acted) in self.acted.iter_mut().enumerate() {
                if j != i {
                    *acted = false;
                }
            }
        }
        self.advance(i);
        Ok(())
    }

    /// Seats that can still act (not folded, chips behind).
    fn can_act(&self, j: usize) -> bool {
        !self.seats[j].folded && self.seats[j].stack > 0
    }

    fn advance(&mut self, from: usize) {
        if self.live().count() == 1 {
            self.to_act = None;
            return;
        }
        let n = self.seats.len();
        let pending = (1..=n).map(|k| (from + k) % n).find(|&j| {
            self.can_act(j) && (!self.acted[j] || self.seats[j].street_in < self.current_bet)
        });
        if let Some(j) = pending {
            // One player with chips facing no bet from anyone who can act
            // still has nothing to decide once all others are all in.
            let others_can_act = (0..n).any(|k| k != j && self.can_act(k));
            if others_can_act || self.seats[j].street_in < self.current_bet {
                self.to_act = Some(j);
                return;
            }
        }
        self.next_street();
    }

    fn next_street(&mut self) {
        let acting = (0..self.seats.len()).filter(|&j| self.can_act(j)).count();
        self.street = match self.street {
            Street::Preflop => Street::Flop,
            Street::Flop => Street::Turn,
            Street::Turn => Street::River,
            Street::River => {
                self.to_act = None;
                return;
            }
        };
        for seat in &mut self.seats {
            seat.street_in = 0;
        }
        self.current_bet = 0;
        self.last_raise = BB;
        self.acted.iter_mut().for_each(|a| *a = false);
        if acting < 2 {
            // Everyone (but at most one) is all in: deal out the board.
            self.next_street();
            return;
        }
        self.to_act = (0..self.seats.len())
            .filter(|&j| self.can_act(j))
            .min_by_key(|&j| self.seats[j].position.postflop_order());
    }

    /// Chips each seat wins at the end, pot split into side pots by
    /// contribution level; odd chips go to the first winner in seat order.
    pub fn payouts(&self) -> Vec<u32> {
        let n = self.seats.len();
        let mut won = vec![0u32; n];
        let values: Vec<u32> = self
            .seats
            .iter()
            .map(|s| {
                evaluate(CardSet(
                    CardSet::of(&s.hole).0 | CardSet::of(&self.deck_board).0,
                ))
                .0
            })
            .collect();
        let mut levels: Vec<u32> = self.seats.iter().map(|s| s.total_in).collect();
        levels.sort_unstable();
        levels.dedup();
        let mut previous = 0;
        for level in levels {
            let slice: u32 = self
                .seats
                .iter()
                .map(|s| s.total_in.min(level) - s.total_in.min(previous))
                .sum();
            let eligible: Vec<usize> = (0..n)
                .filter(|&j| !self.seats[j].folded && self.seats[j].total_in >= level)
                .collect();
            previous = level;
            if slice == 0 {
                continue;
            }
            // Chips nobody live matched (an uncalled bet) go back to who put
            // them in; otherwise the best live hand among the eligible wins.
            let contenders: Vec<usize> = if eligible.is_empty() {
                (0..n)
                    .filter(|&j| self.seats[j].total_in >= level)
                    .collect()
            } else if eligible.len() == 1 || self.live().count() == 1 {
                eligible
            } else {
                let best = eligible.iter().map(|&j| values[j]).max().unwrap_or(0);
                eligible
                    .into_iter()
                    .filter(|&j| values[j] == best)
                    .collect()
            };
            let share = slice / contenders.len() as u32;
            for &j in &contenders {
                won[j] += share;
            }
            won[contenders[0]] += slice - share * contenders.len() as u32;
        }
        won
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::poker::cards::parse_cards;

    fn cards(t: &str) -> Vec<Card> {
        parse_cards(t).unwrap()
    }

    fn heads_up(a: &str, b: &str, board: &str) -> Hand {
        let (a, b, board) = (cards(a), cards(b), cards(board));
        Hand::new(
            Table::HeadsUp,
            &[[a[0], a[1]], [b[0], b[1]]],
            [board[0], board[1], board[2], board[3], board[4]],
        )
    }

    #[test]
    fn heads_up_line_to_showdown_conserves_chips() {
        let mut hand = heads_up("AhAd", "KcKd", "2c7d9hTsJs");
        assert_eq!(hand.pot(), 15);
        hand.apply(Action::Raise(25)).unwrap();
        hand.apply(Action::Call).unwrap();
        assert_eq!(hand.street, Street::Flop);
        assert_eq!(hand.seats[hand.to_act.unwrap()].position, Position::Bb);
        hand.apply(Action::Check).unwrap();
        hand.apply(Action::Bet(20)).unwrap();
        assert_eq!(
            hand.apply(Action::Raise(25)),
            Err(IllegalAction::TooSmall("2.5".into(), "4".into()))
        );
        hand.apply(Action::AllIn).unwrap();
        hand.apply(Action::Call).unwrap();
        assert!(hand.is_over());
        assert_eq!(hand.payouts(), vec![2 * STACK, 0]);
    }

    #[test]
    fn folds_and_checks_follow_the_rules() {
        let mut hand = heads_up("AhAd", "KcKd", "2c7d9hTsJs");
        hand.apply(Action::Call).unwrap();
        assert_eq!(hand.apply(Action::Fold), Err(IllegalAction::FreeCheck));
        hand.apply(Action::Check).unwrap();
        assert_eq!(hand.street, Street::Flop);
        hand.apply(Action::Bet(10)).unwrap();
        hand.apply(Action::Fold).unwrap();
        assert!(hand.is_over());
        assert_eq!(hand.payouts(), vec![0, 30]);
    }

    #[test]
    fn six_max_side_pots_and_splits() {
        let holes = ["AhAd", "KcKd", "QhQd", "2c3c", "4d5d", "7h8h"];
        let holes: Vec<[Card; 2]> = holes
            .iter()
            .map(|t| {
                let c = cards(t);
                [c[0], c[1]]
            })
            .collect();
        let board = cards("AsKs2h9c9d");
        let mut hand = Hand::new(
            Table::SixMax,
            &holes,
            [board[0], board[1], board[2], board[3], board[4]],
        );
        hand.apply(Action::Raise(25)).unwrap(); // UTG
        hand.apply(Action::AllIn).unwrap(); // HJ
        hand.apply(Action::Call).unwrap(); // CO
        for _ in 0..3 {
            hand.apply(Action::Fold).unwrap();
        }
        hand.apply(Action::Call).unwrap(); // UTG
        assert!(hand.is_over());
        let paid = hand.payouts();
        assert_eq!(paid.iter().sum::<u32>(), hand.pot());
        assert_eq!(paid[0], hand.pot());
    }
}
