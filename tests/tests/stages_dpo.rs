//! The `dpo` kind: its gradient against finite differences of its own loss
//! (full fine-tuning of the golden LLaMA, both losses); through the CLI, a
//! tiny SFT model learns toy preference pairs (held-out accuracy and margin
//! up, the figures TRL logs in metrics.jsonl), SIGKILL and a re-run end with
//! the same bytes as an uninterrupted run, LoRA with `ipo` trains too, and
//! `poker-pipe eval --model` answers with the result.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use poker_pipe::backend::Cpu;
use poker_pipe::model::{Llama, TrainPass};
use poker_pipe::stages::sft::train_all;
use poker_pipe::train::dataset::Example;
use poker_pipe::train::dpo::{DpoLoss, DpoObjective, reference_logprobs};
use poker_pipe::train::lm_loop::Objective;
use poker_pipe_tests::golden::{Lcg, assert_gradients_match_differences, golden};
use poker_pipe_tests::{Sandbox, signal, text, wait_for, write_toy_data};

const BIN: &str = env!("CARGO_BIN_EXE_pp-test");

fn token(rng: &mut Lcg) -> u32 {
    ((rng.uniform() + 1.0) * 40.0) as u32 + 2
}

#[test]
fn the_gradient_matches_finite_differences_of_the_loss() {
    for loss in [DpoLoss::Sigmoid, DpoLoss::Ipo] {
        let mut model = Llama::load(&Cpu, &golden("mha")).unwrap();
        train_all(&Cpu, &mut model);
        let mut rng = Lcg(11);
        // Four pairs of different lengths (left padding in the batch).
        let pairs: Vec<[Example; 2]> = (0..4)
            .map(|i| {
                let prompt: Vec<u32> = (0..3 + i).map(|_| token(&mut rng)).collect();
                let side = |rng: &mut Lcg, n: usize| {
                    let mut ids = prompt.clone();
                    ids.extend((0..n).map(|_| token(rng)));
                    Example {
                        ids,
                        prompt_len: prompt.len(),
                    }
                };
                [side(&mut rng, 2 + i % 2), side(&mut rng, 3)]
            })
            .collect();
        // A reference away from the model, so h is not 0.
        let reference: Vec<[f64; 2]> = reference_logprobs(&Cpu, &model, &pairs, 0, 2)
            .into_iter()
            .map(|[c, r]| [c + f64::from(rng.uniform()), r + f64::from(rng.uniform())])
            .collect();
        let mut objective = DpoObjective {
            pairs,
            reference,
            beta: 0.5,
            loss,
            pad: 0,
        };
        let indices = [0, 1, 2, 3];
        model.zero_grads(&Cpu);
        let pass = TrainPass {
            seed: 7,
            checkpoint: false,
        };
        let stats = objective
            .accumulate(&Cpu, &mut model, &indices, 4.0, pass)
            .unwrap();
        let at = objective.loss_of(&Cpu, &model, &indices, None);
        assert!(
            (stats.loss.iter().sum::<f64>() - at).abs() < 1e-5 * at.abs().max(1.0),
            "{loss:?}"
        );
        let names: Vec<String> = model
            .params_mut()
            .iter()
            .filter(|p| p.name.contains("layers.0") || p.name.contains("embed"))
            .map(|p| p.name.clone())
            .collect();
        assert!(names.len() >= 5);
        assert_gradients_match_differences(&mut model, &names, &mut rng, 2e-3, 2e-2, |m| {
            objective.loss_of(&Cpu, m, &indices, None)
        });
    }
}

