//! Random decision spots with realistic lines, deterministic by RNG.
//!
//! A line is scripted through the rules engine ([`Hand`]), so pots, stacks
//! and legal actions are consistent by construction. Sizes come from the
//! same grid that is offered to players. Hero's cards are drawn from the
//! range hero's own earlier actions imply (an opener holds an opening hand),
//! so spots look like ones a sensible player reaches.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::cards::{Card, CardSet};
use super::expert::preflop_range;
use super::game::{Action, Hand, Position, Street, Table};
use super::range::HandClass;
use super::spot::Spot;

/// Which spots to draw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpotMix {
    /// Share of preflop spots (the rest are flop, turn and river).
    pub preflop: f64,
    /// Share of heads-up tables (the rest are 6-max).
    pub heads_up: f64,
}

/// Kinds of moves a script asks for; sizes come from the offered grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Move {
    Check,
    Call,
    /// A bet or raise of a grid size (never all in).
    Raise,
    /// All in, so hero faces a shove: call it off or fold.
    Shove,
}

/// Let everyone before `who` fold (preflop only), then make `mv`.
fn play(hand: &mut Hand, rng: &mut ChaCha8Rng, who: Position, mv: Move) -> Option<()> {
    loop {
        let i = hand.to_act?;
        if hand.seats[i].position == who {
            break;
        }
        if hand.street != Street::Preflop {
            return None;
        }
        hand.apply(Action::Fold).ok()?;
    }
    let spot = Spot::from_hand(hand)?;
    let options = spot.options();
    let action = match mv {
        Move::Check => Action::Check,
        Move::Call => Action::Call,
        Move::Shove => Action::AllIn,
        Move::Raise => {
            let sized: Vec<Action> = options
                .iter()
                .copied()
                .filter(|a| matches!(a, Action::Bet(_) | Action::Raise(_)))
                .collect();
            *sized.get(rng.random_range(0..sized.len().max(1)))?
        }
    };
    if !options.contains(&action) {
        return None;
    }
    hand.apply(action).ok()
}

/// A villain's aggression: usually a grid-sized raise, all in with
/// probability `shove`.
fn aggression(rng: &mut ChaCha8Rng, shove: f64) -> Move {
    if rng.random_bool(shove) {
        Move::Shove
    } else {
        Move::Raise
    }
}

/// Fold everyone until `who` is to act.
fn fold_to(hand: &mut Hand, who: Position) -> Option<()> {
    loop {
        let i = hand.to_act?;
        if hand.seats[i].position == who {
            return Some(());
        }
        hand.apply(Action::Fold).ok()?;
    }
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// A random spot; `None` when a drawn line did not work out (the caller
/// draws again from the same RNG, so the sequence stays deterministic).
fn try_spot(rng: &mut ChaCha8Rng, mix: &SpotMix) -> Option<Spot> {
    let table = if rng.random_bool(mix.heads_up.clamp(0.0, 1.0)) {
        Table::HeadsUp
    } else {
        Table::SixMax
    };
    let positions = table.positions();
    let placeholder: Vec<[Card; 2]> = (0..positions.len() as u8)
        .map(|i| [Card::from_index(2 * i), Card::from_index(2 * i + 1)])
        .collect();
    let board = [0, 1, 2, 3, 4].map(|i| Card::from_index(40 + i));
    let mut hand = Hand::new(table, &placeholder, board);
    let hero = if rng.random_bool(mix.preflop.clamp(0.0, 1.0)) {
        preflop_line(&mut hand, rng, positions)?
    } else {
        postflop_line(&mut hand, rng, positions)?
    };
    let i = hand.to_act?;
    if hand.seats[i].position != hero {
        return None;
    }
    deal_hero(&mut hand, rng, i);
    Spot::from_hand(&hand)
}

/// Spot number `index` of the sequence for `seed`: each has its own RNG
/// stream, so any subset can be drawn in any order or in parallel.
pub fn indexed_spot(seed: u64, index: u64, mix: &SpotMix) -> (Spot, ChaCha8Rng) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    let spot = random_spot(&mut rng, mix);
    (spot, rng)
}

