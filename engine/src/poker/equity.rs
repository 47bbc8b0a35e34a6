//! Equity of several players (each a known hand or a range) on a partial
//! board: exact enumeration when the number of outcomes is small enough,
//! seeded Monte Carlo otherwise. Split pots give each winner an equal share.
//!
//! Monte Carlo work is cut into fixed chunks, each with its own ChaCha stream
//! derived from the seed, and summed in chunk order: the result is the same
//! on any number of threads.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use super::cards::{Card, CardSet};
use super::eval::evaluate;

/// One seat in an equity question.
#[derive(Clone, Debug)]
pub enum Holding {
    Hand([Card; 2]),
    /// Every combo equally likely (combos sharing a card with known cards
    /// are dropped).
    Range(Vec<[Card; 2]>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    Exact,
    MonteCarlo,
}

/// Equity per seat, how it was computed, and over how many outcomes.
#[derive(Clone, Debug, Serialize)]
pub struct Equity {
    pub equity: Vec<f64>,
    pub method: Method,
    pub samples: u64,
    /// Standard error per seat (zero when exact).
    #[serde(skip)]
    pub std_error: Vec<f64>,
}

/// Why an equity question cannot be answered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EquityError {
    #[error("equity needs at least two players, got {0}")]
    TooFewPlayers(usize),
    #[error("at most 10 players fit a deck, got {0}")]
    TooManyPlayers(usize),
    #[error("{0} is used twice (in a hand and on the board, or in two hands)")]
    Duplicate(Card),
    #[error("a board has 0, 3, 4 or 5 cards, got {0}")]
    BoardSize(usize),
    #[error("no combo of range {0} fits the known cards")]
    EmptyRange(usize),
    #[error("Monte Carlo needs at least one iteration")]
    NoIterations,
}

/// Outcomes above this many are estimated by Monte Carlo.
pub const DEFAULT_EXACT_LIMIT: u64 = 3_000_000;
const CHUNK: u64 = 4096;

/// Equity of each holding on `board`.
pub fn equity(
    holdings: &[Holding],
    board: &[Card],
    iters: u64,
    seed: u64,
    exact_limit: u64,
) -> Result<Equity, EquityError> {
    if holdings.len() < 2 {
        return Err(EquityError::TooFewPlayers(holdings.len()));
    }
    if holdings.len() > 10 {
        return Err(EquityError::TooManyPlayers(holdings.len()));
    }
    if !matches!(board.len(), 0 | 3 | 4 | 5) {
        return Err(EquityError::BoardSize(board.len()));
    }
    let mut known = CardSet::default();
    for card in board.iter().chain(holdings.iter().flat_map(|h| match h {
        Holding::Hand(cards) => cards.as_slice(),
        Holding::Range(_) => &[],
    })) {
        if known.contains(*card) {
            return Err(EquityError::Duplicate(*card));
        }
        known = known.with(*card);
    }
    let seats: Vec<Vec<[Card; 2]>> = holdings
        .iter()
        .enumerate()
        .map(|(i, h)| match h {
            Holding::Hand(cards) => Ok(vec![*cards]),
            Holding::Range(combos) => {
                let live: Vec<[Card; 2]> = combos
                    .iter()
                    .filter(|c| !known.contains(c[0]) && !known.contains(c[1]))
                    .copied()
                    .collect();
                if live.is_empty() {
                    Err(EquityError::EmptyRange(i))
                } else {
                    Ok(live)
                }
            }
        })
        .collect::<Result<_, _>>()?;
    let board_set = CardSet::of(board);
    let missing = 5 - board.len() as u32;
    let assignments: u64 = seats.iter().map(|s| s.len() as u64).product();
    let free = 52 - 2 * seats.len() as u64 - board.len() as u64;
    let outcomes = assignments.saturating_mul(choose(free, u64::from(missing)));
    if outcomes <= exact_limit {
        Ok(exact(&seats, board_set, missing))
    } else if iters == 0 {
        Err(EquityError::NoIterations)
    } else {
        Ok(monte_carlo(&seats, board_set, missing, iters, seed))
    }
}

