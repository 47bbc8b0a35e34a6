//! The `ppo` stage on a tiny random LLaMA: it trains and writes loadable
//! actor and EMA folders with their records; interrupted after any
//! checkpoint and run again, it ends with byte-identical outputs.

#![allow(clippy::unwrap_used)]

mod stages_ppo_support;

use std::path::Path;

use poker_pipe::backend::Cpu;
use poker_pipe::graph::{Cancel, Outcome, StageKind};
use poker_pipe::model::batch::Batch;
use poker_pipe::model::load::load_dir;
use poker_pipe::model::lora;
use poker_pipe::stages::ppo::{Ppo, PpoParams};
use stages_ppo_support::{Fixture, context, fixture, ppo_inputs, ppo_inputs_at};

fn params(extra: serde_json::Value) -> PpoParams {
    let mut base = serde_json::json!({
        "actor": "sft", "critic": "reward", "prompts": "data.prompts",
        "actor_lr": 1e-3, "critic_lr": 1e-3, "batch_size": 6, "epochs": 1,
        "max_new_tokens": 3, "ema": 0.9, "ev_weight": 0.5, "ppo_epochs": 2, "seed": 9
    });
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    serde_json::from_value(base).unwrap()
}

fn run(f: &Fixture, root: &Path, p: &PpoParams, cancel: Cancel) -> Outcome {
    let mut ctx = context("rlhf", root, &ppo_inputs(f), cancel).unwrap();
    match Ppo.run(p, &mut ctx) {
        Ok(outcome) => outcome,
        Err(e) => panic!("{:?}", e.report),
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn ppo_trains_and_writes_loadable_actor_and_ema() {
    let f = fixture().unwrap();
    let root = f.dir.path().join("run");
    let p = params(serde_json::json!({}));
    assert_eq!(run(&f, &root, &p, Cancel::new()), Outcome::Done);
    let out = root.join("out");
    // 18 training prompts in batches of 6.
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 3, "{metrics}");
    for line in metrics.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in ["reward", "kl", "entropy", "clip_fraction", "value_loss"] {
            assert!(
                v[key].as_f64().is_some_and(f64::is_finite),
                "{key} in {line}"
            );
        }
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 3);
    assert!(summary["reward_mean_first"].is_number());
    let be = Cpu;
    let actor = load_dir(&be, &out.join("actor")).unwrap();
    let ema = load_dir(&be, &out.join("actor_ema")).unwrap();
    assert!(actor.adapter.is_some() && ema.adapter.is_some());
    // The actor moved away from the SFT adapter, the EMA less far.
    let adapter = |d: &Path| {
        poker_pipe::model::weights::load_file(&d.join("adapter_model.safetensors")).unwrap()
    };
    let (a, e, s) = (
        adapter(&out.join("actor")),
        adapter(&out.join("actor_ema")),
        adapter(&f.sft),
    );
    let dist = |x: &poker_pipe::model::weights::TensorMap| -> f64 {
        x.iter()
            .map(|(k, t)| {
                t.data
                    .iter()
                    .zip(&s[k].data)
                    .map(|(p, q)| f64::from(p - q).powi(2))
                    .sum::<f64>()
            })
            .sum::<f64>()
            .sqrt()
    };
    assert!(dist(&a) > 0.0);
    assert!(
        dist(&e) > 0.0 && dist(&e) < dist(&a),
        "{} {}",
        dist(&e),
        dist(&a)
    );
}

