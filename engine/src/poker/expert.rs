//! The expert labeler: an EV estimate, in big blinds relative to folding
//! now, for every legal action of a spot. The SFT label is the action with
//! the highest EV; preference pairs compare actions by EV.
//!
//! # The model
//!
//! **Ranges.** Every opponent holds a range that follows from what they did.
//! Preflop their last voluntary action picks a band of the 169 classes in
//! strength order (see [`preflop_range`]): an open from UTG is the top 15%,
//! a call of an open from the big blind the 6%-45% band, a 3-bet the top 7%,
//! and so on; a player who has not acted yet holds any hand. After the flop
//! each bet keeps the strongest 55% of the range by made-hand value on the
//! board of that street (a raise 35%, an all-in 30%), a call drops the
//! weakest 25%, a check keeps everything. Draws count as their made hand, a
//! documented simplification.
//!
//! **Equity.** Preflop: the class-vs-class table of [`PreflopTable`].
//! Postflop: per opponent combo, over every river (turn spots), the river
//! itself (river spots) or a seeded sample of turn-river runouts (flop spots,
//! the only seed-dependent part). Multiway pots are played heads-up against
//! the main opponent (the last aggressor, else the first still in).
//!
//! **Realisation.** Equity is not all won when more betting follows: hero
//! realises 92% of it preflop in position and 80% out of position, 95%/85%
//! on the flop and turn, all of it on the river or when all in. Limping
//! realises 75%.
//!
//! **Actions.** With pot `P`, hero adding `A` and the opponent needing `X`
//! more to call:
//! - fold: 0; check: `r e P`; call: `r e (P + C) - C`.
//! - postflop bet or raise: the opponent continues with the strongest
//!   fraction `d = 1 - X / (P + A) + 0.05` of their range (minimum defence
//!   frequency, slightly over-defended as real opponents do), else folds:
//!   `EV = (1 - d) P + d (r e_top (P + A + X) - A)`. Re-raises are ignored.
//!   Against an all-in, two pair or better calls and at least 25% of the
//!   range does (at most `d`).
//! - preflop raise: each opponent continues with a fraction of their range
//!   (a player yet to act 10%, the small blind 12%, the big blind 35%, 55%
//!   heads-up, 4% facing a re-raise; a player who raised before 60%, one
//!   who limped or called 50%; an all-in is called only by the top 6% of
//!   all hands), everyone folding wins `P`. The main
//!   continuing opponent re-raises with the top 35% of what continues, to
//!   3x, where hero continues only if that is better than giving up `A`.
//!
//! Stacks cap every amount; chips an opponent cannot match are returned.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::cards::{Card, CardSet};
use super::eval::{Category, HandValue, evaluate};
use super::game::{Action, BB, Event, Position, Street, Table};
use super::preflop::{ClassWeights, PreflopTable, combos};
use super::range::HandClass;
use super::spot::{AnswerError, Spot, parse_answer};

/// The labeler. `seed` only affects flop spots (sampled runouts).
#[derive(Clone, Copy, Debug)]
pub struct Expert {
    pub seed: u64,
    /// Turn-river runouts sampled per flop spot.
    pub flop_runouts: usize,
}

impl Default for Expert {
    fn default() -> Self {
        Expert {
            seed: 0,
            flop_runouts: 400,
        }
    }
}

/// The EV of one action, in big blinds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActionValue {
    pub action: Action,
    pub ev: f64,
}

/// Every offered action with its EV, and the best one.
#[derive(Clone, Debug)]
pub struct Judgement {
    pub values: Vec<ActionValue>,
    pub best: usize,
}

impl Judgement {
    pub fn best_action(&self) -> Action {
        self.values[self.best].action
    }

    pub fn best_ev(&self) -> f64 {
        self.values[self.best].ev
    }
}

