//! Hashing: a fixed spec has a fixed hash in one build; semantic edits, a
//! device class, changed code or a changed base re-run exactly the stage
//! and its dependents; execution settings, formatting and touching files
//! re-run nothing.

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

fn hashes(sandbox: &Sandbox, extra: &[&str]) -> Vec<String> {
    sandbox.plan("p.yaml", extra).unwrap()["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["hash"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_hash_of_a_fixed_spec_is_the_same_in_any_folder() {
    // The hash includes the code fingerprint of this build, so it is not a
    // constant across builds (that is the point); the format itself is
    // pinned by `graph::hash`'s unit test. Within one build, the same spec
    // and inputs give the same hashes wherever they are.
    let one = setup();
    let two = setup();
    assert_eq!(hashes(&one, &[]), hashes(&two, &[]));
    assert!(hashes(&one, &[]).iter().all(|h| h.len() == 64));
}

#[test]
fn the_device_class_enters_the_hash_and_nothing_else_of_the_device() {
    let sandbox = setup();
    let cpu = hashes(&sandbox, &[]);
    let cuda0 = hashes(&sandbox, &["--device", "cuda:0"]);
    assert_eq!(cuda0, hashes(&sandbox, &["--device", "cuda:1"]));
    assert!(cpu.iter().zip(&cuda0).all(|(a, b)| a != b));
    // Threads, presets (micro-batch, activation checkpointing) stay out.
    let threads = sandbox
        .command(&["plan", "p.yaml", "--format", "json"])
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    let threads: serde_json::Value = serde_json::from_slice(&threads.stdout).unwrap();
    let threads: Vec<&str> = threads["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["hash"].as_str().unwrap())
        .collect();
    assert_eq!(threads, cpu);
    assert_eq!(hashes(&sandbox, &["--preset", "big"]), cpu);
    run_all(&sandbox, "p.yaml", &[]);
    let plan = sandbox.plan("p.yaml", &["--device", "cuda:0"]).unwrap();
    assert_eq!(
        plan["stages"][0]["reasons"][0],
        "device changed (cpu -> cuda)"
    );
}

#[test]
fn changed_code_is_named_as_the_reason() {
    let sandbox = setup();
    run_all(&sandbox, "p.yaml", &[]);
    // As if the last run had been made by other code: its recorded code
    // fingerprint differs and its entry is gone.
    let state_path = sandbox.path().join(".poker-pipe/state/hashing.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    state["stages"]["other"]["code"] = "an older build".into();
    std::fs::write(&state_path, state.to_string()).unwrap();
    let other = hashes(&sandbox, &[])[1].clone();
    std::fs::remove_dir_all(sandbox.path().join(".poker-pipe/cache").join(other)).unwrap();
    let plan = sandbox.plan("p.yaml", &[]).unwrap();
    assert_eq!(plan["stages"][1]["name"], "other");
    assert_eq!(
        plan["stages"][1]["reasons"][0],
        "code of kind text-source changed"
    );
}

#[test]
fn a_local_base_folder_counts_by_content() {
    let sandbox = setup();
    sandbox.write("base/config.json", "{}").unwrap();
    sandbox
        .write("base/model.safetensors", "weights v1")
        .unwrap();
    let yaml = "name: based\nmodel: {base: ./base}\nstages:\n  data: {kind: poker-data, scenarios: 10, pairs: 10, prompts: 10}\n  sft: {kind: sft, data: data.sft}\n";
    sandbox.write("p.yaml", yaml).unwrap();
    let before = hashes(&sandbox, &[]);
    // Touching a file changes nothing; new bytes change the stage on it.
    sandbox
        .write("base/model.safetensors", "weights v1")
        .unwrap();
    assert_eq!(hashes(&sandbox, &[]), before);
    sandbox
        .write("base/model.safetensors", "weights v2")
        .unwrap();
    let after = hashes(&sandbox, &[]);
    assert_eq!(before[0], after[0], "the data stage has no base");
    assert_ne!(before[1], after[1], "sft follows its base");
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
    for extra in [&["--preset", "big"][..], &["--preset", "auto"][..]] {
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
