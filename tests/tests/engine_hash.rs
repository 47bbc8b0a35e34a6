//! Hashing: a fixed spec has a fixed hash; semantic edits re-run exactly the
//! stage and its dependents; execution settings, formatting and touching
//! files re-run nothing.

#![allow(clippy::unwrap_used)]

use poker_pipe_tests::{Sandbox, text};

const BIN: &str = env!("CARGO_BIN_EXE_pp-test");

const PIPELINE: &str = r#"# yaml-language-server: $schema=schema.json
name: hashing
memory_presets:
  small: {gpu_memory_gib: 24, micro_batch: 1, activation_checkpointing: true}
  big: {gpu_memory_gib: 80, micro_batch: 4}
preset: small
stages:
  src: {kind: text-source, text: "hi ", file: data/in.txt}
  other: {kind: text-source, text: "other"}
  a: {kind: text-step, input: src, suffix: "!", steps: 2, batch_size: 8, lr: 0.001}
  b: {kind: text-step, input: a.model, suffix: "?"}
  j: {kind: text-judge, init: b, data: other}
"#;

fn setup() -> Sandbox {
    let sandbox = Sandbox::new(BIN).unwrap();
    sandbox.write("data/in.txt", "hello\n").unwrap();
    sandbox.write("p.yaml", PIPELINE).unwrap();
    sandbox
}

fn run_all(sandbox: &Sandbox, file: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["run", file];
    args.extend_from_slice(extra);
    let out = sandbox.run(&args).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    Sandbox::ran(&out)
}