const REALISE_PREFLOP: (f64, f64) = (0.92, 0.80);
const REALISE_POSTFLOP: (f64, f64) = (0.95, 0.85);
const REALISE_LIMP: f64 = 0.75;
const OVER_DEFENCE: f64 = 0.05;
const RERAISE_SHARE: f64 = 0.35;
const ALL_IN_CALLERS: f64 = 0.06;
const ALL_IN_FLOOR: f64 = 0.20;
const SHOVE_CALLERS: f64 = 0.25;

impl Expert {
    pub fn new(seed: u64) -> Expert {
        Expert {
            seed,
            ..Expert::default()
        }
    }

    /// EVs of every offered action of `spot`.
    pub fn judge(&self, spot: &Spot) -> Judgement {
        let model = Model::new(self, spot);
        let values: Vec<ActionValue> = spot
            .options()
            .into_iter()
            .map(|action| ActionValue {
                action,
                ev: model.ev(action),
            })
            .collect();
        let best = values.iter().enumerate().fold(
            0,
            |best, (i, v)| if v.ev > values[best].ev { i } else { best },
        );
        Judgement { values, best }
    }

    /// EV of any legal action (sizes off the grid included), for rewards.
    pub fn ev(&self, spot: &Spot, action: Action) -> f64 {
        Model::new(self, spot).ev(action)
    }

    /// Score a model's answer text: the parsed action (or why it is not
    /// one), its EV, and the best EV among the offered actions. A PPO
    /// reward is typically `-regret()` for legal answers and a fixed
    /// penalty otherwise.
    pub fn score_answer(&self, spot: &Spot, text: &str) -> AnswerScore {
        let model = Model::new(self, spot);
        let best_ev = spot
            .options()
            .into_iter()
            .map(|a| model.ev(a))
            .fold(f64::NEG_INFINITY, f64::max);
        let action = parse_answer(spot, text);
        let ev = action.as_ref().ok().map(|&a| model.ev(a));
        AnswerScore {
            action,
            ev,
            best_ev,
        }
    }
}

/// A scored answer, see [`Expert::score_answer`].
#[derive(Clone, Debug, PartialEq)]
pub struct AnswerScore {
    pub action: Result<Action, AnswerError>,
    /// EV in big blinds when the answer is a legal action.
    pub ev: Option<f64>,
    pub best_ev: f64,
}

impl AnswerScore {
    /// How much worse than the best offered action, in big blinds (0 for
    /// the best; `None` when the answer is not a legal action).
    pub fn regret(&self) -> Option<f64> {
        self.ev.map(|ev| (self.best_ev - ev).max(0.0))
    }
}

/// A player's preflop range from their last voluntary preflop action.
pub fn preflop_range(table: Table, position: Position, history: &[Event]) -> ClassWeights {
    let t = PreflopTable::get();
    let mut level = 0;
    let mut last: Option<(Action, usize, bool)> = None;
    for e in history.iter().filter(|e| e.street == Street::Preflop) {
        if e.position == position && e.action != Action::Fold {
            last = Some((e.action, level, e.all_in));
        }
        if matches!(e.action, Action::Raise(_) | Action::Bet(_)) {
            level += 1;
        }
    }
    let hu = table == Table::HeadsUp;
    let (lo, hi) = match last {
        None => (0.0, 1.0),
        Some((_, _, true)) => (0.0, if hu { 0.10 } else { 0.05 }),
        Some((Action::Check, _, _)) => (0.10, 1.0),
        Some((Action::Call, 0, _)) if position == Position::Sb => (0.10, 0.70),
        Some((Action::Call, 0, _)) if hu => (0.15, 0.90),
        Some((Action::Call, 0, _)) => (0.08, 0.50),
        Some((Action::Raise(_), 0, _)) => (0.0, open_fraction(table, position)),
        Some((Action::Call, 1, _)) => match (hu, position) {
            (true, _) => (0.10, 0.70),
            (false, Position::Bb) => (0.06, 0.45),
            (false, Position::Sb) => (0.05, 0.20),
            _ => (0.04, 0.16),
        },
        Some((Action::Raise(_), 1, _)) => (0.0, if hu { 0.14 } else { 0.07 }),
        Some((Action::Call, 2, _)) => (0.02, if hu { 0.30 } else { 0.14 }),
        Some(_) => (0.0, 0.03),
    };
    t.band(lo, hi)
}