/// A spot drawn from `mix`.
pub fn random_spot(rng: &mut ChaCha8Rng, mix: &SpotMix) -> Spot {
    loop {
        if let Some(spot) = try_spot(rng, mix) {
            return spot;
        }
    }
}

/// Unopened, facing a limp, facing an open or facing a 3-bet; opens and
/// 3-bets are sometimes shoves.
fn preflop_line(hand: &mut Hand, rng: &mut ChaCha8Rng, positions: &[Position]) -> Option<Position> {
    let n = positions.len();
    match rng.random_range(0..4) {
        0 => {
            let hero = positions[rng.random_range(0..n - 1)];
            fold_to(hand, hero)?;
            Some(hero)
        }
        1 => {
            let limper = rng.random_range(0..n - 1);
            let hero = positions[rng.random_range(limper + 1..n)];
            play(hand, rng, positions[limper], Move::Call)?;
            fold_to(hand, hero)?;
            Some(hero)
        }
        2 => {
            let opener = rng.random_range(0..n - 1);
            let hero = positions[rng.random_range(opener + 1..n)];
            let open = aggression(rng, 0.15);
            play(hand, rng, positions[opener], open)?;
            fold_to(hand, hero)?;
            Some(hero)
        }
        _ => {
            let opener = rng.random_range(0..n - 1);
            let three = positions[rng.random_range(opener + 1..n)];
            let hero = positions[opener];
            play(hand, rng, hero, Move::Raise)?;
            let three_bet = aggression(rng, 0.25);
            play(hand, rng, three, three_bet)?;
            fold_to(hand, hero)?;
            Some(hero)
        }
    }
}

/// A heads-up pot (single-raised, 3-bet or limped) played to a random
/// street with checks, bets and calls, ending on a decision for hero (facing
/// a bet or raise, sometimes an all-in one).
fn postflop_line(
    hand: &mut Hand,
    rng: &mut ChaCha8Rng,
    positions: &[Position],
) -> Option<Position> {
    let n = positions.len();
    let opener = positions[rng.random_range(0..n - 1)];
    let caller = if n == 2 || rng.random_bool(0.5) {
        Position::Bb
    } else {
        let at = positions.iter().position(|&p| p == opener)?;
        positions[rng.random_range(at + 1..n)]
    };
    match rng.random_range(0..10) {
        0..=6 => {
            play(hand, rng, opener, Move::Raise)?;
            play(hand, rng, caller, Move::Call)?;
        }
        7..=8 => {
            play(hand, rng, opener, Move::Raise)?;
            play(hand, rng, caller, Move::Raise)?;
            fold_to(hand, opener)?;
            play(hand, rng, opener, Move::Call)?;
        }
        _ if caller == Position::Bb => {
            play(hand, rng, opener, Move::Call)?;
            fold_to(hand, Position::Bb)?;
            play(hand, rng, Position::Bb, Move::Check)?;
        }
        _ => return None,
    }
    if hand.street != Street::Flop {
        return None;
    }
    let (oop, ip) = if opener.postflop_order() < caller.postflop_order() {
        (opener, caller)
    } else {
        (caller, opener)
    };
    let hero = if rng.random_bool(0.5) { oop } else { ip };
    let villain = if hero == oop { ip } else { oop };
    let target = pick(rng, &[Street::Flop, Street::Turn, Street::River]);
    while hand.street < target {
        match rng.random_range(0..10) {
            0..=4 => {
                play(hand, rng, oop, Move::Check)?;
                play(hand, rng, ip, Move::Check)?;
            }
            5..=6 => {
                play(hand, rng, oop, Move::Raise)?;
                play(hand, rng, ip, Move::Call)?;
            }
            _ => {
                play(hand, rng, oop, Move::Check)?;
                play(hand, rng, ip, Move::Raise)?;
                play(hand, rng, oop, Move::Call)?;
            }
        }
    }
    match rng.random_range(0..4) {
        // First to act (hero out of position) or checked to (in position).
        0 => {
            if hero == ip {
                play(hand, rng, oop, Move::Check)?;
            }
        }
        // Facing a bet.
        1 | 2 => {
            if hero == oop {
                play(hand, rng, oop, Move::Check)?;
            }
            let bet = aggression(rng, 0.15);
            play(hand, rng, villain, bet)?;
        }
        // Facing a raise.
        _ => {
            if hero == ip {
                play(hand, rng, oop, Move::Check)?;
            }
            play(hand, rng, hero, Move::Raise)?;
            let raise = aggression(rng, 0.25);
            play(hand, rng, villain, raise)?;
        }
    }
    Some(hero)
}

