//! Batched play: a model answers the decisions waiting at the table
//! together, and that changes nothing but the speed. Greedy answers in a
//! batch equal the answers one at a time (prompts of different lengths,
//! so the batch is left-padded), and an arena match gives the same result
//! at `--batch 1` and `--batch 16`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use poker_pipe::backend::Cpu;
use poker_pipe::stages::lm_answerer::LmAnswerer;
use poker_pipe_tests::{Sandbox, text};

const BIN: &str = env!("CARGO_BIN_EXE_pp-test");

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/llama/mha")
}

/// Words of the toy base's vocabulary (others are `<unk>`).
const WORDS: [&str; 16] = [
    "fold", "check", "call", "raise", "all", "in", "pot", "flop", "turn", "river", "ace", "king",
    "you", "have", "the", "board",
];

#[test]
fn a_batch_answers_as_each_prompt_alone() {
    let lm = LmAnswerer::load(&Cpu, &golden(), 6, true).unwrap();
    // Lengths 1..=23 and mixed words, from a small LCG.
    let mut state = 11u64;
    let mut next = |n: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize % n
    };
    let prompts: Vec<String> = (0..37)
        .map(|_| {
            let n = 1 + next(23);
            (0..n)
                .map(|_| WORDS[next(WORDS.len())])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let alone: Vec<String> = prompts.iter().map(|p| lm.answer(p)).collect();
    assert_eq!(lm.answer_batch(&prompts), alone);
    let distinct: std::collections::BTreeSet<&String> = alone.iter().collect();
    assert!(distinct.len() > 3, "too few distinct answers: {distinct:?}");
}

#[test]
fn an_arena_match_does_not_depend_on_the_batch() {
    let sandbox = Sandbox::new(BIN).unwrap();
    let spec = format!("model:{}", golden().display());
    let play = |batch: &str| {
        let out = sandbox
            .run(&[
                "arena",
                "--a",
                &spec,
                "--b",
                "random",
                "--hands",
                "24",
                "--max-new-tokens",
                "3",
                "--format",
                "json",
                "--batch",
                batch,
            ])
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let one = play("1");
    assert_eq!(one["hands"], 24);
    assert_eq!(one, play("16"));
}

/// `arena --compare C` plays C against B on A's deals: its own result is
/// the plain match's, and the paired difference is A's rate minus C's with
/// an interval around it. A model against a bot, in both orders.
#[test]
fn compare_plays_the_same_deals_and_reports_the_paired_difference() {
    let sandbox = Sandbox::new(BIN).unwrap();
    let spec = format!("model:{}", golden().display());
    let play = |a: &str, compare: Option<&str>| {
        let mut args = vec![
            "arena",
            "--a",
            a,
            "--b",
            "random",
            "--hands",
            "24",
            "--max-new-tokens",
            "3",
            "--format",
            "json",
        ];
        if let Some(c) = compare {
            args.extend(["--compare", c]);
        }
        let out = sandbox.run(&args).unwrap();
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let both = play(&spec, Some("calling-station"));
    let (model, station) = (play(&spec, None), play("calling-station", None));
    let rate = |v: &serde_json::Value| v["bb_per_100"].as_f64().unwrap();
    assert_eq!(rate(&both), rate(&model));
    assert_eq!(rate(&both["compare"]), rate(&station));
    let d = &both["difference"];
    assert!(
        (rate(d) - (rate(&model) - rate(&station))).abs() < 1e-9,
        "{both}"
    );
    let ci = d["ci95"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() <= rate(d) && rate(d) <= ci[1].as_f64().unwrap());
    let flipped = play("calling-station", Some(&spec));
    assert!(
        (rate(&flipped["difference"]) + rate(d)).abs() < 1e-9,
        "{flipped}"
    );
}
