//! The `eval` stage on a tiny random LLaMA and generated poker data: the
//! summary has exactly the documented keys, the card-blind baselines agree
//! with a direct count, and the run is deterministic.

#![allow(clippy::unwrap_used)]

mod stages_ppo_support;

use std::collections::BTreeMap;
use std::path::Path;

use poker_pipe::graph::{Cancel, Outcome, StageKind};
use poker_pipe::stages::eval::{Eval, EvalParams};
use poker_pipe::stages::{CAUSAL_LM, PAIRS_DATASET, PROMPT_SET, REWARD_MODEL};
use stages_ppo_support::{Fixture, context, fixture};

fn run(f: &Fixture, root: &Path) -> serde_json::Value {
    let p: EvalParams = serde_json::from_value(serde_json::json!({
        "model": "sft", "sft": "sft", "reward": "reward",
        "scenarios": "data.test_prompts", "train_prompts": "data.prompts",
        "pairs": "data.test_pairs", "max_new_tokens": 3,
        "arena": {"opponents": ["random", "calling-station"], "hands": 12,
                  "hands_against": {"random": 6}, "seed": 4}
    }))
    .unwrap();
    let inputs = vec![
        ("model", f.sft.clone(), CAUSAL_LM),
        ("sft", f.sft.clone(), CAUSAL_LM),
        ("reward", f.reward.clone(), REWARD_MODEL),
        ("scenarios", f.data.join("test_prompts.jsonl"), PROMPT_SET),
        ("train_prompts", f.data.join("prompts.jsonl"), PROMPT_SET),
        ("pairs", f.data.join("test_pairs.jsonl"), PAIRS_DATASET),
    ];
    let mut ctx = context("eval", root, &inputs, Cancel::new()).unwrap();
    match Eval.run(&p, &mut ctx) {
        Ok(o) => assert_eq!(o, Outcome::Done),
        Err(e) => panic!("{:?}", e.report),
    }
    serde_json::from_str(&std::fs::read_to_string(root.join("out/summary.json")).unwrap()).unwrap()
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn eval_reports_the_documented_keys_and_correct_baselines() {
    let f = fixture().unwrap();
    let s = run(&f, &f.dir.path().join("a"));
    let keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "action_accuracy",
            "arena",
            "by_spot_type",
            "confusion",
            "legal_action_rate",
            "majority_baseline",
            "reward_mean_ppo",
            "reward_mean_ppo_greedy",
            "reward_mean_sft",
            "reward_mean_sft_greedy",
            "rm_pairwise_accuracy",
            "spot_type_baseline"
        ]
    );
    for k in [
        "legal_action_rate",
        "action_accuracy",
        "rm_pairwise_accuracy",
    ] {
        let v = s[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k} {v}");
    }
    // The same model as "sft" and as the evaluated model: same mean reward,
    // sampled (same seeded streams) and greedy.
    assert!(s["reward_mean_ppo"].is_f64(), "{s}");
    assert_eq!(s["reward_mean_sft"], s["reward_mean_ppo"]);
    assert_eq!(s["reward_mean_sft_greedy"], s["reward_mean_ppo_greedy"]);
    for (opp, hands) in [("random", 6), ("calling-station", 12)] {
        let a = &s["arena"][opp];
        assert_eq!(a["hands"], hands);
        let (lo, mid, hi) = (
            a["ci95"][0].as_f64().unwrap(),
            a["bb_per_100"].as_f64().unwrap(),
            a["ci95"][1].as_f64().unwrap(),
        );
        assert!(lo <= mid && mid <= hi, "{a}");
    }

    // Baselines by direct count over the files.
    let train = lines(&f.data.join("prompts.jsonl"));
    let test = lines(&f.data.join("test_prompts.jsonl"));
    // Every held-out spot is counted once per spot type and once in the
    // confusion matrix.
    let spots: u64 = s["by_spot_type"]
        .as_object()
        .unwrap()
        .values()
        .map(|t| t["spots"].as_u64().unwrap())
        .sum();
    let cells: u64 = s["confusion"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|row| row.as_object().unwrap().values())
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(
        (spots, cells),
        (test.len() as u64, test.len() as u64),
        "{s}"
    );
    let most_common = |xs: Vec<&str>| {
        let mut c: BTreeMap<&str, usize> = BTreeMap::new();
        for x in xs {
            *c.entry(x).or_default() += 1;
        }
        let best = c.values().copied().max().unwrap();
        c.into_iter()
            .find(|(_, n)| *n == best)
            .unwrap()
            .0
            .to_string()
    };
    let majority = most_common(train.iter().map(|v| v["best"].as_str().unwrap()).collect());
    let want = test
        .iter()
        .filter(|v| v["best"] == majority.as_str())
        .count() as f64
        / test.len() as f64;
    assert!((s["majority_baseline"].as_f64().unwrap() - want).abs() < 1e-12);
    let mut per_type: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for v in &train {
        per_type
            .entry(v["spot_type"].as_str().unwrap().to_string())
            .or_default()
            .push(v["best"].as_str().unwrap());
    }
    let guess: BTreeMap<String, String> = per_type
        .into_iter()
        .map(|(k, v)| (k, most_common(v)))
        .collect();
    let want = test
        .iter()
        .filter(|v| {
            guess
                .get(v["spot_type"].as_str().unwrap())
                .is_some_and(|g| v["best"] == g.as_str())
        })
        .count() as f64
        / test.len() as f64;
    assert!((s["spot_type_baseline"].as_f64().unwrap() - want).abs() < 1e-12);

    // Deterministic.
    assert_eq!(s, run(&f, &f.dir.path().join("b")));
}
