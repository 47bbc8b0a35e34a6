//! The `poker-data` stage kind end to end: a pipeline run writes the six
//! dataset files with the counts asked for, a second run reuses the cache,
//! and out-of-range parameters are caught by `validate` before anything runs.

#![allow(clippy::unwrap_used)]

use poker_pipe_tests::{Sandbox, text};

const BIN: &str = env!("CARGO_BIN_EXE_pp-test");

fn pipeline(seed: u64, test_fraction: f64) -> String {
    format!(
        "name: data\n\
         stages:\n  \
           data:\n    \
             kind: poker-data\n    \
             scenarios: 60\n    \
             pairs: 40\n    \
             prompts: 20\n    \
             style: compact\n    \
             seed: {seed}\n    \
             test_fraction: {test_fraction}\n"
    )
}

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn writes_every_dataset_and_reuses_the_cache() {
    let sb = Sandbox::new(BIN).unwrap();
    sb.write("p.yaml", &pipeline(3, 0.25)).unwrap();
    let out = sb.run(&["run", "p.yaml"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(Sandbox::ran(&out), vec!["data".to_string()]);

    let dir = sb.path().join("runs/data/data");
    for (file, count, keys) in [
        ("sft.jsonl", 45, &["prompt", "response"][..]),
        ("test_sft.jsonl", 15, &["prompt", "response"][..]),
        ("pairs.jsonl", 30, &["prompt", "chosen", "rejected"][..]),
        (
            "test_pairs.jsonl",
            10,
            &["prompt", "chosen", "rejected"][..],
        ),
        ("prompts.jsonl", 15, &["prompt"][..]),
        ("test_prompts.jsonl", 5, &["prompt"][..]),
    ] {
        let records = lines(&dir.join(file));
        assert_eq!(records.len(), count, "{file}");
        for record in &records {
            for key in keys {
                let value = record[key].as_str().unwrap_or_default();
                assert!(!value.is_empty(), "{file}: empty {key} in {record}");
            }
        }
    }
    for pair in lines(&dir.join("pairs.jsonl")) {
        assert_ne!(pair["chosen"], pair["rejected"]);
    }
    assert!(dir.join("summary.json").is_file());

    let again = sb.run(&["run", "p.yaml"]).unwrap();
    assert!(again.status.success(), "{}", text(&again));
    assert!(Sandbox::ran(&again).is_empty(), "{}", text(&again));

    sb.write("p.yaml", &pipeline(4, 0.25)).unwrap();
    let reseeded = sb.run(&["run", "p.yaml"]).unwrap();
    assert_eq!(Sandbox::ran(&reseeded), vec!["data".to_string()]);
}

#[test]
fn out_of_range_parameters_fail_validation() {
    let sb = Sandbox::new(BIN).unwrap();
    sb.write("p.yaml", &pipeline(3, 0.95)).unwrap();
    let out = sb.run(&["validate", "p.yaml", "--format", "json"]).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let problems: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = problems.as_array().unwrap();
    assert!(
        problems.iter().any(
            |p| p["message"].as_str().unwrap_or_default().contains("0.95")
                || p["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("test_fraction")
        ),
        "{problems:?}"
    );
    assert!(!sb.path().join("runs").exists());
}
