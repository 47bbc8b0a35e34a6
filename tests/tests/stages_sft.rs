//! The tokenizer, sft and reward stages through the real CLI: a tiny
//! random-init LLaMA learns a toy answer format; SIGKILL mid-training and a
//! re-run end with the same weights as an uninterrupted run; a diverging
//! learning rate stops the stage with an error naming the step.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use poker_pipe_tests::{Sandbox, signal, text, wait_for, write_toy_data};

const BIN: &str = env!("CARGO_BIN_EXE_pp-test");

fn pipeline(lr: &str) -> String {
    format!(
        r#"name: sfttest
stages:
  data: {{kind: jsonl-data, sft: sft.jsonl, pairs: pairs.jsonl}}
  tokenizer: {{kind: tokenizer, data: [data.sft, data.pairs], vocab_size: 300}}
  sft:
    kind: sft
    data: data.sft
    tokenizer: tokenizer
    base: {{random: {{hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4}}}}
    method: full
    optim: {{lr: {lr}, warmup_steps: 2}}
    batch_size: 8
    epochs: 4
    max_seq_len: 32
    seed: 3
    checkpoint_every: 3
  reward:
    kind: reward
    init: sft
    data: data.pairs
    test_data: data.pairs
    optim: {{lr: 1.0e-3}}
    batch_size: 8
    max_seq_len: 32
"#
    )
}

fn setup(lr: &str) -> Sandbox {
    let sandbox = Sandbox::new(BIN).unwrap();
    write_toy_data(&sandbox).unwrap();
    sandbox.write("p.yaml", &pipeline(lr)).unwrap();
    sandbox
}

fn stage_hash(sandbox: &Sandbox, stage: &str) -> String {
    let plan = sandbox.plan("p.yaml", &[]).unwrap();
    plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == stage)
        .map(|s| s["hash"].as_str().unwrap().to_string())
        .unwrap()
}

