//! Mixed precision through the real CLI: the tiny model's SFT with
//! `dtype: bf16` (bf16 weights, rounding where the CUDA kernels round) ends
//! within 3% of the same SFT in f32, and the pipeline's `model.dtype`
//! reaches a training stage's hash exactly as the stage's own `dtype`; each
//! stage records the memory its work held at once in `memory.json`.

#![allow(clippy::unwrap_used)]

use poker_pipe_tests::{Sandbox, text};

const BIN: &str = env!("CARGO_BIN_EXE_pp-test");

/// Toy examples: the answer is a function of the prompt's first word.
fn write_data(sandbox: &Sandbox) {
    let actions = ["fold", "call", "raise 6", "check"];
    let mut sft = String::new();
    for i in 0..384 {
        let a = i % 4;
        let prompt = format!("spot{a} pot {} stack {} ->", 10 + i % 7, 90 - i % 11);
        sft.push_str(&format!(
            "{{\"prompt\":\"{prompt}\",\"response\":\"{}\"}}\n",
            actions[a]
        ));
    }
    sandbox.write("sft.jsonl", &sft).unwrap();
}

/// Two SFT stages alike but for their number format; `model` (when given)
/// is the pipeline's top-level `model:` line and `sft16_dtype` the bf16
/// stage's own `dtype` line.
fn pipeline(model: &str, sft16_dtype: &str) -> String {
    let sft = |name: &str, dtype: &str| {
        format!(
            "  {name}:
    kind: sft
    data: data.sft
    tokenizer: tokenizer
    base: {{random: {{hidden_size: 128, intermediate_size: 384, num_hidden_layers: 2, num_attention_heads: 4}}}}
    method: full
    optim: {{lr: 2.0e-3, warmup_steps: 4}}
    batch_size: 16
    epochs: 2
    max_seq_len: 32
    seed: 5
{dtype}"
        )
    };
    format!(
        "name: bf16
{model}stages:
  data: {{kind: jsonl-data, sft: sft.jsonl}}
  tokenizer: {{kind: tokenizer, data: [data.sft], vocab_size: 300}}
{}{}",
        sft("sft32", "    dtype: f32\n"),
        sft("sft16", sft16_dtype)
    )
}

fn losses(sandbox: &Sandbox, stage: &str) -> Vec<f64> {
    let path = sandbox
        .path()
        .join("runs/bf16")
        .join(stage)
        .join("metrics.jsonl");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

fn hashes(sandbox: &Sandbox) -> (String, String) {
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
    (hash("sft32"), hash("sft16"))
}

#[test]
fn tiny_sft_in_bf16_ends_within_3_percent_of_f32() {
    let sandbox = Sandbox::new(BIN).unwrap();
    write_data(&sandbox);
    sandbox
        .write("p.yaml", &pipeline("", "    dtype: bf16\n"))
        .unwrap();
    let out = sandbox.run(&["run", "p.yaml"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let (f32_losses, bf16_losses) = (losses(&sandbox, "sft32"), losses(&sandbox, "sft16"));
    assert_eq!(f32_losses.len(), 48);
    assert_eq!(bf16_losses.len(), 48);
    // It learned, and in bf16 the steps are not the f32 ones.
    assert!(f32_losses[47] < 0.5 * f32_losses[0], "{f32_losses:?}");
    assert_ne!(f32_losses, bf16_losses);
    // The end of training: the last 8 steps' mean loss.
    let tail = |l: &[f64]| l[40..].iter().sum::<f64>() / 8.0;
    let (a, b) = (tail(&f32_losses), tail(&bf16_losses));
    let rel = (b - a).abs() / a;
    println!(
        "final loss f32 {a:.5} bf16 {b:.5}: {:.2}% apart",
        100.0 * rel
    );
    assert!(rel < 0.03, "f32 {a} vs bf16 {b}: {:.2}% apart", 100.0 * rel);

    // Each stage says how much memory its work held at once.
    for (stage, dtype) in [("sft32", "f32"), ("sft16", "bf16")] {
        let path = sandbox
            .path()
            .join("runs/bf16")
            .join(stage)
            .join("memory.json");
        let memory: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(memory["device"], "cpu", "{memory}");
        assert_eq!(memory["dtype"], dtype, "{memory}");
        let peak = memory["peak_host_bytes"].as_u64().unwrap();
        assert!(peak > 100_000, "{memory}");
        assert_eq!(memory["peak_device_bytes"], peak, "{memory}");
    }
}

#[test]
fn the_pipeline_model_dtype_reaches_the_stage_hash() {
    let own = Sandbox::new(BIN).unwrap();
    write_data(&own);
    own.write("p.yaml", &pipeline("", "    dtype: bf16\n"))
        .unwrap();
    let inherited = Sandbox::new(BIN).unwrap();
    write_data(&inherited);
    // The base is never loaded: both stages name their own.
    inherited
        .write(
            "p.yaml",
            &pipeline("model: {base: \"hf:org/unused\", dtype: bf16}\n", ""),
        )
        .unwrap();
    let f32_default = Sandbox::new(BIN).unwrap();
    write_data(&f32_default);
    f32_default.write("p.yaml", &pipeline("", "")).unwrap();

    let (own32, own16) = hashes(&own);
    let (inh32, inh16) = hashes(&inherited);
    let (_, default16) = hashes(&f32_default);
    assert_eq!(own16, inh16, "model.dtype is the stage's dtype");
    assert_eq!(own32, inh32, "a stage's own dtype wins over model.dtype");
    assert_ne!(own16, own32, "the dtype is part of the hash");
    assert_ne!(own16, default16, "f32 is the default");
}