fn choose(n: u64, k: u64) -> u64 {
    (0..k).fold(1, |acc, i| acc * (n - i) / (i + 1))
}

/// Add each seat's pot share for one complete deal to `shares`.
#[inline]
fn score(hands: &[CardSet], board: CardSet, shares: &mut [f64]) {
    let mut best = 0;
    let mut winners = 0u32;
    let mut mask = 0u16;
    for (i, hand) in hands.iter().enumerate() {
        let v = evaluate(CardSet(hand.0 | board.0)).0;
        if v > best {
            best = v;
            winners = 1;
            mask = 1 << i;
        } else if v == best {
            winners += 1;
            mask |= 1 << i;
        }
    }
    let share = 1.0 / f64::from(winners);
    for (i, s) in shares.iter_mut().enumerate() {
        if mask >> i & 1 == 1 {
            *s += share;
        }
    }
}

/// Every non-conflicting assignment of combos to seats.
fn assignments(seats: &[Vec<[Card; 2]>], dead: CardSet) -> Vec<Vec<CardSet>> {
    let mut out: Vec<(Vec<CardSet>, CardSet)> = vec![(Vec::new(), dead)];
    for seat in seats {
        let mut next = Vec::new();
        for (hands, used) in &out {
            for combo in seat {
                let set = CardSet::of(combo);
                if set.0 & used.0 == 0 {
                    let mut h = hands.clone();
                    h.push(set);
                    next.push((h, CardSet(used.0 | set.0)));
                }
            }
        }
        out = next;
    }
    out.into_iter().map(|(h, _)| h).collect()
}

