//! llama.cpp's GGUF format, both ways. A `gguf:FILE` model source becomes a
//! small Hugging Face-layout folder in the cache (config.json,
//! tokenizer.json, tokenizer_config.json with the chat template, and a link
//! `model.gguf` to the file), so every loader that takes a model folder takes
//! a GGUF file; the weights are dequantized from the file at load time into
//! the same name -> f32 tensor map the safetensors reader gives. `export`
//! writes GGUF files through [`writer`].

pub mod convert;
pub mod quant;
pub mod reader;
pub mod writer;

use std::path::{Path, PathBuf};

use crate::model::error::{ModelError, Result};
use crate::model::weights::TensorMap;

pub use reader::GgufFile;

/// The link to the GGUF file inside a converted folder.
pub const GGUF_LINK: &str = "model.gguf";
/// Bumped whenever the files [`materialize`] writes change, so old folders
/// are not reused.
const FOLDER_VERSION: u32 = 1;

/// Every tensor of a GGUF file under its HF name, as f32.
pub fn load_tensors(path: &Path) -> Result<TensorMap> {
    let file = GgufFile::open(path)?;
    let config = convert::config_json(&file)?;
    let count = |key: &str| config[key].as_u64().unwrap_or(0) as usize;
    convert::tensors(
        &file,
        count("num_attention_heads"),
        count("num_key_value_heads"),
    )
}

/// The HF-layout folder of the GGUF file at `path`, under `cache`, keyed by
/// the file's content: made on first use, reused after.
pub fn materialize(path: &Path, cache: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path).map_err(|e| ModelError::io(path, e))?;
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_mmap_rayon(&abs)
        .map_err(|e| ModelError::io(&abs, e))?;
    let key = hasher.finalize().to_hex();
    let dir = cache.join(format!("{}-v{FOLDER_VERSION}", &key[..32]));
    if !dir.join("config.json").is_file() {
        write_folder(&abs, cache, &dir)?;
    }
    let link = dir.join(GGUF_LINK);
    if std::fs::read_link(&link).ok().as_deref() != Some(abs.as_path()) {
        let _ = std::fs::remove_file(&link);
        symlink(&abs, &link)?;
    }
    Ok(dir)
}

fn symlink(target: &Path, link: &Path) -> Result<()> {
    #[cfg(unix)]
    let made = std::os::unix::fs::symlink(target, link);
    #[cfg(not(unix))]
    let made = std::fs::copy(target, link).map(|_| ());
    made.map_err(|source| ModelError::Write {
        path: link.to_path_buf(),
        source,
    })
}

/// Writes the folder into a temporary sibling, then renames it into place.
fn write_folder(abs: &Path, cache: &Path, dir: &Path) -> Result<()> {
    let file = GgufFile::open(abs)?;
    let config = convert::config_json(&file)?;
    let (tokenizer, tokenizer_config) = convert::tokenizer_files(&file)?;
    let text = tokenizer.to_string();
    tokenizers::Tokenizer::from_bytes(text.as_bytes()).map_err(|e| ModelError::Gguf {
        path: abs.to_path_buf(),
        reason: format!("its tokenizer metadata does not make a valid tokenizer: {e}"),
    })?;
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Write { path, source }
    };
    std::fs::create_dir_all(cache).map_err(write_err(cache))?;
    let tmp = tempfile::tempdir_in(cache).map_err(write_err(cache))?;
    for (name, body) in [
        (
            "config.json",
            serde_json::to_string_pretty(&config).unwrap_or_default(),
        ),
        ("tokenizer.json", text),
        (
            "tokenizer_config.json",
            serde_json::to_string_pretty(&tokenizer_config).unwrap_or_default(),
        ),
    ] {
        let path = tmp.path().join(name);
        std::fs::write(&path, body).map_err(write_err(&path))?;
    }
    let tmp = tmp.keep();
    if std::fs::rename(&tmp, dir).is_err() {
        // Another process made the same folder first: theirs is as good.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}