#[test]
fn interrupted_ppo_resumes_to_identical_outputs() {
    let f = fixture().unwrap();
    let p = params(serde_json::json!({"batch_size": 4, "checkpoint_every": 2}));
    let whole = f.dir.path().join("whole");
    assert_eq!(run(&f, &whole, &p, Cancel::new()), Outcome::Done);

    // Stop as soon as the first checkpoint is on disk (step 2); Ctrl-C
    // saves the step it stops after, then run again in the same work
    // folder.
    let parts = f.dir.path().join("parts");
    let cancel = Cancel::new();
    let watcher = {
        let cancel = cancel.clone();
        let ckpt = parts.join("work").join("checkpoint.safetensors");
        std::thread::spawn(move || {
            while !ckpt.exists() {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            cancel.cancel();
        })
    };
    assert_eq!(run(&f, &parts, &p, cancel), Outcome::Interrupted);
    watcher.join().unwrap();
    let _ = std::fs::remove_dir_all(parts.join("out"));
    assert_eq!(run(&f, &parts, &p, Cancel::new()), Outcome::Done);

    for file in [
        "actor/adapter_model.safetensors",
        "actor_ema/adapter_model.safetensors",
        "metrics.jsonl",
        "summary.json",
    ] {
        assert!(
            read(&whole.join("out").join(file)) == read(&parts.join("out").join(file)),
            "{file} differs after resume"
        );
    }
    let log = std::fs::read_to_string(parts.join("work").join("training.log")).unwrap();
    assert!(
        log.contains("resuming from the checkpoint of step"),
        "{log}"
    );
}

#[test]
fn a_diverging_run_names_the_step_and_keeps_the_last_checkpoint() {
    let f = fixture().unwrap();
    let root = f.dir.path().join("nan");
    // An infinite learning rate turns the adapter weights into NaN at the
    // first update; the next step's loss is then not finite.
    let p = params(
        serde_json::json!({"actor_lr": 1e30, "critic_lr": 1e30, "batch_size": 6, "max_grad_norm": 1e30, "ppo_epochs": 1, "checkpoint_every": 1}),
    );
    let mut ctx = context("rlhf", &root, &ppo_inputs(&f), Cancel::new()).unwrap();
    let err = match Ppo.run(&p, &mut ctx) {
        Ok(o) => panic!("diverging run ended with {o:?}"),
        Err(e) => e,
    };
    let text = format!("{:?}", err.report);
    assert!(text.contains("at step"), "{text}");
    assert!(text.to_lowercase().contains("learning rate"), "{text}");
    assert!(root.join("work").join("checkpoint.safetensors").exists());
}

/// The exact expected reward-model score of one-token answers to the
/// training prompts, averaged over prompts: for each prompt, the sum over
/// the vocabulary of p(token | prompt) (temperature 1, as roll-outs
/// sample) times the reward model's score of prompt + token. No sampling,
/// so a comparison of two policies is free of noise.
fn expected_reward(policy: &Path, f: &Fixture) -> f64 {
    let be = Cpu;
    let mut lm = load_dir(&be, policy).unwrap();
    lora::set_merged(&be, &mut lm.model, true);
    let mut rm = load_dir(&be, &f.reward).unwrap();
    lora::set_merged(&be, &mut rm.model, true);
    let vocab = lm.model.cfg.vocab_size;
    let text = std::fs::read_to_string(f.data.join("prompts.jsonl")).unwrap();
    let mut total = 0.0;
    let mut n = 0;
    for line in text.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let prompt = lm
            .tokenizer
            .encode(record["prompt"].as_str().unwrap(), true)
            .unwrap();
        let logits = lm
            .model
            .logits(&be, &Batch::left_padded(std::slice::from_ref(&prompt), 1));
        let last = &logits[(prompt.len() - 1) * vocab..prompt.len() * vocab];
        let top = last.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f64> = last.iter().map(|&l| f64::from(l - top).exp()).collect();
        let z: f64 = weights.iter().sum();
        let answers: Vec<Vec<u32>> = (0..vocab as u32)
            .map(|t| [prompt.as_slice(), &[t]].concat())
            .collect();
        let scores = rm
            .model
            .scores(&be, &Batch::left_padded(&answers, 1))
            .unwrap();
        total += weights
            .iter()
            .zip(&scores)
            .map(|(w, &r)| w / z * f64::from(r))
            .sum::<f64>();
        n += 1;
    }
    total / f64::from(n)
}