/// Give seat `i` cards from the range its line implies and a fresh board
/// (other seats' cards are never shown, so they stay placeholders).
fn deal_hero(hand: &mut Hand, rng: &mut ChaCha8Rng, i: usize) {
    let range = preflop_range(hand.table, hand.seats[i].position, &hand.history);
    let mut deck: Vec<Card> = Card::all().collect();
    loop {
        deck.shuffle(rng);
        let hole = [deck[0], deck[1]];
        let weight = f64::from(range[HandClass::of(hole).index()]);
        if weight > 0.0 && rng.random_bool(weight.min(1.0)) {
            hand.seats[i].hole = hole;
            hand.deck_board = [deck[2], deck[3], deck[4], deck[5], deck[6]];
            debug_assert_eq!(CardSet::of(&deck[..7]).len(), 7);
            return;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::poker::spot::Situation;
    use std::collections::BTreeSet;

    #[test]
    fn draws_every_spot_type_with_consistent_pots() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mix = SpotMix {
            preflop: 0.4,
            heads_up: 0.3,
        };
        let mut types = BTreeSet::new();
        let mut tables = BTreeSet::new();
        for _ in 0..2000 {
            let spot = random_spot(&mut rng, &mix);
            types.insert(spot.spot_type());
            tables.insert(format!("{:?}", spot.table));
            assert_eq!(spot.board.len(), spot.street.board_len());
            let opp: u32 = spot.opponents.iter().map(|o| o.stack).sum();
            let chips = spot.pot + spot.hero_stack + opp;
            let seats = spot.table.positions().len() as u32;
            // Folded players' stacks are not in the spot: their chips are
            // 100 bb minus what they put in the pot.
            assert!(chips <= seats * 1000 && spot.pot >= 15);
            assert!(!spot.options().is_empty());
            assert!(CardSet::of(&spot.hole).0 & CardSet::of(&spot.board).0 == 0);
        }
        assert_eq!(tables.len(), 2);
        for situation in [
            Situation::Unopened,
            Situation::FacingLimp,
            Situation::FacingOpen,
            Situation::Facing3Bet,
        ] {
            assert!(
                types.iter().any(|t| t.situation == situation),
                "{situation:?}"
            );
        }
        for street in [Street::Flop, Street::Turn, Street::River] {
            for situation in [
                Situation::FirstToAct,
                Situation::CheckedTo,
                Situation::FacingBet,
                Situation::FacingRaise,
            ] {
                assert!(
                    types
                        .iter()
                        .any(|t| t.street == street && t.situation == situation),
                    "{street:?} {situation:?}"
                );
            }
        }
    }

    #[test]
    fn same_seed_same_spots() {
        let mix = SpotMix {
            preflop: 0.5,
            heads_up: 0.5,
        };
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..50)
                .map(|_| random_spot(&mut rng, &mix))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(9), draw(9));
        assert_ne!(draw(9), draw(10));
    }
}
