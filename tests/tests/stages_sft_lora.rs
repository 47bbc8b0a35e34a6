//! LoRA SFT on a pretrained base directory: the output is a PEFT adapter
//! pointing at the base (no copy of the base weights), `eval` answers with
//! it, and a reward stage starts from it (adapter merged).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use poker_pipe_tests::{Sandbox, text};

const BIN: &str = env!("CARGO_BIN_EXE_pp-test");

fn base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden/llama/mha")
        .canonicalize()
        .unwrap()
}

#[test]
fn lora_sft_on_a_directory_base_writes_a_peft_adapter_that_eval_and_reward_use() {
    let sandbox = Sandbox::new(BIN).unwrap();
    let answers = ["fold", "call"];
    // Words of the toy base tokenizer's vocabulary (others are <unk>).
    let spots = ["you have two seven", "you have ace king"];
    let mut sft = String::new();
    let mut pairs = String::new();
    for i in 0..32 {
        let prompt = format!("{} ->", spots[i % 2]);
        sft.push_str(&format!(
            "{{\"prompt\":\"{prompt}\",\"response\":\"{}\"}}\n",
            answers[i % 2]
        ));
        pairs.push_str(&format!(
            "{{\"prompt\":\"{prompt}\",\"chosen\":\"{}\",\"rejected\":\"{}\"}}\n",
            answers[i % 2],
            answers[(i + 1) % 2]
        ));
    }
    sandbox.write("sft.jsonl", &sft).unwrap();
    sandbox.write("pairs.jsonl", &pairs).unwrap();
    let pipeline = format!(
        r#"name: loratest
model: {{base: "{}"}}
stages:
  data: {{kind: jsonl-data, sft: sft.jsonl, pairs: pairs.jsonl}}
  sft:
    kind: sft
    data: data.sft
    lora: {{rank: 4, alpha: 8, dropout: 0.0}}
    optim: {{lr: 2.0e-2}}
    batch_size: 8
    epochs: 12
    max_seq_len: 48
  reward: {{kind: reward, init: sft, data: data.pairs, test_data: data.pairs, optim: {{lr: 1.0e-3}}, max_seq_len: 48}}
"#,
        base().display()
    );
    sandbox.write("p.yaml", &pipeline).unwrap();
    let out = sandbox.run(&["run", "p.yaml"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let dir = sandbox.path().join("runs/loratest/sft");
    assert!(
        !dir.join("model.safetensors").exists(),
        "LoRA must not copy the base"
    );
    let adapter: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(adapter["r"], 4);
    assert_eq!(adapter["task_type"], "CAUSAL_LM");
    assert_eq!(
        adapter["base_model_name_or_path"],
        base().display().to_string()
    );
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
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

    // The adapter teaches the answer format: greedy answers are the labels.
    let test = sandbox
        .write("held.txt", "you have two seven ->\nyou have ace king ->\n")
        .unwrap();
    let out = sandbox
        .run(&[
            "eval",
            "--model",
            dir.to_str().unwrap(),
            "--mode",
            "batch",
            "--test-file",
            test.to_str().unwrap(),
            "--temperature",
            "0",
            "--max-length",
            "48",
        ])
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let results = std::fs::read_to_string(sandbox.path().join("held_results.txt")).unwrap();
    let got: Vec<String> = results
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["response"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(got, ["fold", "call"], "{results}");

    let rm = sandbox.path().join("runs/loratest/reward");
    assert!(rm.join("model.safetensors").exists());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rm.join("summary.json")).unwrap()).unwrap();
    assert!(
        summary["pairwise_accuracy"].as_f64().unwrap() >= 0.0,
        "{summary}"
    );
}
