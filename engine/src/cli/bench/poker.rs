//! Poker benchmarks: evaluator speed, labelled-data throughput and label
//! stability across Monte Carlo seeds. Each prints one JSON object.

use std::time::Instant;

use miette::miette;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::error::{CmdResult, Exit, Failure};
use crate::poker::cards::{Card, CardSet};
use crate::poker::dataset::{PokerDataParams, generate, never};
use crate::poker::eval::evaluate;
use crate::poker::expert::Expert;
use crate::poker::scenario::{SpotMix, indexed_spot};

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Random 7-card hands to evaluate (each evaluated once per pass).
    #[arg(long, default_value_t = 1_000_000)]
    pub hands: usize,
    /// Passes over the hands.
    #[arg(long, default_value_t = 20)]
    pub passes: usize,
}

#[derive(Debug, clap::Args)]
pub struct DataArgs {
    /// SFT examples; pairs default to the same count.
    #[arg(long, default_value_t = 50_000)]
    pub scenarios: u64,
    #[arg(long)]
    pub pairs: Option<u64>,
    #[arg(long, default_value_t = 1)]
    pub prompts: u64,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Keep the files in this directory (default: a temporary one).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct StabilityArgs {
    /// Spots to label twice.
    #[arg(long, default_value_t = 5000)]
    pub spots: u64,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Share of preflop spots (postflop spots are where seeds matter).
    #[arg(long, default_value_t = 0.4)]
    pub preflop_fraction: f64,
}

/// Seven-card evaluations per second of our evaluator on random hands.
pub fn evaluator(args: EvalArgs) -> CmdResult {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut deck: Vec<Card> = Card::all().collect();
    let hands: Vec<CardSet> = (0..args.hands)
        .map(|_| {
            deck.shuffle(&mut rng);
            CardSet::of(&deck[..7])
        })
        .collect();
    let start = Instant::now();
    let mut checksum = 0u64;
    for _ in 0..args.passes {
        for &hand in &hands {
            checksum = checksum.wrapping_add(u64::from(evaluate(std::hint::black_box(hand)).0));
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let evals = (args.hands * args.passes) as f64;
    println!(
        "{}",
        json!({"bench": "poker-eval", "evaluator": "poker-pipe", "evals": evals, "seconds": seconds,
               "evals_per_second": evals / seconds, "threads": 1, "checksum": checksum})
    );
    Ok(Exit::Ok)
}

/// Wall time to generate and label a data set with `poker::dataset`.
pub fn data(args: DataArgs) -> CmdResult {
    let temp = tempfile::tempdir()
        .map_err(|e| Failure::runtime(miette!("cannot make a temp dir: {e}")))?;
    let dir = match &args.out {
        Some(out) => {
            std::fs::create_dir_all(out)
                .map_err(|e| Failure::runtime(miette!("cannot create {}: {e}", out.display())))?;
            out.clone()
        }
        None => temp.path().to_path_buf(),
    };
    let params = PokerDataParams {
        scenarios: args.scenarios,
        pairs: args.pairs.unwrap_or(args.scenarios),
        prompts: args.prompts,
        seed: args.seed,
        ..PokerDataParams::default()
    };
    let start = Instant::now();
    let summary = generate(&params, &dir, |_, _| {}, &never).map_err(Failure::runtime)?;
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"bench": "poker-data", "scenarios": params.scenarios, "pairs": params.pairs,
               "prompts": params.prompts, "seconds": seconds, "threads": rayon::current_num_threads(),
               "summary": summary})
    );
    Ok(Exit::Ok)
}

/// Share of spots whose best action is the same under two expert seeds.
pub fn stability(args: StabilityArgs) -> CmdResult {
    let mix = SpotMix {
        preflop: args.preflop_fraction,
        heads_up: 0.3,
    };
    let (a, b) = (Expert::new(args.seed), Expert::new(args.seed + 1_000_003));
    let start = Instant::now();
    let results: Vec<(bool, String)> = {
        use rayon::prelude::*;
        (0..args.spots)
            .into_par_iter()
            .map(|i| {
                let (spot, _) = indexed_spot(args.seed, i, &mix);
                let same = a.judge(&spot).best_action() == b.judge(&spot).best_action();
                (same, spot.street.name().to_string())
            })
            .collect()
    };
    let mut by_street = std::collections::BTreeMap::<String, (u64, u64)>::new();
    for (same, street) in &results {
        let entry = by_street.entry(street.clone()).or_default();
        entry.0 += u64::from(*same);
        entry.1 += 1;
    }
    let agree = results.iter().filter(|r| r.0).count() as f64 / results.len().max(1) as f64;
    let streets: serde_json::Map<String, serde_json::Value> = by_street
        .into_iter()
        .map(|(k, (s, n))| (k, json!(s as f64 / n as f64)))
        .collect();
    println!(
        "{}",
        json!({"bench": "poker-label-stability", "spots": args.spots, "agreement": agree,
               "by_street": streets, "seconds": start.elapsed().as_secs_f64()})
    );
    Ok(Exit::Ok)
}
