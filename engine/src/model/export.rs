//! Writing a model for deployment with any LoRA adapter merged in: merged
//! Hugging Face safetensors (sharded with an index above a size), or one
//! GGUF file for llama.cpp and Ollama (f32, f16, bf16 or q8_0 matrices;
//! norms stay f32, as llama.cpp's converter keeps them).

use std::path::{Path, PathBuf};

use serde_json::{Value as Json, json};

use crate::backend::Backend;

use super::error::{ModelError, Result};
use super::gguf::convert::{gguf_name, permute_rows};
use super::gguf::quant::{self, GgmlType};
use super::gguf::writer::{self, Meta, TensorEntry};
use super::load::load_dir;
use super::weights::{self, TensorMap};

/// Shards of an HF export hold at most this many bytes (transformers'
/// `save_pretrained` default).
pub const DEFAULT_SHARD_BYTES: u64 = 5 * 1000 * 1000 * 1000;

/// Files copied beside exported weights when the model has them.
const BESIDE: [&str; 5] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
];

/// A model's weights with adapters merged, and the folders its config and
/// tokenizer come from.
pub struct Merged {
    pub tensors: TensorMap,
    /// Where config.json lives (the base).
    pub base_dir: PathBuf,
    /// Where the tokenizer lives (the model folder, else the base).
    pub tokenizer_dir: PathBuf,
}

/// Loads `dir` (a model folder, a stage output with an adapter, a folder
/// made from a GGUF file) and merges its adapter into the base weights.
pub fn merged<B: Backend>(be: &B, dir: &Path) -> Result<Merged> {
    let mut loaded = load_dir(be, dir)?;
    if loaded.adapter.is_some() {
        super::lora::set_merged(be, &mut loaded.model, true);
    }
    let tokenizer_dir = if dir.join("tokenizer.json").exists() {
        dir.to_path_buf()
    } else {
        loaded.base_dir.clone()
    };
    Ok(Merged {
        tensors: loaded.model.base_tensors(be),
        base_dir: loaded.base_dir,
        tokenizer_dir,
    })
}

fn write_err(path: &Path) -> impl Fn(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `merged` as an HF folder: config and tokenizer files, and the
/// weights as f32 safetensors, in shards of at most `shard_bytes` with
/// `model.safetensors.index.json` when they do not fit in one.
pub fn write_hf(merged: &Merged, out: &Path, shard_bytes: u64) -> Result<()> {
    std::fs::create_dir_all(out).map_err(write_err(out))?;
    for name in BESIDE {
        let from = if name.starts_with("tokenizer") || name == "special_tokens_map.json" {
            merged.tokenizer_dir.join(name)
        } else {
            merged.base_dir.join(name)
        };
        if from.is_file() {
            let to = out.join(name);
            std::fs::copy(&from, &to).map_err(write_err(&to))?;
        }
    }
    let mut shards: Vec<TensorMap> = vec![TensorMap::new()];
    let mut size = 0u64;
    for (name, t) in &merged.tensors {
        let bytes = 4 * t.data.len() as u64;
        if size > 0 && size + bytes > shard_bytes {
            shards.push(TensorMap::new());
            size = 0;
        }
        size += bytes;
        if let Some(last) = shards.last_mut() {
            last.insert(name.clone(), t.clone());
        }
    }
    if shards.len() == 1 {
        return weights::save_file(
            &out.join("model.safetensors"),
            &shards[0],
            weights::pt_metadata(),
        );
    }
    let count = shards.len();
    let mut map = serde_json::Map::new();
    let mut total = 0u64;
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{count:05}.safetensors", i + 1);
        for (name, t) in shard {
            map.insert(name.clone(), Json::String(file.clone()));
            total += 4 * t.data.len() as u64;
        }
        weights::save_file(&out.join(&file), shard, weights::pt_metadata())?;
    }
    let index = json!({"metadata": {"total_size": total}, "weight_map": map});
    let path = out.join("model.safetensors.index.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&index).unwrap_or_default(),
    )
    .map_err(write_err(&path))
}

