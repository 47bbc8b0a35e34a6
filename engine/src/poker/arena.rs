//! Heads-up matches on duplicate deals: each deal (both hands and the board)
//! is played twice with the seats swapped, so card luck cancels and the
//! difference left is skill. Chips are checked to be conserved every hand.
//! The result is A's win rate in big blinds per 100 hands with a 95%
//! confidence interval over deals (normal approximation).

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use super::bots::Player;
use super::cards::Card;
use super::game::{Action, BB, Hand, STACK, Table};
use super::spot::Spot;
use super::trace::Decision;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ArenaResult {
    pub hands: u64,
    pub bb_per_100: f64,
    pub ci95: [f64; 2],
    /// Answers of A and B that were not legal (replaced by check or fold).
    pub illegal: [u64; 2],
    /// A's decisions in deal order, when A keeps them (a
    /// [`super::trace::Traced`] player); empty otherwise.
    #[serde(skip)]
    pub trace: Vec<Decision>,
    /// A's net chips in each duplicate deal, in deal order.
    #[serde(skip)]
    pub per_deal: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArenaError {
    #[error("chips were not conserved in deal {deal}: {detail}")]
    ChipsNotConserved { deal: u64, detail: String },
    #[error("a match needs at least 2 hands (one duplicate deal)")]
    TooFewHands,
    #[error("the match was stopped")]
    Stopped,
}

/// Deals per parallel chunk; each chunk gets players seeded for it. Small
/// enough that a model seat has a batch's worth of chunks asking at once
/// (`stages::model_seats`) in matches of a few hundred hands.
const CHUNK: u64 = 16;

/// Both holes and a board: button's hole, big blind's hole, board.
pub(crate) type Deal = ([Card; 2], [Card; 2], [Card; 5]);

/// The cards of deal `index`.
fn deal_cards(seed: u64, index: u64) -> Deal {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    deal_from(&mut rng)
}

/// A deal from a deck shuffled by `rng`.
pub(crate) fn deal_from(rng: &mut ChaCha8Rng) -> Deal {
    let mut deck: Vec<Card> = Card::all().collect();
    deck.shuffle(rng);
    (
        [deck[0], deck[1]],
        [deck[2], deck[3]],
        [deck[4], deck[5], deck[6], deck[7], deck[8]],
    )
}

/// Play one hand; returns the button's and the big blind's net chips.
pub(crate) fn play_hand(
    button: &mut dyn Player,
    big_blind: &mut dyn Player,
    cards: &Deal,
    deal: u64,
) -> Result<[i64; 2], ArenaError> {
    let mut hand = Hand::new(Table::HeadsUp, &[cards.0, cards.1], cards.2);
    while let Some(spot) = Spot::from_hand(&hand) {
        let seat = hand.to_act.unwrap_or(0);
        let player: &mut dyn Player = if seat == 0 {
            &mut *button
        } else {
            &mut *big_blind
        };
        let action = player.act(&spot);
        if hand.apply(action).is_err() {
            let fallback = if spot.to_call == 0 {
                Action::Check
            } else {
                Action::Fold
            };
            hand.apply(fallback)
                .map_err(|e| ArenaError::ChipsNotConserved {
                    deal,
                    detail: e.to_string(),
                })?;
        }
    }
    let paid = hand.payouts();
    let pot = hand.pot();
    let stacks: u32 = hand.seats.iter().zip(&paid).map(|(s, p)| s.stack + p).sum();
    if paid.iter().sum::<u32>() != pot || stacks != 2 * STACK {
        return Err(ArenaError::ChipsNotConserved {
            deal,
            detail: format!("pot {pot}, paid {paid:?}, stacks after {stacks}"),
        });
    }
    Ok([0, 1].map(|i| i64::from(paid[i]) - i64::from(hand.seats[i].total_in)))
}

/// A's net chips on each of `deals`, playing both seats of every deal.
pub fn play_deals(
    a: &mut dyn Player,
    b: &mut dyn Player,
    deals: std::ops::Range<u64>,
    seed: u64,
) -> Result<Vec<i64>, ArenaError> {
    play_deals_until(a, b, deals, seed, &|| false)
}

/// [`play_deals`], ending with [`ArenaError::Stopped`] once `stop` says so
/// (polled before every deal, so a model player is stopped within a deal).
fn play_deals_until(
    a: &mut dyn Player,
    b: &mut dyn Player,
    deals: std::ops::Range<u64>,
    seed: u64,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<Vec<i64>, ArenaError> {
    let mut out = Vec::with_capacity((deals.end - deals.start) as usize);
    for deal in deals {
        if stop() {
            return Err(ArenaError::Stopped);
        }
        let cards = deal_cards(seed, deal);
        let first = play_hand(a, b, &cards, deal)?;
        let second = play_hand(b, a, &cards, deal)?;
        if first[0] + first[1] != 0 || second[0] + second[1] != 0 {
            return Err(ArenaError::ChipsNotConserved {
                deal,
                detail: "net results do not sum to zero".into(),
            });
        }
        out.push(first[0] + second[1]);
    }
    Ok(out)
}

/// bb/100 and its 95% interval from A's net chips per duplicate deal.
pub fn summarise(per_deal: &[i64], illegal: [u64; 2]) -> ArenaResult {
    let n = per_deal.len() as f64;
    let bb: Vec<f64> = per_deal.iter().map(|&c| c as f64 / f64::from(BB)).collect();
    let mean = bb.iter().sum::<f64>() / n;
    let var = bb.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    // Each deal is two hands: per-hand rate is half the per-deal mean.
    let rate = mean / 2.0 * 100.0;
    let half_width = 1.96 * (var / n).sqrt() / 2.0 * 100.0;
    ArenaResult {
        hands: 2 * per_deal.len() as u64,
        bb_per_100: rate,
        ci95: [rate - half_width, rate + half_width],
        illegal,
        trace: Vec::new(),
        per_deal: per_deal.to_vec(),
    }
}

/// The paired difference of two matches played on the same deals (the
/// same hand count and seed) against the same opponent: `a` minus `c` per
/// duplicate deal, as bb/100 with its 95% interval. Pairing takes out the
/// luck of the cards both saw, so the interval is far narrower than the
/// two matches' own. `None` when the matches did not play the same deals.
pub fn paired_difference(a: &ArenaResult, c: &ArenaResult) -> Option<ArenaResult> {
    if a.per_deal.len() != c.per_deal.len() || a.per_deal.is_empty() {
        return None;
    }
    let diff: Vec<i64> = a
        .per_deal
        .iter()
        .zip(&c.per_deal)
        .map(|(x, y)| x - y)
        .collect();
    Some(summarise(&diff, [a.illegal[0], c.illegal[0]]))
}

/// A match of `hands` hands (rounded up to whole duplicate deals), deals
/// spread over threads in chunks, each with players made by
/// `make(seed_for_chunk)`. Deterministic for a seed on any thread count.
pub fn play_match(
    make_a: &(dyn Fn(u64) -> Box<dyn Player> + Sync),
    make_b: &(dyn Fn(u64) -> Box<dyn Player> + Sync),
    hands: u64,
    seed: u64,
) -> Result<ArenaResult, ArenaError> {
    play_match_until(make_a, make_b, hands, seed, &|| false)
}

/// [`play_match`] that ends with [`ArenaError::Stopped`] soon after `stop`
/// says so (Ctrl-C in a pipeline's eval stage).
pub fn play_match_until(
    make_a: &(dyn Fn(u64) -> Box<dyn Player> + Sync),
    make_b: &(dyn Fn(u64) -> Box<dyn Player> + Sync),
    hands: u64,
    seed: u64,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<ArenaResult, ArenaError> {
    if hands < 2 {
        return Err(ArenaError::TooFewHands);
    }
    let deals = hands.div_ceil(2);
    let chunks: Vec<(Vec<i64>, [u64; 2], Vec<Decision>)> = (0..deals.div_ceil(CHUNK))
        .into_par_iter()
        .map(|chunk| {
            let mut a = make_a(seed.wrapping_mul(1_000_003).wrapping_add(2 * chunk));
            let mut b = make_b(seed.wrapping_mul(1_000_003).wrapping_add(2 * chunk + 1));
            let range = chunk * CHUNK..((chunk + 1) * CHUNK).min(deals);
            let nets = play_deals_until(a.as_mut(), b.as_mut(), range, seed, stop)?;
            Ok((
                nets,
                [a.illegal_answers(), b.illegal_answers()],
                a.take_trace(),
            ))
        })
        .collect::<Result<_, ArenaError>>()?;
    let mut nets = Vec::with_capacity(deals as usize);
    let mut illegal = [0, 0];
    let mut trace = Vec::new();
    for (n, i, t) in chunks {
        nets.extend(n);
        illegal[0] += i[0];
        illegal[1] += i[1];
        trace.extend(t);
    }
    Ok(ArenaResult {
        trace,
        ..summarise(&nets, illegal)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::poker::bots::bot;

    fn make(name: &'static str) -> impl Fn(u64) -> Box<dyn Player> + Sync {
        move |seed| bot(name, seed).unwrap()
    }

    #[test]
    fn paired_difference_is_the_difference_of_the_rates_with_its_own_interval() {
        let b = make("tight-aggressive");
        let a = play_match(&make("random"), &b, 2000, 5).unwrap();
        let c = play_match(&make("calling-station"), &b, 2000, 5).unwrap();
        let d = paired_difference(&a, &c).unwrap();
        assert!((d.bb_per_100 - (a.bb_per_100 - c.bb_per_100)).abs() < 1e-9);
        assert!(d.ci95[0] < d.bb_per_100 && d.bb_per_100 < d.ci95[1]);
        // A player compared with itself on the same deals differs by 0.
        let same = play_match(&make("random"), &b, 2000, 5).unwrap();
        let zero = paired_difference(&a, &same).unwrap();
        assert_eq!((zero.bb_per_100, zero.ci95), (0.0, [0.0, 0.0]));
        let other = play_match(&make("random"), &b, 1000, 5).unwrap();
        assert!(paired_difference(&a, &other).is_none());
    }

    #[test]
    fn a_stop_ends_the_match() {
        let err = play_match_until(&make("random"), &make("random"), 400, 3, &|| true).unwrap_err();
        assert!(matches!(err, ArenaError::Stopped), "{err:?}");
    }

    #[test]
    fn a_player_against_itself_on_duplicate_deals_is_even() {
        // Calling stations are deterministic: swapped seats cancel exactly.
        let result =
            play_match(&make("calling-station"), &make("calling-station"), 400, 3).unwrap();
        assert_eq!(result.hands, 400);
        assert_eq!(result.bb_per_100, 0.0);
    }

    #[test]
    fn matches_are_deterministic_and_random_loses_to_tight_aggressive() {
        let x = play_match(&make("tight-aggressive"), &make("random"), 600, 5).unwrap();
        let y = play_match(&make("tight-aggressive"), &make("random"), 600, 5).unwrap();
        assert_eq!(x, y);
        assert!(x.ci95[0] < x.bb_per_100 && x.bb_per_100 < x.ci95[1]);
        assert!(x.bb_per_100 > 0.0, "{x:?}");
    }
}
