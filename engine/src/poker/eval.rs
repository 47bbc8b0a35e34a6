//! Hand evaluation: any 5 to 7 cards to one `u32` strength, higher is better.
//!
//! Branch-light bit arithmetic on the four 13-bit suit fields of a
//! [`CardSet`]: no lookup tables to load, so it is fast in a cold process
//! and exact by construction. The value is `category << 26 | primary << 13 |
//! kickers`, where `primary` and `kickers` are rank masks (or a straight's
//! top rank), so comparing two values compares the hands.

use super::cards::CardSet;

/// The nine hand categories, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    HighCard,
    Pair,
    TwoPair,
    Trips,
    Straight,
    Flush,
    FullHouse,
    Quads,
    StraightFlush,
}

impl Category {
    pub fn name(self) -> &'static str {
        match self {
            Category::HighCard => "high card",
            Category::Pair => "pair",
            Category::TwoPair => "two pair",
            Category::Trips => "three of a kind",
            Category::Straight => "straight",
            Category::Flush => "flush",
            Category::FullHouse => "full house",
            Category::Quads => "four of a kind",
            Category::StraightFlush => "straight flush",
        }
    }
}

/// A hand's strength: compare two with `<`/`>`; equal means a split pot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HandValue(pub u32);

impl HandValue {
    pub fn category(self) -> Category {
        match self.0 >> 26 {
            0 => Category::HighCard,
            1 => Category::Pair,
            2 => Category::TwoPair,
            3 => Category::Trips,
            4 => Category::Straight,
            5 => Category::Flush,
            6 => Category::FullHouse,
            7 => Category::Quads,
            _ => Category::StraightFlush,
        }
    }
}

/// Keep only the `n` highest set bits of `mask`.
#[inline]
fn top_bits(mut mask: u32, n: u32) -> u32 {
    while mask.count_ones() > n {
        mask &= mask - 1;
    }
    mask
}

/// The highest set bit of `mask` as a mask.
#[inline]
fn top_bit(mask: u32) -> u32 {
    if mask == 0 {
        0
    } else {
        1 << (31 - mask.leading_zeros())
    }
}

/// The top rank (0..13, a five-high straight is 3) of the best straight in
/// a 13-bit rank mask, if any.
#[inline]
fn straight_top(ranks: u32) -> Option<u32> {
    // Shift in a low ace at bit 0 so the wheel A-2-3-4-5 is a run too.
    let r = (ranks << 1) | (ranks >> 12);
    let runs = r & (r << 1) & (r << 2) & (r << 3) & (r << 4);
    if runs == 0 {
        None
    } else {
        Some(31 - runs.leading_zeros() - 1)
    }
}

#[inline]
fn value(category: Category, primary: u32, kickers: u32) -> HandValue {
    HandValue(((category as u32) << 26) | (primary << 13) | kickers)
}

