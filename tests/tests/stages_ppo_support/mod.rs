//! Models and data for the ppo and eval stage tests, made with the model
//! API: generated poker data, a word-level tokenizer over its words, a
//! random tiny LLaMA with a LoRA adapter as the SFT output, and a reward
//! model (same base, `score.weight`, its own adapter).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use poker_pipe::backend::{Cpu, Device};
use poker_pipe::graph::{Cancel, ContextParts, ExecSettings, ResolvedInput, StageContext};
use poker_pipe::model::config::LlamaConfig;
use poker_pipe::model::llama::Llama;
use poker_pipe::model::lora::{self, LoraConfig};
use poker_pipe::model::weights::{self, HostTensor};
use poker_pipe::poker::dataset::{self, PokerDataParams};
use poker_pipe::stages::{CAUSAL_LM, PROMPT_SET, REWARD_MODEL};

/// Words as the `Whitespace` pre-tokenizer splits them: runs of word
/// characters, and runs of other non-space characters.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_word = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let w = c.is_alphanumeric() || c == '_';
        if !cur.is_empty() && w != cur_word {
            out.push(std::mem::take(&mut cur));
        }
        cur_word = w;
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub sft: PathBuf,
    pub reward: PathBuf,
}

fn write(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// Random weights with some LoRA adapters of random (non-zero) B.
fn adapted(
    cfg: &LlamaConfig,
    seed: u64,
    score: bool,
) -> Result<Llama<Cpu>, Box<dyn std::error::Error>> {
    let be = Cpu;
    let mut m = Llama::random(&be, cfg.clone(), 5).unwrap();
    if score {
        m.add_score_head(&be, 1);
        let d = cfg.hidden_size;
        let v: Vec<f32> = (0..d)
            .map(|i| ((i as f32 * 0.37 + seed as f32).sin()) * 0.5)
            .collect();
        m.score = Some(poker_pipe::model::param::Param::new(
            &be,
            "score.weight",
            &HostTensor::new(vec![1, d], v),
        ));
    }
    lora::attach(&be, &mut m, &lora_cfg(), seed)?;
    for layer in &mut m.layers {
        for (_, lin) in layer.projections_mut() {
            if let Some(l) = lin.lora.as_mut() {
                let n = l.b.numel();
                let v: Vec<f32> = (0..n)
                    .map(|i| ((i as f32 + seed as f32) * 0.61).sin() * 0.05)
                    .collect();
                l.b.value = poker_pipe::backend::Backend::upload(&be, &v);
            }
        }
    }
    Ok(m)
}

pub fn lora_cfg() -> LoraConfig {
    LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        targets: vec!["q_proj".into(), "v_proj".into(), "up_proj".into()],
        rslora: false,
    }
}

/// Poker data, a tokenizer, an SFT model dir and a reward model dir.
pub fn fixture() -> Result<Fixture, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let params: PokerDataParams = serde_json::from_value(serde_json::json!({
        "scenarios": 40, "pairs": 40, "prompts": 24, "style": "compact", "seed": 3,
        "test_fraction": 0.25
    }))?;
    dataset::generate(&params, &data, |_, _| {}, &dataset::never)?;
    let mut vocab = BTreeSet::new();
    for file in [
        "sft.jsonl",
        "pairs.jsonl",
        "prompts.jsonl",
        "test_sft.jsonl",
        "test_pairs.jsonl",
        "test_prompts.jsonl",
    ] {
        let text = std::fs::read_to_string(data.join(file))?;
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line)?;
            for key in ["prompt", "response", "chosen", "rejected"] {
                if let Some(s) = v.get(key).and_then(|s| s.as_str()) {
                    vocab.extend(words(s));
                }
            }
        }
    }
    for w in ["fold", "check", "call", "bet", "raise", "all", "in"] {
        vocab.insert(w.to_string());
    }
    let mut ids = BTreeMap::new();
    ids.insert("<s>".to_string(), 0u32);
    ids.insert("</s>".to_string(), 1u32);
    for (i, w) in vocab.into_iter().enumerate() {
        ids.insert(w, i as u32 + 2);
    }
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": ids, "unk_token": "</s>"}
    });
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": ids.len(), "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5, "bos_token_id": 0, "eos_token_id": 1,
        "max_position_embeddings": 512, "tie_word_embeddings": false
    });
    let cfg = LlamaConfig::parse(&config.to_string(), Path::new("config.json"))?;
    let be = Cpu;
    let sft = dir.path().join("sft");
    let reward = dir.path().join("reward");
    for (out, score) in [(&sft, false), (&reward, true)] {
        std::fs::create_dir_all(out)?;
        write(&out.join("config.json"), &config.to_string())?;
        write(&out.join("tokenizer.json"), &tokenizer.to_string())?;
        let mut m = adapted(&cfg, if score { 2 } else { 1 }, score)?;
        let tensors = m.base_tensors(&be);
        weights::save_file(
            &out.join("model.safetensors"),
            &tensors,
            weights::pt_metadata(),
        )?;
        lora::save(&be, &mut m, &lora_cfg(), out, ".")?;
    }
    Ok(Fixture {
        dir,
        data,
        sft,
        reward,
    })
}

/// A stage context with these upstream inputs: (field, path, artifact).
pub fn context(
    stage: &str,
    root: &Path,
    inputs: &[(&str, PathBuf, poker_pipe::graph::ArtifactType)],
    cancel: Cancel,
) -> std::io::Result<StageContext> {
    let inputs = inputs
        .iter()
        .map(|(field, path, artifact)| {
            (
                field.to_string(),
                ResolvedInput {
                    stage: field.to_string(),
                    output: field.to_string(),
                    artifact: *artifact,
                    path: path.clone(),
                },
            )
        })
        .collect();
    StageContext::new(ContextParts {
        stage: stage.to_string(),
        device: Device::Cpu,
        exec: ExecSettings {
            preset: None,
            micro_batch: 4,
            grad_accum: 1,
            activation_checkpointing: false,
            offload_optimizer: false,
            gpu_memory_gib: None,
            base_model: None,
            input_adapters: Default::default(),
            ran: None,
        },
        inputs,
        files: BTreeMap::new(),
        out_dir: root.join("out"),
        work_dir: root.join("work"),
        cancel,
    })
}

pub fn ppo_inputs(f: &Fixture) -> Vec<(&'static str, PathBuf, poker_pipe::graph::ArtifactType)> {
    ppo_inputs_at(f.dir.path())
}

/// The ppo inputs of the fixture made in `dir` (by another process).
pub fn ppo_inputs_at(dir: &Path) -> Vec<(&'static str, PathBuf, poker_pipe::graph::ArtifactType)> {
    vec![
        ("actor", dir.join("sft"), CAUSAL_LM),
        ("critic", dir.join("reward"), REWARD_MODEL),
        (
            "prompts",
            dir.join("data").join("prompts.jsonl"),
            PROMPT_SET,
        ),
    ]
}
