//! Seven-card evaluator throughput, ours beside rs_poker (the most used
//! crates.io hold'em evaluator we could build here), on the same random
//! hands in the same run. Prints one JSON object.
//!
//! `cargo bench -p poker-pipe --bench poker_eval`

use std::hint::black_box;
use std::time::Instant;

use poker_pipe::poker::cards::{Card, CardSet};
use poker_pipe::poker::eval::evaluate;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rs_poker::core::{Card as RsCard, Rankable, Suit, Value};

const HANDS: usize = 200_000;
const PASSES: usize = 10;

fn main() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut deck: Vec<Card> = Card::all().collect();
    let hands: Vec<Vec<Card>> = (0..HANDS)
        .map(|_| {
            deck.shuffle(&mut rng);
            deck[..7].to_vec()
        })
        .collect();
    let ours: Vec<CardSet> = hands.iter().map(|h| CardSet::of(h)).collect();
    let theirs: Vec<Vec<RsCard>> = hands
        .iter()
        .map(|h| {
            h.iter()
                .map(|c| RsCard::new(Value::from_u8(c.rank()), Suit::from_u8(c.suit())))
                .collect()
        })
        .collect();

    // Both must order hands the same way, or the comparison is meaningless.
    let disagreements = (1..HANDS)
        .filter(|&i| {
            let a = evaluate(ours[i - 1]).cmp(&evaluate(ours[i]));
            let b = theirs[i - 1].rank().cmp(&theirs[i].rank());
            a != b
        })
        .count();

    let start = Instant::now();
    let mut sum = 0u64;
    for _ in 0..PASSES {
        for &hand in &ours {
            sum = sum.wrapping_add(u64::from(evaluate(black_box(hand)).0));
        }
    }
    let ours_s = start.elapsed().as_secs_f64();

    // Count hands better than the first one so the work cannot be skipped.
    let reference = theirs[0].rank();
    let start = Instant::now();
    let mut count = 0u64;
    for _ in 0..PASSES {
        for hand in &theirs {
            count += u64::from(black_box(hand.as_slice()).rank() > reference);
        }
    }
    let theirs_s = start.elapsed().as_secs_f64();

    let evals = (HANDS * PASSES) as f64;
    println!(
        "{}",
        serde_json::json!({
            "bench": "poker-eval-compare",
            "hands": HANDS, "passes": PASSES, "threads": 1,
            "poker_pipe_evals_per_second": evals / ours_s,
            "rs_poker_evals_per_second": evals / theirs_s,
            "speedup": theirs_s / ours_s,
            "order_disagreements": disagreements,
            "checksums": [sum, count],
        })
    );
}