#[test]
fn the_hash_of_a_fixed_spec_is_a_constant() {
    let sandbox = setup();
    let plan = sandbox.plan("p.yaml", &[]).unwrap();
    let hash = |name: &str| {
        plan["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["hash"].as_str().unwrap().to_string())
            .unwrap()
    };
    // Committed constants: if these change, every user's cache is
    // invalidated. Only change them together with a deliberate format change.
    assert_eq!(
        hash("src"),
        "8867f9228d228fd23578580ece868761fb0c853a26da5bb93b4be73d64c13b60"
    );
    assert_eq!(
        hash("j"),
        "d57cc6bd5d3e3b940fe655a5dc2637e2dcff5c1056ecc2089b89b6c8bc9c02b1"
    );
}

#[test]
fn a_semantic_edit_reruns_the_stage_and_its_dependents_only() {
    let sandbox = setup();
    assert_eq!(
        run_all(&sandbox, "p.yaml", &[]),
        ["src", "other", "a", "b", "j"]
    );
    sandbox
        .write("p.yaml", &PIPELINE.replace("lr: 0.001", "lr: 0.002"))
        .unwrap();
    let plan = sandbox.plan("p.yaml", &[]).unwrap();
    let a = &plan["stages"][2];
    assert_eq!(a["name"], "a");
    assert_eq!(a["reasons"][0], "config field lr changed");
    assert_eq!(plan["stages"][3]["reasons"][0], "upstream stage a changed");
    assert_eq!(run_all(&sandbox, "p.yaml", &[]), ["a", "b", "j"]);
    assert!(sandbox.would_run("p.yaml", &[]).unwrap().is_empty());
}

#[test]
fn execution_settings_rerun_nothing() {
    let sandbox = setup();
    run_all(&sandbox, "p.yaml", &[]);
    for extra in [
        &["--preset", "big"][..],
        &["--preset", "auto"][..],
        &["--device", "cuda:1"][..],
    ] {
        assert!(
            sandbox.would_run("p.yaml", extra).unwrap().is_empty(),
            "{extra:?}"
        );
        assert!(run_all(&sandbox, "p.yaml", extra).is_empty(), "{extra:?}");
    }
    let edited = PIPELINE
        .replace(
            "micro_batch: 1, activation_checkpointing: true",
            "micro_batch: 2",
        )
        .replace("preset: small", "preset: big");
    sandbox.write("p.yaml", &edited).unwrap();
    assert!(run_all(&sandbox, "p.yaml", &[]).is_empty());
}

#[test]
fn formatting_order_and_comments_rerun_nothing() {
    let sandbox = setup();
    run_all(&sandbox, "p.yaml", &[]);
    let reformatted = r#"# yaml-language-server: $schema=schema.json
# A comment that was not there before.
stages:
  j:
    data: other      # reordered keys and stages
    init: b
    kind: text-judge
  b:
    suffix: '?'
    input: a.model
    kind: text-step
  a:
    kind: text-step
    lr: 1.0e-3
    batch_size: 8
    steps: 2
    suffix: "!"
    input: src
  other: {text: other, kind: text-source}
  src:
    file: data/in.txt
    text: 'hi '
    kind: text-source
preset: small
memory_presets:
  big: {micro_batch: 4, gpu_memory_gib: 80}
  small: {gpu_memory_gib: 24, micro_batch: 1, activation_checkpointing: true}
name: hashing
"#;
    sandbox.write("p.yaml", reformatted).unwrap();
    let would = sandbox.would_run("p.yaml", &[]).unwrap();
    assert!(would.is_empty(), "{would:?}");
}

#[test]
fn input_files_count_by_content() {
    let sandbox = setup();
    run_all(&sandbox, "p.yaml", &[]);
    // Same bytes, new mtime: nothing to do.
    std::thread::sleep(std::time::Duration::from_millis(20));
    sandbox.write("data/in.txt", "hello\n").unwrap();
    assert!(sandbox.would_run("p.yaml", &[]).unwrap().is_empty());
    // New bytes: the reader and everything downstream of it.
    sandbox.write("data/in.txt", "hello again\n").unwrap();
    let plan = sandbox.plan("p.yaml", &[]).unwrap();
    let reasons = plan["stages"][0]["reasons"][0].as_str().unwrap();
    assert!(
        reasons.starts_with("input file ") && reasons.ends_with("in.txt changed"),
        "{reasons}"
    );
    assert_eq!(run_all(&sandbox, "p.yaml", &[]), ["src", "a", "b", "j"]);
}

#[test]
fn force_until_and_only_select_stages() {
    let sandbox = setup();
    assert_eq!(run_all(&sandbox, "p.yaml", &["--until", "a"]), ["src", "a"]);
    let out = sandbox.run(&["run", "p.yaml", "--only", "j"]).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(run_all(&sandbox, "p.yaml", &["--only", "b"]), ["b"]);
    assert_eq!(run_all(&sandbox, "p.yaml", &[]), ["other", "j"]);
    assert_eq!(run_all(&sandbox, "p.yaml", &["--force", "a"]), ["a"]);
    assert_eq!(run_all(&sandbox, "p.yaml", &["--force-all"]).len(), 5);
    let out = sandbox.run(&["run", "p.yaml", "--force", "aa"]).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `a`?"));
    let plan = sandbox.plan("p.yaml", &["--force", "b"]).unwrap();
    assert_eq!(plan["stages"][3]["reasons"][0], "forced");
}

#[test]
fn outputs_are_linked_under_runs() {
    let sandbox = setup();
    let out = sandbox.run(&["run", "p.yaml"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let model = std::fs::read_to_string(sandbox.path().join("runs/hashing/b/model.txt")).unwrap();
    assert_eq!(model, "hi hello\n!!?");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("runs/hashing/j"), "{stdout}");
    let log = std::fs::read_to_string(sandbox.path().join("runs/hashing/a/training.log")).unwrap();
    assert!(log.contains("step 2/2"), "{log}");
    assert!(sandbox.path().join(".poker-pipe/CACHEDIR.TAG").is_file());
}

#[test]
fn model_defaults_reach_only_the_stages_that_take_a_model() {
    let sandbox = setup();
    let with_model = PIPELINE.replace(
        "preset: small",
        "preset: small\nmodel: {base: \"hf:org/one\", dtype: bf16}",
    );
    sandbox.write("p.yaml", &with_model).unwrap();
    run_all(&sandbox, "p.yaml", &[]);
    sandbox
        .write("p.yaml", &with_model.replace("org/one", "org/two"))
        .unwrap();
    let plan = sandbox.plan("p.yaml", &[]).unwrap();
    let judge = &plan["stages"][4];
    assert_eq!(judge["name"], "j");
    assert_eq!(judge["reasons"][0], "config field base.base changed");
    assert_eq!(sandbox.would_run("p.yaml", &[]).unwrap(), ["j"]);
    // A stage that names its own model ignores the default.
    let own = with_model.replace(
        "data: other}",
        "data: other, base: {base: \"hf:org/mine\"}}",
    );
    sandbox.write("p.yaml", &own).unwrap();
    let before = sandbox.plan("p.yaml", &[]).unwrap()["stages"][4]["hash"].clone();
    sandbox
        .write("p.yaml", &own.replace("org/one", "org/two"))
        .unwrap();
    let after = sandbox.plan("p.yaml", &[]).unwrap()["stages"][4]["hash"].clone();
    assert_eq!(before, after);
}

#[test]
fn an_unknown_preset_on_the_command_line_is_a_user_error() {
    let sandbox = setup();
    let out = sandbox
        .run(&["plan", "p.yaml", "--preset", "bigg"])
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `big`?"));
    let out = sandbox.run(&["run", "p.yaml", "--device", "tpu"]).unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