fn read_json(path: std::path::PathBuf) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn sigkill_then_resume_matches_an_uninterrupted_run_and_reward_trains() {
    let reference = setup("3.0e-3");
    let out = reference.run(&["run", "p.yaml"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let ref_dir = reference.path().join("runs/sfttest/sft");
    let ref_weights = std::fs::read(ref_dir.join("model.safetensors")).unwrap();
    let summary = read_json(ref_dir.join("summary.json"));
    assert_eq!(summary["steps"], 48);
    // The loss fell: the toy answers are learnable.
    let metrics = std::fs::read_to_string(ref_dir.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(losses.len(), 48);
    assert!(losses[47] < losses[0] * 0.5, "{losses:?}");
    for f in ["config.json", "tokenizer.json", "training.log"] {
        assert!(ref_dir.join(f).exists(), "{f}");
    }

    // The reward model: a classifier config, a score head, held-out numbers.
    let rm = reference.path().join("runs/sfttest/reward");
    let cfg = read_json(rm.join("config.json"));
    assert_eq!(cfg["architectures"][0], "LlamaForSequenceClassification");
    let rs = read_json(rm.join("summary.json"));
    let acc = rs["pairwise_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{rs}");
    assert!(
        rs["mean_chosen"].is_number() && rs["mean_rejected"].is_number(),
        "{rs}"
    );

    // Kill a second run mid-SFT, after a checkpoint exists.
    let sandbox = setup("3.0e-3");
    let hash = stage_hash(&sandbox, "sft");
    let mut child = sandbox.spawn(&["run", "p.yaml"], &[]).unwrap();
    let checkpoint = sandbox
        .path()
        .join(".poker-pipe/work")
        .join(&hash)
        .join("checkpoint.safetensors");
    assert!(wait_for(&checkpoint, 120), "no checkpoint was written");
    std::thread::sleep(Duration::from_millis(100));
    signal(&child, "KILL").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), None, "killed by a signal");
    let entry = sandbox.path().join(".poker-pipe/cache").join(&hash);
    assert!(
        !entry.exists(),
        "the stage finished before it could be killed"
    );

    let out = sandbox.run(&["run", "p.yaml"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let dir = sandbox.path().join("runs/sfttest/sft");
    let log = std::fs::read_to_string(dir.join("training.log")).unwrap();
    assert!(
        log.contains("resuming from the checkpoint of step"),
        "{log}"
    );
    let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
    assert!(
        weights == ref_weights,
        "resumed weights differ from the uninterrupted run"
    );
    let resumed_metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(resumed_metrics, metrics);
}

#[test]
fn a_diverging_learning_rate_stops_with_the_step_and_advice() {
    let sandbox = setup("1.0e+30");
    let out = sandbox.run(&["run", "p.yaml"]).unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at step"), "{stderr}");
    assert!(stderr.contains("lower the learning rate"), "{stderr}");
    assert!(
        !sandbox.path().join("runs/sfttest/sft").exists(),
        "a diverged stage has no output"
    );
}

#[test]
fn ctrl_c_checkpoints_exits_130_and_the_next_run_finishes() {
    let sandbox = setup("3.0e-3");
    let hash = stage_hash(&sandbox, "sft");
    let child = sandbox.spawn(&["run", "p.yaml"], &[]).unwrap();
    let checkpoint = sandbox
        .path()
        .join(".poker-pipe/work")
        .join(&hash)
        .join("checkpoint.safetensors");
    assert!(wait_for(&checkpoint, 120), "no checkpoint was written");
    signal(&child, "INT").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    let out = sandbox.run(&["run", "p.yaml"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let log =
        std::fs::read_to_string(sandbox.path().join("runs/sfttest/sft/training.log")).unwrap();
    assert!(log.contains("interrupted after step"), "{log}");
    assert!(
        log.contains("resuming from the checkpoint of step"),
        "{log}"
    );
    let summary = read_json(sandbox.path().join("runs/sfttest/sft/summary.json"));
    assert_eq!(summary["steps"], 48);
}

/// Execution settings stay out of the stage hash because they do not change
/// results: the same sft and reward stages without activation
/// checkpointing, on another number of threads, or in micro-batches of 2
/// or 8 (the whole batch), end with the same bytes, in f32 and in bf16.
#[test]
fn threads_checkpointing_and_micro_batches_give_bit_identical_weights() {
    let presets = "memory_presets:\n  one: {gpu_memory_gib: 24, micro_batch: 1, activation_checkpointing: true}\n  one_plain: {gpu_memory_gib: 40, micro_batch: 1}\n  two: {gpu_memory_gib: 48, micro_batch: 2}\n  eight: {gpu_memory_gib: 80, micro_batch: 8}\nstages:";
    let weights = |dtype: &str, preset: &str, threads: &str| {
        let sandbox = Sandbox::new(BIN).unwrap();
        write_toy_data(&sandbox).unwrap();
        let yaml = pipeline("1.0e-3")
            .replacen("stages:", presets, 1)
            .replace("    kind: sft\n", &format!("    kind: sft\n{dtype}"))
            .replace("    kind: reward\n", &format!("    kind: reward\n{dtype}"));
        sandbox.write("p.yaml", &yaml).unwrap();
        let out = sandbox
            .command(&["run", "p.yaml", "--preset", preset])
            .env("RAYON_NUM_THREADS", threads)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let read =
            |file: &str| std::fs::read(sandbox.path().join("runs/sfttest").join(file)).unwrap();
        (
            read("sft/model.safetensors"),
            read("reward/model.safetensors"),
        )
    };
    let reference = weights("", "one", "1");
    for (preset, threads, label) in [
        ("one", "2", "preset one, 2 threads"),
        ("one_plain", "1", "no checkpointing"),
        ("two", "2", "micro-batches of 2"),
        ("eight", "2", "micro-batches of 8"),
    ] {
        let (sft, reward) = weights("", preset, threads);
        assert!(sft == reference.0, "sft: {label}");
        assert!(reward == reference.1, "reward: {label}");
    }
    let bf16 = "    dtype: bf16\n";
    let reference16 = weights(bf16, "one", "1");
    assert!(reference16.0 != reference.0, "the bf16 run trained in bf16");
    let (sft, reward) = weights(bf16, "eight", "2");
    assert!(sft == reference16.0, "sft in bf16: micro-batches of 8");
    assert!(
        reward == reference16.1,
        "reward in bf16: micro-batches of 8"
    );
}
