//! A llama.cpp LLaMA in GGUF seen as a Hugging Face model: `config.json`
//! from the `llama.*` metadata, HF tensor names, Q/K rows in HF's
//! rotate-half order, and a `tokenizer.json` from `tokenizer.ggml.*`.
//! The same tables drive the way back (`export`).

use serde_json::{Value as Json, json};

use super::reader::{GgufFile, Value};
use crate::model::error::{ModelError, Result};
use crate::model::weights::{HostTensor, TensorMap};

/// Per-layer tensors: (GGUF suffix after `blk.N.`, HF suffix after
/// `model.layers.N.`).
pub const LAYER_NAMES: [(&str, &str); 9] = [
    ("attn_norm.weight", "input_layernorm.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("ffn_norm.weight", "post_attention_layernorm.weight"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
];

/// Whole-model tensors: (GGUF name, HF name).
pub const GLOBAL_NAMES: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// The HF name of a GGUF tensor, if it is one a LLaMA has.
pub fn hf_name(gguf: &str) -> Option<String> {
    if let Some((_, hf)) = GLOBAL_NAMES.iter().find(|(g, _)| *g == gguf) {
        return Some((*hf).to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (_, hf) = LAYER_NAMES.iter().find(|(g, _)| *g == suffix)?;
    Some(format!("model.layers.{layer}.{hf}"))
}

/// The GGUF name of an HF tensor, if it is one a LLaMA has.
pub fn gguf_name(hf: &str) -> Option<String> {
    if let Some((g, _)) = GLOBAL_NAMES.iter().find(|(_, h)| *h == hf) {
        return Some((*g).to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (g, _) = LAYER_NAMES.iter().find(|(_, h)| *h == suffix)?;
    Some(format!("blk.{layer}.{g}"))
}

/// llama.cpp's converter stores each head's rows of q_proj and k_proj
/// interleaved (row `2k + j` holds HF row `j * head_dim/2 + k`), the
/// layout its RoPE wants. `to_hf` undoes that; otherwise it is applied.
pub fn permute_rows(data: &[f32], cols: usize, heads: usize, to_hf: bool) -> Vec<f32> {
    let rows = data.len() / cols;
    let half = rows / heads / 2;
    let mut out = vec![0.0f32; data.len()];
    for h in 0..heads {
        for j in 0..2 {
            for k in 0..half {
                let hf = h * 2 * half + j * half + k;
                let gg = h * 2 * half + 2 * k + j;
                let (from, to) = if to_hf { (gg, hf) } else { (hf, gg) };
                out[to * cols..(to + 1) * cols]
                    .copy_from_slice(&data[from * cols..(from + 1) * cols]);
            }
        }
    }
    out
}

fn bad(file: &GgufFile, reason: String) -> ModelError {
    ModelError::Gguf {
        path: file.path.clone(),
        reason,
    }
}

fn int(file: &GgufFile, key: &str) -> Result<Option<usize>> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_int()
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < 1 << 40)
            .map(Some)
            .ok_or_else(|| bad(file, format!("`{key}` is not a sensible count: {v:?}"))),
    }
}

fn need(file: &GgufFile, key: &str) -> Result<usize> {
    int(file, key)?
        .filter(|&n| n > 0)
        .ok_or_else(|| bad(file, format!("metadata `{key}` is missing or zero")))
}

/// The `config.json` of the model in `file`.
pub fn config_json(file: &GgufFile) -> Result<Json> {
    let arch = file
        .get("general.architecture")
        .and_then(Value::as_str)
        .unwrap_or("");
    if arch != "llama" {
        return Err(ModelError::Unsupported {
            path: file.path.clone(),
            what: format!("architecture `{arch}`"),
            hint: "only LLaMA-family GGUF files (general.architecture = llama) are read".into(),
        });
    }
    if file.tensor("rope_freqs.weight").is_some() || file.get("llama.rope.scaling.type").is_some() {
        return Err(ModelError::Unsupported {
            path: file.path.clone(),
            what: "RoPE scaling".into(),
            hint: "GGUF files with RoPE scaling (Llama 3.1's rope_freqs) are not read yet; \
                   use the model's Hugging Face folder or `hf:` source"
                .into(),
        });
    }
    let hidden = need(file, "llama.embedding_length")?;
    let heads = need(file, "llama.attention.head_count")?;
    let kv_heads = int(file, "llama.attention.head_count_kv")?.unwrap_or(heads);
    let head_dim = int(file, "llama.attention.key_length")?.unwrap_or(hidden / heads);
    let vocab = match file.get("tokenizer.ggml.tokens").and_then(Value::as_array) {
        Some(tokens) => tokens.len(),
        None => need(file, "llama.vocab_size")?,
    };
    let eps = file
        .get("llama.attention.layer_norm_rms_epsilon")
        .and_then(Value::as_float)
        .unwrap_or(1e-5);
    let theta = file
        .get("llama.rope.freq_base")
        .and_then(Value::as_float)
        .unwrap_or(10_000.0);
    let token = |key: &str| int(file, &format!("tokenizer.ggml.{key}_token_id"));
    Ok(json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": need(file, "llama.feed_forward_length")?,
        "num_hidden_layers": need(file, "llama.block_count")?,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "rms_norm_eps": eps,
        "rope_theta": theta,
        "max_position_embeddings": int(file, "llama.context_length")?.unwrap_or(2048),
        "tie_word_embeddings": file.tensor("output.weight").is_none(),
        "bos_token_id": token("bos")?,
        "eos_token_id": token("eos")?,
        "pad_token_id": token("padding")?,
        "torch_dtype": "float32",
    }))
}