#[test]
fn ppo_raises_the_reward_models_score() {
    let f = fixture().unwrap();
    let root = f.dir.path().join("learn");
    // One-token answers, no KL pull, no verifiable reward and a high rate:
    // the actor should move toward the tokens the (random) reward model
    // scores highest, which the exact expected reward measures. The random
    // policy is near uniform over the whole vocabulary and its adapters
    // reach the logits only through attention and MLP, so it moves slowly:
    // 24 steps of all 18 prompts gain about 0.04 (two seeds: 0.048, 0.036;
    // the scores' spread over tokens is about 1.9). Before this test
    // measured exactly, it compared sampled quarter means, whose noise
    // exceeded the gain and once changed sign with the data.
    let p = params(serde_json::json!({
        "actor_lr": 5e-2, "critic_lr": 1e-2, "kl_coef": 0.0, "ev_weight": 0.0,
        "max_new_tokens": 1, "epochs": 24, "ppo_epochs": 4, "batch_size": 18
    }));
    assert_eq!(run(&f, &root, &p, Cancel::new()), Outcome::Done);
    let before = expected_reward(&f.sft, &f);
    let after = expected_reward(&root.join("out/actor"), &f);
    assert!(after > before + 0.02, "expected reward {before} -> {after}");
}

/// Speed of whole PPO steps on the test model (6 prompts, 8 new tokens):
/// `cargo test --release -p poker-pipe-tests --test stages_ppo -- --ignored --nocapture`.
#[test]
#[ignore = "measurement; run by hand"]
fn ppo_step_speed() {
    let f = fixture().unwrap();
    let root = f.dir.path().join("speed");
    let p = params(serde_json::json!({"max_new_tokens": 8, "epochs": 2, "ppo_epochs": 1}));
    let start = std::time::Instant::now();
    assert_eq!(run(&f, &root, &p, Cancel::new()), Outcome::Done);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"bench": "ppo_step", "steps": 6, "prompts_per_step": 6,
            "new_tokens": 8, "seconds": secs, "ms_per_step": secs * 1000.0 / 6.0})
    );
}

/// Parameters of the SIGKILL test: enough steps that the kill lands
/// mid-run, and a checkpoint every other step, so the resumed run redoes
/// the steps after the last one.
fn kill_params() -> PpoParams {
    params(serde_json::json!({"batch_size": 4, "epochs": 3, "checkpoint_every": 2}))
}

/// The child process of `a_killed_ppo_stage_resumes_to_identical_outputs`:
/// runs the stage on the fixture and run folders its parent names.
#[test]
#[ignore = "run as a child process by the SIGKILL test"]
fn ppo_child_process() {
    let (Ok(fixture_dir), Ok(root)) = (std::env::var("PPO_FIXTURE"), std::env::var("PPO_ROOT"))
    else {
        return;
    };
    let inputs = ppo_inputs_at(Path::new(&fixture_dir));
    let mut ctx = context("rlhf", Path::new(&root), &inputs, Cancel::new()).unwrap();
    if let Err(e) = Ppo.run(&kill_params(), &mut ctx) {
        panic!("{:?}", e.report);
    }
}

#[test]
fn a_killed_ppo_stage_resumes_to_identical_outputs() {
    let f = fixture().unwrap();
    let p = kill_params();
    let whole = f.dir.path().join("whole");
    assert_eq!(run(&f, &whole, &p, Cancel::new()), Outcome::Done);

    // A separate process trains; SIGKILL it once its first checkpoint is on
    // disk, then run the stage again on the same work folder.
    let killed = f.dir.path().join("killed");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "ppo_child_process", "--ignored", "--nocapture"])
        .env("PPO_FIXTURE", f.dir.path())
        .env("PPO_ROOT", &killed)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = killed.join("work").join("checkpoint.safetensors");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ckpt.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    assert!(ckpt.exists(), "the child wrote no checkpoint");
    assert!(
        !killed.join("out").join("summary.json").exists(),
        "the child finished before it was killed"
    );
    let _ = std::fs::remove_dir_all(killed.join("out"));
    assert_eq!(run(&f, &killed, &p, Cancel::new()), Outcome::Done);
    for file in [
        "actor/adapter_model.safetensors",
        "actor_ema/adapter_model.safetensors",
        "metrics.jsonl",
        "summary.json",
    ] {
        assert!(
            read(&whole.join("out").join(file)) == read(&killed.join("out").join(file)),
            "{file} differs after the SIGKILL and resume"
        );
    }
}
