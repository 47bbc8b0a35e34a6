//! `tokenizer.json` through the `tokenizers` crate, with the chat template
//! of the `tokenizer_config.json` beside it.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::chat::{ChatTemplate, TOKENIZER_CONFIG};
use super::error::{ModelError, Result};

/// A model's tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The `tokenizer.json` it was loaded from.
    path: PathBuf,
    /// The `tokenizer_config.json` beside `tokenizer.json`, as this
    /// tokenizer uses it: a stage writes it into its output so the model
    /// it trains is prompted the way it was trained.
    config: Option<Json>,
    chat: Option<ChatTemplate>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").finish_non_exhaustive()
    }
}

impl Tokenizer {
    pub fn load(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let config_path = path.with_file_name(TOKENIZER_CONFIG);
        let config =
            match std::fs::read_to_string(&config_path) {
                Ok(text) => Some(serde_json::from_str::<Json>(&text).map_err(|e| {
                    ModelError::Tokenizer {
                        path: config_path.clone(),
                        reason: e.to_string(),
                    }
                })?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    return Err(ModelError::Tokenizer {
                        path: config_path,
                        reason: e.to_string(),
                    });
                }
            };
        let chat = match &config {
            Some(c) => ChatTemplate::from_config(c, &config_path)?,
            None => None,
        };
        Ok(Tokenizer {
            inner,
            path: path.to_path_buf(),
            config,
            chat,
        })
    }

    /// The chat template prompts are rendered with, if the model has one
    /// and it is in use.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat.as_ref()
    }

    /// Keeps the chat template (`keep`) or turns it off for good: off,
    /// prompts go to the model as they are, and a written config no longer
    /// carries the template.
    pub fn keep_chat_template(&mut self, keep: bool) {
        if !keep {
            self.chat = None;
            if let Some(Json::Object(c)) = &mut self.config {
                c.remove("chat_template");
            }
        }
    }

    /// Writes `tokenizer.json` and, when the model has one,
    /// `tokenizer_config.json` as this tokenizer uses it into `dir`, so a
    /// model folder written there is prompted the way it was trained.
    pub fn write_files(&self, dir: &Path) -> std::io::Result<()> {
        let json = dir.join("tokenizer.json");
        if std::fs::hard_link(&self.path, &json).is_err() {
            std::fs::copy(&self.path, &json)?;
        }
        match &self.config {
            Some(c) => std::fs::write(
                dir.join(TOKENIZER_CONFIG),
                serde_json::to_string_pretty(c).map_err(std::io::Error::other)?,
            ),
            None => Ok(()),
        }
    }

    /// Token ids of `text`, with the special tokens the tokenizer's
    /// post-processor adds (e.g. BOS) when `special` is set.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, special)
            .map_err(|e| ModelError::Tokenizer {
                path: "tokenizer.json".into(),
                reason: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, without special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| ModelError::Tokenizer {
                path: "tokenizer.json".into(),
                reason: e.to_string(),
            })
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}