/// Evaluate the best five-card hand among the cards of `set` (up to 7).
#[inline]
pub fn evaluate(set: CardSet) -> HandValue {
    let c = set.suit_ranks(0);
    let d = set.suit_ranks(1);
    let h = set.suit_ranks(2);
    let s = set.suit_ranks(3);

    let mut flush = 0;
    for suit in [c, d, h, s] {
        if suit.count_ones() >= 5 {
            flush = suit;
        }
    }
    if flush != 0
        && let Some(top) = straight_top(flush)
    {
        return value(Category::StraightFlush, top, 0);
    }

    let any = c | d | h | s;
    let quads = c & d & h & s;
    if quads != 0 {
        return value(Category::Quads, quads, top_bits(any & !quads, 1));
    }
    let two_plus = (c & d) | (c & h) | (c & s) | (d & h) | (d & s) | (h & s);
    let three_plus = (c & d & h) | (c & d & s) | (c & h & s) | (d & h & s);
    if three_plus != 0 {
        let trips = top_bit(three_plus);
        let rest = two_plus & !trips;
        if rest != 0 {
            return value(Category::FullHouse, trips, top_bit(rest));
        }
    }
    if flush != 0 {
        return value(Category::Flush, 0, top_bits(flush, 5));
    }
    if let Some(top) = straight_top(any) {
        return value(Category::Straight, top, 0);
    }
    if three_plus != 0 {
        return value(Category::Trips, three_plus, top_bits(any & !three_plus, 2));
    }
    if two_plus.count_ones() >= 2 {
        let pairs = top_bits(two_plus, 2);
        return value(Category::TwoPair, pairs, top_bits(any & !pairs, 1));
    }
    if two_plus != 0 {
        return value(Category::Pair, two_plus, top_bits(any & !two_plus, 3));
    }
    value(Category::HighCard, 0, top_bits(any, 5))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::poker::cards::{Card, parse_cards};
    use rand::SeedableRng;
    use rand::seq::SliceRandom;

    fn eval(text: &str) -> HandValue {
        evaluate(CardSet::of(&parse_cards(text).unwrap()))
    }

    /// A slow, obviously-correct reference: try every 5-card subset and
    /// score it by sorting rank counts.
    fn reference(cards: &[Card]) -> (u8, Vec<u8>) {
        let mut best = (0u8, Vec::new());
        let n = cards.len();
        for mask in 0u32..(1 << n) {
            if mask.count_ones() != 5 {
                continue;
            }
            let five: Vec<Card> = (0..n)
                .filter(|i| mask >> i & 1 == 1)
                .map(|i| cards[i])
                .collect();
            let score = reference5(&five);
            if score > best {
                best = score;
            }
        }
        best
    }

    fn reference5(five: &[Card]) -> (u8, Vec<u8>) {
        let mut counts = [0u8; 13];
        for card in five {
            counts[card.rank() as usize] += 1;
        }
        // Ranks ordered by (count, rank) descending.
        let mut groups: Vec<(u8, u8)> = (0..13u8)
            .filter(|&r| counts[r as usize] > 0)
            .map(|r| (counts[r as usize], r))
            .collect();
        groups.sort_by(|a, b| b.cmp(a));
        let ranks: Vec<u8> = groups.iter().map(|g| g.1).collect();
        let flush = five.iter().all(|c| c.suit() == five[0].suit());
        let mut sorted: Vec<u8> = five.iter().map(|c| c.rank()).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let straight = if sorted.len() == 5 && sorted[4] - sorted[0] == 4 {
            Some(sorted[4])
        } else if sorted == [0, 1, 2, 3, 12] {
            Some(3)
        } else {
            None
        };
        let shape: Vec<u8> = groups.iter().map(|g| g.0).collect();
        match (straight, flush, shape.as_slice()) {
            (Some(top), true, _) => (8, vec![top]),
            (_, _, [4, 1]) => (7, ranks),
            (_, _, [3, 2]) => (6, ranks),
            (_, true, _) => (5, ranks),
            (Some(top), false, _) => (4, vec![top]),
            (_, _, [3, 1, 1]) => (3, ranks),
            (_, _, [2, 2, 1]) => (2, ranks),
            (_, _, [2, 1, 1, 1]) => (1, ranks),
            _ => (0, ranks),
        }
    }

    #[test]
    fn categories_of_known_hands() {
        assert_eq!(eval("AsKsQsJsTs2c3d").category(), Category::StraightFlush);
        assert_eq!(eval("As2s3s4s5sKdKc").category(), Category::StraightFlush);
        assert_eq!(eval("AsAhAdAc2c3d4h").category(), Category::Quads);
        assert_eq!(eval("AsAhAdKcKh3d4h").category(), Category::FullHouse);
        assert_eq!(eval("AsAhAdKcKhKd4h").category(), Category::FullHouse);
        assert_eq!(eval("2s7s9sJsKs3d4h").category(), Category::Flush);
        assert_eq!(eval("As2d3c4h5s9dTh").category(), Category::Straight);
        assert_eq!(eval("7s7d7c2h4sKdTh").category(), Category::Trips);
        assert_eq!(eval("7s7d2c2h4s4dTh").category(), Category::TwoPair);
        assert_eq!(eval("7s7d2c9h4sJdTh").category(), Category::Pair);
        assert_eq!(eval("7s8d2c9h4sJdKh").category(), Category::HighCard);
        // Wheel loses to a six-high straight; three pair keeps the best kicker.
        assert!(eval("As2d3c4h5s") < eval("6s2d3c4h5s"));
        assert!(eval("7s7d2c2h4s4dTh") < eval("7s7d2c2h4s4dJh"));
    }

    /// Random 7-card hands: the evaluator orders every pair exactly as the
    /// brute-force reference does (fresh seeded hands, exact agreement).
    #[test]
    fn agrees_with_brute_force_on_random_hands() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let mut deck: Vec<Card> = Card::all().collect();
        let mut hands = Vec::new();
        for _ in 0..3000 {
            deck.shuffle(&mut rng);
            let n = 5 + (hands.len() % 3);
            let cards = deck[..n].to_vec();
            hands.push((evaluate(CardSet::of(&cards)), reference(&cards)));
        }
        for pair in hands.windows(2) {
            let (fast_a, ref_a) = &pair[0];
            let (fast_b, ref_b) = &pair[1];
            assert_eq!(
                fast_a.cmp(fast_b),
                ref_a.cmp(ref_b),
                "{ref_a:?} vs {ref_b:?}"
            );
            assert_eq!(fast_a.category() as u8, ref_a.0);
        }
    }
}
