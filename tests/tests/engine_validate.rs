//! `validate`: every kind of problem in a file is reported, each at the
//! right place, as miette diagnostics or JSON.

#![allow(clippy::unwrap_used)]

use poker_pipe_tests::{Sandbox, text};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pp-test");

const BAD: &str = r#"name: demo
memory_presets:
  small: {gpu_memory_gib: 24, micro_batch: 3}
preset: smal
stages:
  src: {kind: text-source, text: "hi ", file: missing.txt}
  a: {kind: text-step, input: src, suffix: "!", steps: 0, lr: -1, dropout: 2}
  b: {kind: text-step, input: sr, suffix: "x", stpes: 3, batch_size: eight}
  c: {kind: text-step, input: d.model, suffix: "?", batch_size: 8}
  d: {kind: text-step, input: e, suffix: "?"}
  e: {kind: text-step, input: c, suffix: "?"}
  j: {kind: text-judge, init: src, data: src.text}
  k: {kind: text-stepp}
  f: {kind: text-step, input: srcc, suffix: "x"}
"#;

fn find<'a>(problems: &'a [Value], code: &str) -> &'a Value {
    problems
        .iter()
        .find(|p| p["code"] == code)
        .unwrap_or_else(|| panic!("no {code} in {problems:#?}"))
}

#[test]
fn reports_every_problem_of_a_file() {
    let sandbox = Sandbox::new(BIN).unwrap();
    sandbox.write("bad.yaml", BAD).unwrap();
    let found = sandbox.problems("bad.yaml").unwrap();
    let mut codes: Vec<&str> = found.iter().map(|p| p["code"].as_str().unwrap()).collect();
    codes.sort_unstable();
    codes.dedup();
    for code in [
        "spec::out_of_range",
        "spec::wrong_type",
        "spec::unknown_field",
        "spec::unknown_stage",
        "spec::cycle",
        "spec::unknown_preset",
        "spec::wrong_input_kind",
        "spec::missing_file",
        "spec::batch_not_divisible",
        "spec::unknown_kind",
    ] {
        assert!(codes.contains(&code), "{code} missing from {found:#?}");
    }
    // steps, lr and dropout of stage a are all out of range.
    let ranges = found
        .iter()
        .filter(|p| p["code"] == "spec::out_of_range")
        .count();
    assert_eq!(ranges, 3, "{found:#?}");

    let unknown = find(&found, "spec::unknown_field");
    assert_eq!(
        (unknown["line"].as_u64(), unknown["column"].as_u64()),
        (Some(8), Some(48))
    );
    assert_eq!(unknown["help"], "did you mean `steps`?");
    assert_eq!(
        find(&found, "spec::unknown_stage")["help"],
        "did you mean `src`?"
    );
    // Stage b has schema errors; its reference is checked all the same.
    let unknown_refs: Vec<u64> = found
        .iter()
        .filter(|p| p["code"] == "spec::unknown_stage")
        .map(|p| p["line"].as_u64().unwrap())
        .collect();
    assert_eq!(unknown_refs, [8, 14], "{found:#?}");
    assert_eq!(
        find(&found, "spec::unknown_preset")["help"],
        "did you mean `small`?"
    );
    assert_eq!(
        find(&found, "spec::unknown_kind")["help"],
        "did you mean `text-step`?"
    );
    let cycle = find(&found, "spec::cycle")["message"].as_str().unwrap();
    assert_eq!(cycle, "dependency cycle: c -> d -> e -> c");
    let wrong = find(&found, "spec::wrong_input_kind");
    assert_eq!(wrong["line"], 12);
    assert!(
        wrong["message"].as_str().unwrap().contains("test-model"),
        "{wrong}"
    );
    let batch = find(&found, "spec::batch_not_divisible");
    assert_eq!(
        (batch["line"].as_u64(), batch["column"].as_u64()),
        (Some(9), Some(65))
    );
}

#[test]
fn human_output_labels_the_yaml() {
    let sandbox = Sandbox::new(BIN).unwrap();
    sandbox.write("bad.yaml", BAD).unwrap();
    let out = sandbox.run(&["validate", "bad.yaml"]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown field `stages.b.stpes`"),
        "{stderr}"
    );
    assert!(stderr.contains("bad.yaml:8:48"), "{stderr}");
    assert!(stderr.contains("did you mean `steps`?"), "{stderr}");
}

#[test]
fn yaml_syntax_errors_point_at_the_problem() {
    let sandbox = Sandbox::new(BIN).unwrap();
    sandbox
        .write("syntax.yaml", "name: x\nstages:\n  a: {kind: [1, 2\n")
        .unwrap();
    let found = sandbox.problems("syntax.yaml").unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["code"], "spec::yaml");
    assert_eq!(found[0]["line"], 3);
}

#[test]
fn valid_files_pass_and_bad_ones_fail_together() {
    let sandbox = Sandbox::new(BIN).unwrap();
    sandbox
        .write(
            "good.yaml",
            "name: ok\nstages:\n  src: {kind: text-source, text: hi}\n  a: {kind: text-step, input: src, suffix: '!'}\n",
        )
        .unwrap();
    sandbox.write("bad.yaml", "name: ok\nstages: 3\n").unwrap();
    let out = sandbox.run(&["validate", "good.yaml"]).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = sandbox.run(&["validate", "good.yaml", "bad.yaml"]).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = sandbox.run(&["validate", "nope.yaml"]).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = sandbox.run(&["validate"]).unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn a_top_level_mistake_does_not_hide_preset_problems() {
    let sandbox = Sandbox::new(BIN).unwrap();
    let file = "name: [not, a, name]\nmemory_presets:\n  p: {gpu_memory_gib: 8, micro_batch: 3}\npreset: q\nstages:\n  src: {kind: text-source, text: hi}\n  a: {kind: text-step, input: src, suffix: '!', batch_size: 4}\n";
    sandbox.write("top.yaml", file).unwrap();
    let found = sandbox.problems("top.yaml").unwrap();
    let codes: Vec<&str> = found.iter().map(|p| p["code"].as_str().unwrap()).collect();
    assert_eq!(
        codes,
        [
            "spec::wrong_type",
            "spec::unknown_preset",
            "spec::batch_not_divisible"
        ],
        "{found:#?}"
    );
}