fn read_json(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The GGUF encoding of matrices for `--quant`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Quant {
    F32,
    F16,
    Bf16,
    #[value(name = "q8_0")]
    Q8_0,
}

impl Quant {
    fn ty(self) -> GgmlType {
        match self {
            Quant::F32 => GgmlType::F32,
            Quant::F16 => GgmlType::F16,
            Quant::Bf16 => GgmlType::Bf16,
            Quant::Q8_0 => GgmlType::Q8_0,
        }
    }

    /// llama.cpp's `general.file_type` (its `LLAMA_FTYPE_*`).
    fn file_type(self) -> u32 {
        match self {
            Quant::F32 => 0,
            Quant::F16 => 1,
            Quant::Q8_0 => 7,
            Quant::Bf16 => 32,
        }
    }
}

/// The GGUF tokenizer metadata (`tokenizer.ggml.*`) of a byte-level BPE
/// `tokenizer.json`, padded to `vocab` tokens.
fn tokenizer_meta(path: &Path, vocab: usize) -> Result<Vec<(String, Meta)>> {
    let json = read_json(path)?;
    let unsupported = |what: String| ModelError::Unsupported {
        path: path.to_path_buf(),
        what,
        hint: "GGUF export writes byte-level BPE tokenizers (GPT-2, Llama 3, SmolLM style)".into(),
    };
    let model = &json["model"];
    if model["type"] != "BPE" {
        return Err(unsupported(format!("tokenizer model {}", model["type"])));
    }
    let mut tokens: Vec<Option<String>> = vec![None; vocab];
    let mut types = vec![1i32; vocab];
    let mut place = |id: Option<u64>, text: &str| -> Result<usize> {
        let id = id
            .map(|i| i as usize)
            .filter(|&i| i < vocab)
            .ok_or_else(|| {
                unsupported(format!(
                    "token `{text}` with an id outside the {vocab}-token embedding"
                ))
            })?;
        tokens[id] = Some(text.to_string());
        Ok(id)
    };
    for (text, id) in model["vocab"].as_object().into_iter().flatten() {
        place(id.as_u64(), text)?;
    }
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        let text = added["content"].as_str().unwrap_or_default();
        let id = place(added["id"].as_u64(), text)?;
        types[id] = if added["special"] == true { 3 } else { 4 };
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.unwrap_or_else(|| {
                types[i] = 5;
                format!("[PAD{i}]")
            })
        })
        .collect();
    let merges: Vec<String> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            Json::String(s) => Some(s.clone()),
            Json::Array(pair) => Some(format!(
                "{} {}",
                pair.first()?.as_str()?,
                pair.get(1)?.as_str()?
            )),
            _ => None,
        })
        .collect();
    let pre = &json["pre_tokenizer"];
    let kinds: Vec<&str> = match pre["type"].as_str() {
        Some("Sequence") => pre["pretokenizers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["type"].as_str())
            .collect(),
        Some(one) => vec![one],
        None => vec![],
    };
    let pre_name = match kinds.as_slice() {
        ["ByteLevel"] => "gpt2",
        ["Digits", "ByteLevel"] => "smollm",
        ["Split", "ByteLevel"] => "llama-bpe",
        other => return Err(unsupported(format!("pre-tokenizer {other:?}"))),
    };
    Ok(vec![
        ("tokenizer.ggml.model".into(), Meta::Str("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Meta::Str(pre_name.into())),
        ("tokenizer.ggml.tokens".into(), Meta::StrArray(tokens)),
        ("tokenizer.ggml.token_type".into(), Meta::I32Array(types)),
        ("tokenizer.ggml.merges".into(), Meta::StrArray(merges)),
        (
            "tokenizer.ggml.add_bos_token".into(),
            Meta::Bool(json["post_processor"]["type"] == "TemplateProcessing"),
        ),
    ])
}

/// Writes `merged` as one GGUF file with matrices encoded as `quant`
/// (q8_0 falls back to f16 for rows that are not whole blocks of 32).
pub fn write_gguf(merged: &Merged, out: &Path, quant: Quant) -> Result<()> {
    let config_path = merged.base_dir.join("config.json");
    let raw = read_json(&config_path)?;
    let cfg = super::config::LlamaConfig::load(&config_path)?;
    if cfg.rope_scaling != super::config::RopeScaling::None {
        return Err(ModelError::Unsupported {
            path: config_path,
            what: "RoPE scaling in a GGUF export".into(),
            hint: "export --format hf, and convert with llama.cpp's convert_hf_to_gguf.py".into(),
        });
    }
    let mut meta: Vec<(String, Meta)> = vec![
        ("general.architecture".into(), Meta::Str("llama".into())),
        (
            "general.name".into(),
            Meta::Str(raw["_name_or_path"].as_str().unwrap_or("poker-pipe").into()),
        ),
        ("general.file_type".into(), Meta::U32(quant.file_type())),
        ("general.quantization_version".into(), Meta::U32(2)),
        ("llama.block_count".into(), Meta::U32(cfg.num_layers as u32)),
        (
            "llama.context_length".into(),
            Meta::U32(cfg.max_position_embeddings as u32),
        ),
        (
            "llama.embedding_length".into(),
            Meta::U32(cfg.hidden_size as u32),
        ),
        (
            "llama.feed_forward_length".into(),
            Meta::U32(cfg.intermediate_size as u32),
        ),
        (
            "llama.attention.head_count".into(),
            Meta::U32(cfg.num_heads as u32),
        ),
        (
            "llama.attention.head_count_kv".into(),
            Meta::U32(cfg.num_kv_heads as u32),
        ),
        (
            "llama.attention.key_length".into(),
            Meta::U32(cfg.head_dim as u32),
        ),
        (
            "llama.attention.value_length".into(),
            Meta::U32(cfg.head_dim as u32),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Meta::F32(cfg.rms_norm_eps),
        ),
        (
            "llama.rope.freq_base".into(),
            Meta::F32(cfg.rope_theta as f32),
        ),
        (
            "llama.rope.dimension_count".into(),
            Meta::U32(cfg.head_dim as u32),
        ),
        ("llama.vocab_size".into(), Meta::U32(cfg.vocab_size as u32)),
    ];
    meta.extend(tokenizer_meta(
        &merged.tokenizer_dir.join("tokenizer.json"),
        cfg.vocab_size,
    )?);
    let ids = [
        ("bos", cfg.bos_token_id),
        ("eos", cfg.eos_token_ids.first().copied()),
        ("padding", cfg.pad_token_id),
    ];
    for (key, id) in ids {
        if let Some(id) = id {
            meta.push((format!("tokenizer.ggml.{key}_token_id"), Meta::U32(id)));
        }
    }
    let tok_config = merged.tokenizer_dir.join("tokenizer_config.json");
    if tok_config.is_file()
        && let Some(template) = read_json(&tok_config)?["chat_template"].as_str()
    {
        meta.push(("tokenizer.chat_template".into(), Meta::Str(template.into())));
    }

    let mut entries = Vec::new();
    let mut sources = Vec::new();
    for (name, t) in &merged.tensors {
        let Some(gguf) = gguf_name(name) else {
            return Err(ModelError::Unsupported {
                path: out.to_path_buf(),
                what: format!("tensor `{name}` in a GGUF export"),
                hint: "only causal LMs are exported to GGUF (a reward model's score head is not)"
                    .into(),
            });
        };
        let ty = match (t.shape.len(), quant) {
            (1, _) => GgmlType::F32,
            (_, Quant::Q8_0) if !t.shape[t.shape.len() - 1].is_multiple_of(32) => GgmlType::F16,
            _ => quant.ty(),
        };
        entries.push(TensorEntry {
            name: gguf,
            shape: t.shape.clone(),
            ty,
        });
        sources.push(name);
    }
    let heads = |name: &str| {
        if name.ends_with("q_proj.weight") {
            Some(cfg.num_heads)
        } else if name.ends_with("k_proj.weight") {
            Some(cfg.num_kv_heads)
        } else {
            None
        }
    };
    writer::write(out, &meta, &entries, |i| {
        let t = &merged.tensors[sources[i]];
        let data = match heads(sources[i]) {
            Some(h) => permute_rows(&t.data, t.shape[1], h, false),
            None => t.data.clone(),
        };
        quant::quantize(entries[i].ty, &data).ok_or_else(|| ModelError::Write {
            path: out.to_path_buf(),
            source: std::io::Error::other(format!(
                "cannot encode `{}` as {:?}",
                sources[i], entries[i].ty
            )),
        })
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::backend::Cpu;

    /// The tiny HF model of the golden fixtures.
    fn tiny() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/llama/mha")
    }

    #[test]
    fn hf_export_shards_above_the_threshold_and_loads_back_equal() {
        let merged = merged(&Cpu, &tiny()).unwrap();
        let biggest = merged
            .tensors
            .values()
            .map(|t| 4 * t.data.len() as u64)
            .max()
            .unwrap();
        let out = tempfile::tempdir().unwrap();
        write_hf(&merged, out.path(), biggest).unwrap();
        let index = read_json(&out.path().join("model.safetensors.index.json")).unwrap();
        let shards: std::collections::BTreeSet<&str> = index["weight_map"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(shards.len() > 2, "{shards:?}");
        for shard in &shards {
            let size = std::fs::metadata(out.path().join(shard)).unwrap().len();
            // Each shard holds at most `biggest` bytes of data plus its header.
            assert!(size <= biggest + 4096, "{shard}: {size}");
        }
        assert!(out.path().join("tokenizer.json").is_file());
        assert_eq!(weights::load_dir(out.path()).unwrap(), merged.tensors);

        let single = tempfile::tempdir().unwrap();
        write_hf(&merged, single.path(), DEFAULT_SHARD_BYTES).unwrap();
        assert!(single.path().join("model.safetensors").is_file());
        assert!(!single.path().join("model.safetensors.index.json").exists());
    }

    #[test]
    fn permutation_round_trips_and_moves_rows_as_llama_cpp_does() {
        // 2 heads of head_dim 4, 3 columns: row r holds r in every column.
        let data: Vec<f32> = (0..8).flat_map(|r| [r as f32; 3]).collect();
        let gguf = permute_rows(&data, 3, 2, false);
        let rows: Vec<f32> = gguf.chunks(3).map(|r| r[0]).collect();
        // Per head, llama.cpp interleaves the halves: 0 2 1 3 | 4 6 5 7.
        assert_eq!(rows, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert_eq!(permute_rows(&gguf, 3, 2, true), data);
        for name in [
            "model.layers.3.self_attn.k_proj.weight",
            "lm_head.weight",
            "model.norm.weight",
        ] {
            let there = gguf_name(name).unwrap();
            assert_eq!(super::super::gguf::convert::hf_name(&there).unwrap(), name);
        }
        assert!(gguf_name("score.weight").is_none());
    }
}