/// Opening range size by position (fraction of all combos).
fn open_fraction(table: Table, position: Position) -> f64 {
    match (table, position) {
        (Table::HeadsUp, _) => 0.80,
        (_, Position::Utg) => 0.15,
        (_, Position::Hj) => 0.19,
        (_, Position::Co) => 0.26,
        (_, Position::Btn) => 0.42,
        (_, Position::Sb) => 0.36,
        (_, Position::Bb) => 0.0,
    }
}

fn bb(chips: u32) -> f64 {
    f64::from(chips) / f64::from(BB)
}

/// One opponent combo postflop: its weight, made-hand value now and hero's
/// equity against it.
struct Combo {
    weight: f64,
    value: HandValue,
    equity: f64,
}

/// Everything the EV formulas need about one spot, computed once.
struct Model<'a> {
    spot: &'a Spot,
    class: HandClass,
    main: Position,
    main_in: u32,
    main_cover: u32,
    in_position: bool,
    /// Postflop: the main opponent's combos, strongest first.
    combos: Vec<Combo>,
}

impl<'a> Model<'a> {
    fn new(expert: &Expert, spot: &'a Spot) -> Model<'a> {
        let main = main_opponent(spot);
        let opponent = spot.opponents.iter().find(|o| o.position == main);
        let (main_in, main_cover) =
            opponent.map_or((0, 0), |o| (o.street_in, o.street_in + o.stack));
        let in_position = spot
            .opponents
            .iter()
            .all(|o| o.position.postflop_order() < spot.hero.postflop_order());
        let mut model = Model {
            spot,
            class: HandClass::of(spot.hole),
            main,
            main_in,
            main_cover,
            in_position,
            combos: Vec::new(),
        };
        if spot.street != Street::Preflop {
            model.combos = postflop_combos(expert, spot, main);
        }
        model
    }

    fn realise(&self) -> f64 {
        let (ip, oop) = match self.spot.street {
            Street::Preflop => REALISE_PREFLOP,
            Street::River => return 1.0,
            _ => REALISE_POSTFLOP,
        };
        if self.in_position { ip } else { oop }
    }

    fn ev(&self, action: Action) -> f64 {
        let spot = self.spot;
        let pot = bb(spot.pot);
        match action {
            Action::Fold => 0.0,
            Action::Check => self.realise() * self.equity_all() * pot,
            Action::Call => {
                let call = bb(spot.to_call);
                let limp = spot.street == Street::Preflop && spot.current_bet == BB;
                let all_in = spot.to_call >= spot.hero_stack || self.main_cover <= spot.current_bet;
                let r = if all_in {
                    1.0
                } else if limp {
                    REALISE_LIMP
                } else {
                    self.realise()
                };
                r * self.equity_all() * (pot + call) - call
            }
            Action::Bet(_) | Action::Raise(_) | Action::AllIn => {
                let to = spot.hero_in + spot.chips_added(action);
                if spot.street == Street::Preflop {
                    self.preflop_raise(to)
                } else {
                    self.postflop_raise(to)
                }
            }
        }
    }

    /// Hero's equity against the main opponent's whole range.
    fn equity_all(&self) -> f64 {
        if self.spot.street == Street::Preflop {
            let range = preflop_range(self.spot.table, self.main, &self.spot.history);
            PreflopTable::get().equity_vs(self.class, &range)
        } else {
            self.equity_top(1.0)
        }
    }

    /// Postflop: hero's equity against the strongest `fraction` of the range.
    fn equity_top(&self, fraction: f64) -> f64 {
        let total: f64 = self.combos.iter().map(|c| c.weight).sum();
        let mut left = total * fraction;
        let (mut num, mut den) = (0.0, 0.0);
        for combo in &self.combos {
            if left <= 0.0 {
                break;
            }
            let w = combo.weight.min(left);
            num += w * combo.equity;
            den += w;
            left -= w;
        }
        if den > 0.0 { num / den } else { 0.5 }
    }

    /// Postflop: the weight share of the range holding `category` or better.
    fn share_at_least(&self, category: Category) -> f64 {
        let total: f64 = self.combos.iter().map(|c| c.weight).sum();
        let strong: f64 = self
            .combos
            .iter()
            .filter(|c| c.value.category() >= category)
            .map(|c| c.weight)
            .sum();
        if total > 0.0 { strong / total } else { 0.0 }
    }

    fn postflop_raise(&self, to: u32) -> f64 {
        let spot = self.spot;
        let matched = to.min(self.main_cover.max(spot.current_bet));
        let added = bb(matched - spot.hero_in);
        let call = bb(matched.saturating_sub(self.main_in));
        let pot = bb(spot.pot);
        let all_in = to >= spot.all_in_to() || matched >= self.main_cover;
        let mut defend = (1.0 - call / (pot + added) + OVER_DEFENCE).clamp(OVER_DEFENCE, 1.0);
        if all_in {
            // Against a shove the caller's hand matters more than the
            // price: two pair or better calls, and at least a quarter of
            // the range (its strong one-pair hands) does.
            defend = defend.min(self.share_at_least(Category::TwoPair).max(SHOVE_CALLERS));
        }
        let r = if all_in { 1.0 } else { self.realise() };
        let e = self.equity_top(defend);
        (1.0 - defend) * pot + defend * (r * e * (pot + added + call) - added)
    }

    fn preflop_raise(&self, to: u32) -> f64 {
        let spot = self.spot;
        let t = PreflopTable::get();
        let all_in = to >= spot.all_in_to();
        let hu = spot.table == Table::HeadsUp;
        let raises_before = spot.raises_this_street();
        // Each opponent: their range and how much of it continues.
        let defenders: Vec<(Position, ClassWeights, f64, u32, u32)> = spot
            .opponents
            .iter()
            .map(|o| {
                let acted = spot
                    .history
                    .iter()
                    .any(|e| e.position == o.position && e.street == Street::Preflop);
                let range = preflop_range(spot.table, o.position, &spot.history);
                let last_raised = spot
                    .history
                    .iter()
                    .rev()
                    .find(|e| e.position == o.position && e.street == Street::Preflop)
                    .is_some_and(|e| e.action.is_aggressive());
                let cont = if all_in {
                    // Stacking off 100 bb: only the top 6% of all hands.
                    let callers = t.band(0.0, ALL_IN_CALLERS);
                    let both: ClassWeights = std::array::from_fn(|c| range[c].min(callers[c]));
                    // A capped range (a limp, a flat call) still calls
                    // with the best of what it has.
                    (combos(&both) / combos(&range).max(1e-9)).max(ALL_IN_FLOOR)
                } else if last_raised {
                    0.60
                } else if acted {
                    0.50
                } else if raises_before > 0 {
                    0.04
                } else {
                    match (hu, o.position) {
                        (true, _) => 0.55,
                        (false, Position::Bb) => 0.35,
                        (false, Position::Sb) => 0.12,
                        _ => 0.10,
                    }
                };
                (o.position, range, cont, o.street_in, o.street_in + o.stack)
            })
            .collect();
        let all_fold: f64 = defenders.iter().map(|d| 1.0 - d.2).product();
        let Some(main) = defenders.iter().fold(
            None::<&(Position, ClassWeights, f64, u32, u32)>,
            |best, d| match best {
                Some(b) if b.2 * combos(&b.1) >= d.2 * combos(&d.1) => Some(b),
                _ => Some(d),
            },
        ) else {
            return bb(spot.pot);
        };
        let (_, range, cont, main_in, main_cover) = main;
        let pot = bb(spot.pot);
        let matched = to.min(*main_cover);
        let added = bb(matched - spot.hero_in);
        let call = bb(matched.saturating_sub(*main_in));
        let continuing = t.top_of(range, *cont);
        let reraise = if all_in || matched >= *main_cover {
            0.0
        } else {
            RERAISE_SHARE
        };
        let callers = t.below_top_of(&continuing, reraise);
        let r = if all_in || matched >= *main_cover {
            1.0
        } else {
            self.realise()
        };
        let called = r * t.equity_vs(self.class, &callers) * (pot + added + call) - added;
        let reraised = if reraise > 0.0 {
            let raisers = t.top_of(&continuing, reraise);
            let big = (3 * to).min(spot.all_in_to()).min(*main_cover);
            let hero_adds = bb(big - spot.hero_in);
            let villain_adds = bb(big - *main_in);
            let e = t.equity_vs(self.class, &raisers);
            (e * (pot + hero_adds + villain_adds) - hero_adds).max(-added)
        } else {
            0.0
        };
        all_fold * pot + (1.0 - all_fold) * (reraise * reraised + (1.0 - reraise) * called)
    }
}

/// The opponent whose range decides: the last aggressor on this street,
/// else the last to act before hero, else the first still in.
fn main_opponent(spot: &Spot) -> Position {
    let in_hand = |p: Position| spot.opponents.iter().any(|o| o.position == p);
    let street: Vec<&Event> = spot
        .history
        .iter()
        .filter(|e| e.street == spot.street)
        .collect();
    street
        .iter()
        .rev()
        .find(|e| e.action.is_aggressive() && in_hand(e.position))
        .or_else(|| {
            street
                .iter()
                .rev()
                .find(|e| e.action != Action::Fold && in_hand(e.position))
        })
        .map(|e| e.position)
        .or_else(|| {
            // Preflop before anyone came in: the big blind defends most.
            spot.opponents
                .iter()
                .map(|o| o.position)
                .find(|&p| p == Position::Bb)
        })
        .or_else(|| spot.opponents.first().map(|o| o.position))
        .unwrap_or(Position::Bb)
}

/// Keep the strongest `fraction` of weighted `(weight, value)` items.
fn keep_top(items: &mut [(f64, u32, [Card; 2])], fraction: f64) {
    items.sort_by_key(|item| std::cmp::Reverse(item.1));
    let total: f64 = items.iter().map(|i| i.0).sum();
    let mut left = total * fraction;
    for item in items.iter_mut() {
        let keep = item.0.min(left.max(0.0));
        left -= item.0;
        item.0 = keep;
    }
}

/// The main opponent's combos after their postflop actions, strongest
/// first, each with hero's equity.
fn postflop_combos(expert: &Expert, spot: &Spot, villain: Position) -> Vec<Combo> {
    let table = preflop_range(spot.table, villain, &spot.history);
    let hero = CardSet::of(&spot.hole);
    let dead = CardSet(hero.0 | CardSet::of(&spot.board).0);
    let board_at = |street: Street| CardSet::of(&spot.board[..street.board_len()]).0;
    let mut items: Vec<(f64, u32, [Card; 2])> = Vec::new();
    for (class, &w) in table.iter().enumerate() {
        if w <= 0.0 {
            continue;
        }
        for combo in HandClass::from_index(class).combos() {
            let set = CardSet::of(&combo);
            if set.0 & dead.0 == 0 {
                items.push((f64::from(w), 0, combo));
            }
        }
    }
    for e in spot
        .history
        .iter()
        .filter(|e| e.street != Street::Preflop && e.position == villain)
    {
        let keep = match (e.action, e.all_in) {
            (_, true) => 0.30,
            (Action::Bet(_), _) => 0.55,
            (Action::Raise(_), _) => 0.35,
            (Action::Call, _) => 0.75,
            _ => continue,
        };
        let board = board_at(e.street);
        for item in items.iter_mut() {
            item.1 = evaluate(CardSet(CardSet::of(&item.2).0 | board)).0;
        }
        keep_top(&mut items, keep);
        items.retain(|i| i.0 > 0.0);
    }
    let board = board_at(spot.street);
    for item in items.iter_mut() {
        item.1 = evaluate(CardSet(CardSet::of(&item.2).0 | board)).0;
    }
    items.sort_by_key(|item| std::cmp::Reverse(item.1));
    let runouts = runouts(expert, spot, dead);
    let hero_values: Vec<u32> = runouts
        .iter()
        .map(|&r| evaluate(CardSet(hero.0 | board | r)).0)
        .collect();
    items
        .into_iter()
        .map(|(weight, value, combo)| {
            let set = CardSet::of(&combo).0;
            let (mut won, mut n) = (0.0, 0.0);
            for (&r, &h) in runouts.iter().zip(&hero_values) {
                if r & set != 0 {
                    continue;
                }
                let v = evaluate(CardSet(set | board | r)).0;
                won += if h > v {
                    1.0
                } else if h == v {
                    0.5
                } else {
                    0.0
                };
                n += 1.0;
            }
            Combo {
                weight,
                value: HandValue(value),
                equity: if n > 0.0 { won / n } else { 0.5 },
            }
        })
        .collect()
}

/// Board completions to average over: none on the river, every river on
/// the turn, a seeded sample of turn-river pairs on the flop.
fn runouts(expert: &Expert, spot: &Spot, dead: CardSet) -> Vec<u64> {
    let live: Vec<u64> = Card::all()
        .map(Card::bit)
        .filter(|b| b & dead.0 == 0)
        .collect();
    match spot.street {
        Street::River | Street::Preflop => vec![0],
        Street::Turn => live,
        Street::Flop => {
            // The stream depends on the seed and the spot, so two spots
            // never share noise and the same spot always gets the same.
            let mut rng = ChaCha8Rng::seed_from_u64(expert.seed);
            rng.set_stream(dead.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(spot.pot));
            (0..expert.flop_runouts)
                .map(|_| {
                    let a = rng.random_range(0..live.len());
                    let mut b = rng.random_range(0..live.len() - 1);
                    if b >= a {
                        b += 1;
                    }
                    live[a] | live[b]
                })
                .collect()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::poker::cards::parse_cards;
    use crate::poker::game::Hand;

    /// A hand where seat `hero` holds `hole`, others hold fixed junk.
    fn hand(table: Table, hero: usize, hole: &str, board: &str) -> Hand {
        let mut pool = parse_cards("2c3d4h5s6c7d8h9sTcJd2s3h4d5c6s7h8d9c")
            .unwrap()
            .into_iter();
        let hole = parse_cards(hole).unwrap();
        let board = parse_cards(board).unwrap();
        let mut pool =
            std::iter::from_fn(|| pool.find(|c| !hole.contains(c) && !board.contains(c)));
        let holes: Vec<[Card; 2]> = (0..table.positions().len())
            .map(|i| {
                if i == hero {
                    [hole[0], hole[1]]
                } else {
                    [pool.next().unwrap(), pool.next().unwrap()]
                }
            })
            .collect();
        Hand::new(
            table,
            &holes,
            [board[0], board[1], board[2], board[3], board[4]],
        )
    }

    fn best(hand: &Hand) -> Action {
        Expert::new(1)
            .judge(&Spot::from_hand(hand).unwrap())
            .best_action()
    }

    #[test]
    fn aces_never_fold_preflop() {
        for hero in 0..6 {
            let mut h = hand(Table::SixMax, hero, "AsAh", "KcQd2h7s9c");
            for _ in 0..hero {
                h.apply(Action::Fold).unwrap();
            }
            if hero < 5 {
                assert!(best(&h).is_aggressive(), "{hero}");
            }
        }
        // Facing an open, a 3-bet and an all-in.
        let mut h = hand(Table::SixMax, 3, "AsAh", "KcQd2h7s9c");
        h.apply(Action::Raise(25)).unwrap();
        h.apply(Action::Fold).unwrap();
        h.apply(Action::Fold).unwrap();
        assert_ne!(best(&h), Action::Fold);
        let mut h = hand(Table::SixMax, 0, "AsAh", "KcQd2h7s9c");
        h.apply(Action::Raise(25)).unwrap();
        h.apply(Action::Raise(75)).unwrap();
        for _ in 0..4 {
            h.apply(Action::Fold).unwrap();
        }
        assert_ne!(best(&h), Action::Fold);
        let mut h = hand(Table::HeadsUp, 1, "AsAh", "KcQd2h7s9c");
        h.apply(Action::AllIn).unwrap();
        // Calling the whole stack is offered as all in.
        assert_eq!(best(&h), Action::AllIn);
    }

    #[test]
    fn seven_deuce_folds_under_the_gun() {
        for hole in ["7s2d", "7h2c", "8c3d", "9d2s"] {
            let h = hand(Table::SixMax, 0, hole, "KcQd2h7s9c");
            assert_eq!(best(&h), Action::Fold, "{hole}");
        }
    }

    #[test]
    fn the_nuts_bets_or_raises_on_the_river() {
        // Hero on the button holds the nut flush; BB checks, then BB bets.
        let mut h = hand(Table::HeadsUp, 0, "AhKh", "2h7h9hTc3s");
        h.apply(Action::Raise(25)).unwrap();
        h.apply(Action::Call).unwrap();
        for _ in 0..2 {
            h.apply(Action::Check).unwrap();
            h.apply(Action::Check).unwrap();
        }
        h.apply(Action::Check).unwrap();
        assert!(matches!(best(&h), Action::Bet(_) | Action::AllIn));
        let mut h2 = hand(Table::HeadsUp, 0, "AhKh", "2h7h9hTc3s");
        h2.apply(Action::Raise(25)).unwrap();
        h2.apply(Action::Call).unwrap();
        for _ in 0..2 {
            h2.apply(Action::Check).unwrap();
            h2.apply(Action::Check).unwrap();
        }
        h2.apply(Action::Bet(30)).unwrap();
        assert!(matches!(best(&h2), Action::Raise(_) | Action::AllIn));
    }

    #[test]
    fn drawing_dead_folds_to_a_bet_and_free_checks_are_never_folded() {
        let mut h = hand(Table::HeadsUp, 0, "7h2d", "KsQd8h4c3s");
        h.apply(Action::Raise(25)).unwrap();
        h.apply(Action::Call).unwrap();
        for _ in 0..2 {
            h.apply(Action::Check).unwrap();
            h.apply(Action::Check).unwrap();
        }
        // River: hero (BTN) acts last; BB bets.
        let spot_check = Spot::from_hand(&{
            let mut c = h.clone();
            c.apply(Action::Check).unwrap();
            c
        })
        .unwrap();
        let judged = Expert::new(1).judge(&spot_check);
        assert!(judged.values.iter().all(|v| v.action != Action::Fold));
        h.apply(Action::Bet(40)).unwrap();
        let spot = Spot::from_hand(&h).unwrap();
        let judged = Expert::new(1).judge(&spot);
        assert_eq!(judged.best_action(), Action::Fold);
        let call = judged
            .values
            .iter()
            .find(|v| v.action == Action::Call)
            .unwrap();
        assert!(
            (call.ev + 4.0).abs() < 1e-9,
            "drawing dead loses the call: {}",
            call.ev
        );
        let expert = Expert::new(1);
        assert_eq!(expert.score_answer(&spot, "fold").regret(), Some(0.0));
        let called = expert.score_answer(&spot, "Call.");
        assert!((called.regret().unwrap() - 4.0).abs() < 1e-9);
        assert_eq!(expert.score_answer(&spot, "check").regret(), None);
        // Bet 4 into 8: a legal raise is any size from 8 bb to all in.
        assert!(expert.score_answer(&spot, "raise 9").ev.is_some());
    }
}