/// Every tensor of `file` under its HF name, dequantized to f32, with q_proj
/// and k_proj back in HF's row order.
pub fn tensors(file: &GgufFile, heads: usize, kv_heads: usize) -> Result<TensorMap> {
    let mut out = TensorMap::new();
    for info in &file.tensors {
        let name = hf_name(&info.name).ok_or_else(|| {
            bad(
                file,
                format!("tensor `{}` is not part of a LLaMA", info.name),
            )
        })?;
        let shape = info.shape();
        let mut data = file.dequantize(info);
        let permuted = if name.ends_with("q_proj.weight") {
            Some(heads)
        } else if name.ends_with("k_proj.weight") {
            Some(kv_heads)
        } else {
            None
        };
        if let Some(h) = permuted {
            let rows = shape[0];
            if shape.len() != 2 || !rows.is_multiple_of(2 * h) {
                return Err(bad(
                    file,
                    format!("`{}` has shape {shape:?} for {h} heads", info.name),
                ));
            }
            data = permute_rows(&data, shape[1], h, true);
        }
        out.insert(name, HostTensor::new(shape, data));
    }
    Ok(out)
}

/// Special-token strings from `tokenizer.ggml.*_token_id`, for
/// `tokenizer_config.json`.
fn token_text(tokens: &[Value], id: Option<usize>) -> Json {
    id.and_then(|i| tokens.get(i))
        .and_then(Value::as_str)
        .map_or(Json::Null, |s| Json::String(s.to_string()))
}

/// The pre-tokenizer llama.cpp names `pre` (the regex families of the
/// byte-level BPE models it converts).
fn pre_tokenizer(file: &GgufFile, pre: &str) -> Result<Json> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    Ok(match pre {
        "default" | "gpt2" | "gpt-2" => byte_level(true),
        "smollm" | "starcoder" | "refact" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            byte_level(true),
        ]}),
        "llama-bpe" | "llama3" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": false},
            byte_level(false),
        ]}),
        other => {
            return Err(ModelError::Unsupported {
                path: file.path.clone(),
                what: format!("tokenizer pre-tokenizer `{other}`"),
                hint: "gpt2, smollm/starcoder and llama-bpe byte-level BPE tokenizers are read; \
                       use the model's Hugging Face folder for others"
                    .into(),
            });
        }
    })
}

/// Llama 3's split regex (as published in its tokenizer.json).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `tokenizer.json` and `tokenizer_config.json` of the byte-level BPE
/// tokenizer in `tokenizer.ggml.*`. Control tokens (type 3) become special
/// added tokens, user-defined ones (type 4) plain added tokens.
pub fn tokenizer_files(file: &GgufFile) -> Result<(Json, Json)> {
    let text = |key: &str| file.get(key).and_then(Value::as_str);
    let model = text("tokenizer.ggml.model").unwrap_or("");
    if model != "gpt2" {
        return Err(ModelError::Unsupported {
            path: file.path.clone(),
            what: format!("tokenizer model `{model}`"),
            hint: "only byte-level BPE (`gpt2`) GGUF tokenizers are read; use the model's \
                   Hugging Face folder for SentencePiece models"
                .into(),
        });
    }
    let list = |key: &str| {
        file.get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| bad(file, format!("metadata `{key}` is missing")))
    };
    let tokens = list("tokenizer.ggml.tokens")?;
    let merges = list("tokenizer.ggml.merges")?;
    let types = file
        .get("tokenizer.ggml.token_type")
        .and_then(Value::as_array);
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    let mut added = Vec::new();
    for (id, token) in tokens.iter().enumerate() {
        let token = token
            .as_str()
            .ok_or_else(|| bad(file, format!("token {id} is not a string")))?;
        vocab.insert(token.to_string(), json!(id));
        let ty = types
            .and_then(|t| t.get(id))
            .and_then(Value::as_int)
            .unwrap_or(1);
        if ty == 3 || ty == 4 {
            added.push(
                json!({"id": id, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": ty == 3}),
            );
        }
    }
    let merges: Vec<Json> = merges
        .iter()
        .map(|m| m.as_str().map(|s| Json::String(s.to_string())))
        .collect::<Option<_>>()
        .ok_or_else(|| bad(file, "a merge is not a string".into()))?;
    let pre = pre_tokenizer(file, text("tokenizer.ggml.pre").unwrap_or("default"))?;
    let id = |key: &str| int(file, &format!("tokenizer.ggml.{key}_token_id"));
    let bos = id("bos")?;
    let add_bos = matches!(
        file.get("tokenizer.ggml.add_bos_token"),
        Some(Value::Bool(true))
    );
    let post = match (
        add_bos,
        bos.and_then(|b| tokens.get(b)).and_then(Value::as_str),
    ) {
        (true, Some(bos_text)) => json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos_text, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos_text, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos_text, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos_text: {"id": bos_text, "ids": [bos], "tokens": [bos_text]}}}),
        _ => {
            json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true})
        }
    };
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre,
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges},
    });
    let mut config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": add_bos,
        "bos_token": token_text(tokens, bos),
        "eos_token": token_text(tokens, id("eos")?),
        "pad_token": token_text(tokens, id("padding")?),
        "unk_token": token_text(tokens, id("unknown")?),
    });
    if let Some(template) = text("tokenizer.chat_template") {
        config["chat_template"] = Json::String(template.to_string());
    }
    Ok((tokenizer, config))
}