/// SFT stops early (one epoch), so the preferences are not learnt yet.
fn pipeline(dpo: &str) -> String {
    format!(
        r#"name: dpotest
memory_presets:
  whole: {{gpu_memory_gib: 80, micro_batch: 8}}
  pairs: {{gpu_memory_gib: 24, micro_batch: 2}}
stages:
  data: {{kind: jsonl-data, sft: sft.jsonl, pairs: pairs.jsonl}}
  tokenizer: {{kind: tokenizer, data: [data.sft, data.pairs], vocab_size: 300}}
  sft:
    kind: sft
    data: data.sft
    tokenizer: tokenizer
    base: {{random: {{hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4}}}}
    method: full
    optim: {{lr: 3.0e-3, warmup_steps: 2}}
    batch_size: 8
    epochs: 1
    max_seq_len: 32
    seed: 3
  dpo:
    kind: dpo
    init: sft
    data: data.pairs
    test_data: data.pairs
    batch_size: 8
    epochs: 3
    max_seq_len: 32
    seed: 3
    checkpoint_every: 4
{dpo}"#
    )
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn setup(dpo: &str) -> Sandbox {
    let sandbox = Sandbox::new(BIN).unwrap();
    write_toy_data(&sandbox).unwrap();
    sandbox.write("p.yaml", &pipeline(dpo)).unwrap();
    sandbox
}

const FULL: &str = "    method: full\n    optim: {lr: 1.0e-3}\n";

/// The killed and resumed run takes the pairs two at a time, the reference
/// all eight at once: the same bytes either way.
#[test]
fn dpo_learns_the_pairs_and_resumes_byte_identically() {
    let reference = setup(FULL);
    let out = reference
        .run(&["run", "p.yaml", "--preset", "whole"])
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let dir = reference.path().join("runs/dpotest/dpo");
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(summary["steps"], 36, "{summary}");
    // Before training h = 0 on every pair (the policy is the reference):
    // accuracy 0 and loss ln 2; after, most pairs are ranked right.
    let accuracy = summary["test_accuracy"].as_f64().unwrap();
    let margin = summary["test_margin"].as_f64().unwrap();
    let test_loss = summary["test_loss"].as_f64().unwrap();
    assert!(accuracy > 0.9, "{summary}");
    assert!(margin > 0.0 && test_loss < 2f64.ln() * 0.8, "{summary}");
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    let keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "step",
            "loss",
            "lr",
            "grad_norm",
            "tokens",
            "accuracy",
            "reward_chosen",
            "reward_rejected",
            "margin"
        ]
    );
    assert!(
        (first["loss"].as_f64().unwrap() - 2f64.ln()).abs() < 1e-5,
        "{first}"
    );
    assert_eq!(first["accuracy"], 0.0);
    let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
    for f in ["config.json", "tokenizer.json", "memory.json"] {
        assert!(dir.join(f).exists(), "{f}");
    }

    // Killed after a checkpoint of the DPO stage, then run again.
    let sandbox = setup(FULL);
    let out = sandbox
        .run(&["run", "p.yaml", "--until", "sft", "--preset", "pairs"])
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let plan = sandbox.plan("p.yaml", &[]).unwrap();
    let hash = plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "dpo")
        .map(|s| s["hash"].as_str().unwrap().to_string())
        .unwrap();
    let mut child = sandbox
        .spawn(&["run", "p.yaml", "--preset", "pairs"], &[])
        .unwrap();
    let checkpoint = sandbox
        .path()
        .join(".poker-pipe/work")
        .join(&hash)
        .join("checkpoint.safetensors");
    assert!(wait_for(&checkpoint, 120), "no checkpoint was written");
    std::thread::sleep(Duration::from_millis(100));
    signal(&child, "KILL").unwrap();
    assert_eq!(child.wait().unwrap().code(), None, "killed by a signal");
    assert!(
        !sandbox
            .path()
            .join(".poker-pipe/cache")
            .join(&hash)
            .exists(),
        "the stage finished before it could be killed"
    );
    let out = sandbox
        .run(&["run", "p.yaml", "--preset", "pairs"])
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let resumed = sandbox.path().join("runs/dpotest/dpo");
    let log = std::fs::read_to_string(resumed.join("training.log")).unwrap();
    assert!(
        log.contains("resuming from the checkpoint of step"),
        "{log}"
    );
    assert!(std::fs::read(resumed.join("model.safetensors")).unwrap() == weights);
    assert_eq!(
        std::fs::read_to_string(resumed.join("metrics.jsonl")).unwrap(),
        metrics
    );
}

#[test]
fn lora_with_ipo_trains_and_eval_answers_with_it() {
    let sandbox = setup(
        "    method: lora\n    lora: {rank: 4, alpha: 8}\n    loss: ipo\n    beta: 0.5\n    optim: {lr: 1.0e-2}\n",
    );
    let out = sandbox.run(&["run", "p.yaml"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let dir = sandbox.path().join("runs/dpotest/dpo");
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(summary["loss"], "ipo");
    assert!(summary["test_margin"].as_f64().unwrap() > 0.0, "{summary}");
    let prompts = sandbox
        .write("prompts.txt", "spot0 pot 10 stack 90 ->\n")
        .unwrap();
    let out = sandbox
        .run(&[
            "eval",
            "--model",
            dir.to_str().unwrap(),
            "--mode",
            "batch",
            "--test-file",
            prompts.to_str().unwrap(),
            "--temperature",
            "0",
            "--max-length",
            "8",
        ])
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let results = std::fs::read_to_string(sandbox.path().join("prompts_results.txt")).unwrap();
    assert_eq!(results.lines().count(), 1, "{results}");
}
