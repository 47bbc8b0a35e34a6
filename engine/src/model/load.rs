//! Opening a model directory as users hand it to us: an HF-layout model
//! (config.json, safetensors, tokenizer.json), optionally with a PEFT LoRA
//! adapter in the same directory, or an adapter-only directory whose
//! `base_model_name_or_path` is a local model directory.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::backend::Backend;

use super::error::{ModelError, Result};
use super::llama::Llama;
use super::lora::{self, LoraConfig};
use super::tokenizer::Tokenizer;

/// A loaded model with its tokenizer and adapter, if any.
#[derive(Debug)]
pub struct Loaded<B: Backend> {
    pub model: Llama<B>,
    pub tokenizer: Tokenizer,
    pub adapter: Option<LoraConfig>,
    /// The directory the base weights came from.
    pub base_dir: PathBuf,
}

#[derive(Deserialize)]
struct AdapterBase {
    base_model_name_or_path: Option<String>,
}

/// The base model directory for `dir`: `dir` itself when it holds
/// config.json, else the local `base_model_name_or_path` of its adapter
/// (relative to `dir` or absolute).
pub fn base_dir(dir: &Path) -> Result<PathBuf> {
    if dir.join("config.json").exists() {
        return Ok(dir.to_path_buf());
    }
    let path = dir.join("adapter_config.json");
    if !path.exists() {
        return Err(ModelError::io(
            dir.join("config.json"),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no config.json and no adapter_config.json",
            ),
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
    let cfg: AdapterBase = serde_json::from_str(&text).map_err(|e| ModelError::Adapter {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let base = cfg.base_model_name_or_path.unwrap_or_default();
    let candidate = dir.join(&base);
    if !base.is_empty() && candidate.join("config.json").exists() {
        Ok(candidate)
    } else {
        Err(ModelError::Adapter {
            path,
            reason: format!(
                "base_model_name_or_path `{base}` is not a local model directory; put the adapter beside the base model's config.json or point it at one"
            ),
        })
    }
}

/// Loads `dir` as described in the module docs.
pub fn load_dir<B: Backend>(be: &B, dir: &Path) -> Result<Loaded<B>> {
    let base = base_dir(dir)?;
    let mut model = Llama::load(be, &base)?;
    let adapter = if lora::has_adapter(dir) {
        Some(lora::load(be, &mut model, dir)?)
    } else {
        None
    };
    let tok_path = if dir.join("tokenizer.json").exists() {
        dir.join("tokenizer.json")
    } else {
        base.join("tokenizer.json")
    };
    let tokenizer = Tokenizer::load(&tok_path)?;
    Ok(Loaded {
        model,
        tokenizer,
        adapter,
        base_dir: base,
    })
}