fn exact(seats: &[Vec<[Card; 2]>], board: CardSet, missing: u32) -> Equity {
    let n = seats.len();
    let jobs = assignments(seats, board);
    let (shares, count) = jobs
        .par_iter()
        .map(|hands| {
            let used = hands.iter().fold(board.0, |m, h| m | h.0);
            let deck: Vec<u64> = Card::all()
                .map(Card::bit)
                .filter(|b| b & used == 0)
                .collect();
            let mut shares = vec![0.0; n];
            let mut count = 0u64;
            enumerate_boards(&deck, missing as usize, board.0, &mut |full| {
                score(hands, CardSet(full), &mut shares);
                count += 1;
            });
            (shares, count)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .fold((vec![0.0; n], 0u64), |(mut acc, c), (s, k)| {
            for (a, b) in acc.iter_mut().zip(s) {
                *a += b;
            }
            (acc, c + k)
        });
    Equity {
        equity: shares.iter().map(|s| s / count as f64).collect(),
        method: Method::Exact,
        samples: count,
        std_error: vec![0.0; n],
    }
}

/// Call `f` with `base` plus every `k`-subset of `deck` (card bits).
fn enumerate_boards(deck: &[u64], k: usize, base: u64, f: &mut impl FnMut(u64)) {
    if k == 0 {
        f(base);
        return;
    }
    for i in 0..deck.len() {
        enumerate_boards(&deck[i + 1..], k - 1, base | deck[i], f);
    }
}

fn monte_carlo(
    seats: &[Vec<[Card; 2]>],
    board: CardSet,
    missing: u32,
    iters: u64,
    seed: u64,
) -> Equity {
    let n = seats.len();
    let chunks = iters.div_ceil(CHUNK);
    let parts: Vec<(Vec<f64>, Vec<f64>)> = (0..chunks)
        .into_par_iter()
        .map(|chunk| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(chunk);
            let todo = CHUNK.min(iters - chunk * CHUNK);
            let mut sum = vec![0.0; n];
            let mut sum_sq = vec![0.0; n];
            let mut hands = vec![CardSet::default(); n];
            let mut shares = vec![0.0; n];
            for _ in 0..todo {
                let used = loop {
                    let mut used = board.0;
                    let mut ok = true;
                    for (seat, hand) in seats.iter().zip(hands.iter_mut()) {
                        let combo = seat[rng.random_range(0..seat.len())];
                        *hand = CardSet::of(&combo);
                        if hand.0 & used != 0 {
                            ok = false;
                            break;
                        }
                        used |= hand.0;
                    }
                    if ok {
                        break used;
                    }
                };
                let full = deal(&mut rng, used, missing) | board.0;
                shares.iter_mut().for_each(|s| *s = 0.0);
                score(&hands, CardSet(full), &mut shares);
                for i in 0..n {
                    sum[i] += shares[i];
                    sum_sq[i] += shares[i] * shares[i];
                }
            }
            (sum, sum_sq)
        })
        .collect();
    let mut sum = vec![0.0; n];
    let mut sum_sq = vec![0.0; n];
    for (s, q) in parts {
        for i in 0..n {
            sum[i] += s[i];
            sum_sq[i] += q[i];
        }
    }
    let count = iters as f64;
    let equity: Vec<f64> = sum.iter().map(|s| s / count).collect();
    let std_error = (0..n)
        .map(|i| ((sum_sq[i] / count - equity[i] * equity[i]).max(0.0) / count).sqrt())
        .collect();
    Equity {
        equity,
        method: Method::MonteCarlo,
        samples: iters,
        std_error,
    }
}

/// `k` random card bits not in `used`.
#[inline]
pub fn deal(rng: &mut impl Rng, mut used: u64, k: u32) -> u64 {
    let mut out = 0;
    for _ in 0..k {
        loop {
            let bit = Card::from_index(rng.random_range(0..52)).bit();
            if bit & used == 0 {
                used |= bit;
                out |= bit;
                break;
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::poker::cards::{parse_board, parse_hole};

    fn hand(t: &str) -> Holding {
        Holding::Hand(parse_hole(t).unwrap())
    }

    #[test]
    fn river_and_turn_are_exact_and_sum_to_one() {
        let board = parse_board("Ts9s2d3c").unwrap();
        let eq = equity(
            &[hand("AsKs"), hand("TdTc"), hand("9h9c")],
            &board,
            0,
            0,
            DEFAULT_EXACT_LIMIT,
        )
        .unwrap();
        assert_eq!(eq.method, Method::Exact);
        assert_eq!(eq.samples, 42);
        assert!((eq.equity.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // Identical hands on a river split the pot.
        let board = parse_board("Ts9s2dKc5h").unwrap();
        let eq = equity(
            &[hand("AhKh"), hand("AdKd")],
            &board,
            0,
            0,
            DEFAULT_EXACT_LIMIT,
        )
        .unwrap();
        assert_eq!(eq.equity, vec![0.5, 0.5]);
    }

    #[test]
    fn monte_carlo_is_deterministic_and_near_exact() {
        let holdings = [hand("AsKd"), hand("7h7c")];
        let exact = equity(&holdings, &[], 0, 0, DEFAULT_EXACT_LIMIT).unwrap();
        let mc = equity(&holdings, &[], 40_000, 9, 0).unwrap();
        let again = equity(&holdings, &[], 40_000, 9, 0).unwrap();
        assert_eq!(mc.equity, again.equity);
        assert_eq!(mc.method, Method::MonteCarlo);
        assert!((mc.equity[0] - exact.equity[0]).abs() < 4.0 * mc.std_error[0]);
    }

    #[test]
    fn rejects_duplicates_and_empty_ranges() {
        let board = parse_board("AsKd2c").unwrap();
        assert_eq!(
            equity(&[hand("AsQs"), hand("7h7c")], &board, 1, 0, 0).unwrap_err(),
            EquityError::Duplicate(Card::parse("As").unwrap())
        );
        let range = Holding::Range(vec![parse_hole("AsQs").unwrap()]);
        assert_eq!(
            equity(&[hand("QdQc"), range], &board, 1, 0, 0).unwrap_err(),
            EquityError::EmptyRange(1)
        );
    }
}
