//! A LoRA reward model (`reward` with `method: lora`) after a LoRA SFT on a
//! tiny pretrained base: it continues the SFT adapter, saves adapter and
//! score head as a PEFT `SEQ_CLS` adapter pointing at the base (no weight
//! copy), and loads both where eval loads it (`load_dir`) and where PPO
//! does (`build_roles`, sharing the policy's base) with the same scores the
//! trained in-memory model reported. An adapter PEFT itself wrote loads
//! with the scores transformers gives.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use poker_pipe::backend::{Backend, Cpu};
use poker_pipe::model::batch::Batch;
use poker_pipe::model::load::load_dir;
use poker_pipe::stages::ppo::{PpoParams, build_roles};
use poker_pipe::train::dataset;
use poker_pipe_tests::{Sandbox, text};

const BIN: &str = env!("CARGO_BIN_EXE_pp-test");

fn base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden/llama/mha")
        .canonicalize()
        .unwrap()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Chosen and rejected answers of 16 pairs over words of the toy
/// tokenizer's vocabulary; held-out pairs reuse them.
fn data(sandbox: &Sandbox) {
    let answers = ["fold", "call"];
    let spots = ["you have two seven", "you have ace king"];
    let (mut sft, mut pairs) = (String::new(), String::new());
    for i in 0..16 {
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
}

#[test]
fn a_lora_reward_model_loads_in_eval_and_ppo_with_its_trained_scores() {
    let sandbox = Sandbox::new(BIN).unwrap();
    data(&sandbox);
    // 16 pairs in batches of 8: two optimizer steps.
    let pipeline = format!(
        r#"name: rmlora
model: {{base: "{}"}}
stages:
  data: {{kind: jsonl-data, sft: sft.jsonl, pairs: pairs.jsonl}}
  sft:
    kind: sft
    data: data.sft
    lora: {{rank: 4, alpha: 8, dropout: 0.0}}
    optim: {{lr: 2.0e-2}}
    batch_size: 8
    epochs: 2
    max_seq_len: 48
  reward:
    kind: reward
    init: sft
    method: lora
    data: data.pairs
    test_data: data.pairs
    optim: {{lr: 5.0e-2}}
    batch_size: 8
    max_seq_len: 48
"#,
        base().display()
    );
    sandbox.write("p.yaml", &pipeline).unwrap();
    let out = sandbox.run(&["run", "p.yaml"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let sft_dir = sandbox.path().join("runs/rmlora/sft");
    let rm_dir = sandbox.path().join("runs/rmlora/reward");
    assert!(!rm_dir.join("model.safetensors").exists(), "no base copy");
    assert!(!rm_dir.join("config.json").exists(), "an adapter folder");
    let adapter = json(&rm_dir.join("adapter_config.json"));
    assert_eq!(adapter["task_type"], "SEQ_CLS");
    assert_eq!(adapter["r"], 4, "continues the SFT adapter");
    assert_eq!(adapter["lora_dropout"], 0.0);
    assert_eq!(adapter["modules_to_save"], serde_json::json!(["score"]));
    assert_eq!(
        adapter["base_model_name_or_path"],
        base().display().to_string()
    );
    let summary = json(&rm_dir.join("summary.json"));
    assert_eq!(summary["steps"], 2, "{summary}");

    // Eval's way in: the adapter and the head on the base.
    let be = Cpu;
    let eval = load_dir(&be, &rm_dir).unwrap();
    let cfg = eval.model.cfg.clone();
    let eos = cfg.eos_token_ids.first().copied();
    let pad = cfg.pad_token_id.or(eos).unwrap_or(0);
    let pairs = dataset::load_pairs(
        &sandbox.path().join("pairs.jsonl"),
        &eval.tokenizer,
        eos,
        48,
    )
    .unwrap();
    let batch = |pick: fn(&dataset::Pair) -> &Vec<u32>| {
        let seqs: Vec<Vec<u32>> = pairs.iter().map(|p| pick(p).clone()).collect();
        Batch::left_padded(&seqs, pad)
    };
    let (chosen, rejected) = (batch(|p| &p.chosen), batch(|p| &p.rejected));
    let eval_chosen = eval.model.scores(&be, &chosen).unwrap();
    let eval_rejected = eval.model.scores(&be, &rejected).unwrap();

    // PPO's way in: one shared base, the reward adapter and head on it.
    let params: PpoParams = serde_json::from_value(serde_json::json!({
        "actor": "sft", "critic": "reward", "prompts": "data.prompts"
    }))
    .unwrap();
    let (mut roles, actor_cfg, _) = build_roles(&be, &params, &sft_dir, &rm_dir).unwrap();
    assert!(
        roles.judge.own_base.is_none(),
        "the reward model shares the base"
    );
    assert_eq!(actor_cfg.rank, 4);
    let ppo_chosen = roles.scores(&be, &chosen);
    let ppo_rejected = roles.scores(&be, &rejected);

    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs().max(1.0);
    for (got, want) in [(&ppo_chosen, &eval_chosen), (&ppo_rejected, &eval_rejected)] {
        for (g, w) in got.iter().zip(want.iter()) {
            assert!(close(f64::from(*g), f64::from(*w)), "{g} vs {w}");
        }
    }
    // The trained model's own held-out means (reward::evaluate in memory).
    let mean = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
    let (want_chosen, want_rejected) = (
        summary["mean_chosen"].as_f64().unwrap(),
        summary["mean_rejected"].as_f64().unwrap(),
    );
    assert!(
        close(mean(&ppo_chosen), want_chosen),
        "{} vs {want_chosen}",
        mean(&ppo_chosen)
    );
    assert!(
        close(mean(&ppo_rejected), want_rejected),
        "{} vs {want_rejected}",
        mean(&ppo_rejected)
    );
    assert!(
        (want_chosen - want_rejected).abs() > 1e-4,
        "trained scores separate the answers: {summary}"
    );
    // Training moved the SFT adapter: the reward adapter is not the
    // reference (the SFT adapter, frozen).
    let moved = roles
        .judge
        .adapter
        .params()
        .zip(roles.policy.reference.params())
        .any(|(r, s)| be.download(&r.value) != be.download(&s.value));
    assert!(moved, "the reward adapter equals the SFT adapter");
}

/// A reward adapter written by PEFT itself (`SEQ_CLS`, the score head in
/// `modules_to_save`; tests/golden/reward_lora/make_fixture.py) loads
/// through `load_dir` with the scores transformers + PEFT give (f32, one
/// unpadded sequence per pass: tolerance 1e-4 relative).
#[test]
fn a_peft_written_reward_adapter_scores_as_in_transformers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/reward_lora");
    let expected = json(&dir.join("expected.json"));
    let be = Cpu;
    let loaded = load_dir(&be, &dir.join("adapter")).unwrap();
    assert!(
        loaded.model.score.is_some(),
        "the head comes with the adapter"
    );
    let sequences = expected["sequences"].as_array().unwrap();
    let scores = expected["scores"].as_array().unwrap();
    for (seq, want) in sequences.iter().zip(scores) {
        let ids: Vec<u32> = seq
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect();
        let got = loaded
            .model
            .scores(&be, &Batch::left_padded(&[ids], 0))
            .unwrap()[0];
        let want = want.as_f64().unwrap();
        assert!(
            (f64::from(got) - want).abs() <= 1e-4 * want.abs().max(1.0),
            "{got} vs {want}"
        );
    }
}
