//! The model shape a stage is planned on: a local folder's `config.json`,
//! or a hub repository's, from the hub cache or fetched alone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::model::config::LlamaConfig;
use crate::model::source::{self, ModelSource, ResolveOptions};

/// Config lookups by (source, base folder), for [`model_config`].
type ConfigMemo = HashMap<(String, PathBuf), Result<LlamaConfig, String>>;

/// The model shape of a `model:` source, for planning: a local folder's
/// `config.json`, or a hub repository's from the hub cache, else fetched
/// alone (a few kB), never the weights. `Err` carries a note for `plan`
/// (offline with nothing cached, an unreadable file); it is never fatal.
/// Relative folders are taken from `base_dir` (the pipeline file's folder).
/// Answers are remembered for the process, so planning every preset asks
/// once.
pub fn model_config(source_text: &str, base_dir: &Path) -> Result<LlamaConfig, String> {
    static SEEN: OnceLock<Mutex<ConfigMemo>> = OnceLock::new();
    let key = (source_text.to_string(), base_dir.to_path_buf());
    let seen = SEEN.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(answer) = seen.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return answer;
    }
    let answer = lookup_config(source_text, base_dir, &ResolveOptions::from_env());
    if let Ok(mut map) = seen.lock() {
        map.insert(key, answer.clone());
    }
    answer
}

/// [`model_config`] without the memo, with explicit hub options.
pub fn lookup_config(
    source_text: &str,
    base_dir: &Path,
    options: &ResolveOptions,
) -> Result<LlamaConfig, String> {
    let parsed = source::parse(source_text).map_err(|e| e.to_string())?;
    let path = match parsed {
        ModelSource::Local(dir) => base_dir.join(dir).join("config.json"),
        ModelSource::Hub(repo) => hub_config(&repo, options)?,
    };
    LlamaConfig::load(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `config.json` of a hub repository: from the cache's snapshot for the
/// revision, else downloaded alone unless offline.
fn hub_config(repo: &source::HubRepo, options: &ResolveOptions) -> Result<PathBuf, String> {
    let folder = options
        .cache_dir
        .join(format!("models--{}--{}", repo.owner, repo.name));
    let revision = repo.revision();
    let commit = std::fs::read_to_string(folder.join("refs").join(revision))
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|_| revision.to_string());
    let cached = folder.join("snapshots").join(&commit).join("config.json");
    if cached.is_file() {
        return Ok(cached);
    }
    if options.offline {
        return Err(format!(
            "{}'s config.json is not in the hub cache {} and HF_HUB_OFFLINE is set: \
             memory not estimated",
            repo.repo_id(),
            options.cache_dir.display()
        ));
    }
    let api =
        hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(options.cache_dir.clone()))
            .with_endpoint(options.endpoint.clone())
            .with_token(options.token.as_ref().map(|t| t.expose().to_string()))
            .with_progress(false)
            .build()
            .map_err(|e| format!("cannot reach the hub for {}: {e}", repo.repo_id()))?;
    api.repo(hf_hub::Repo::with_revision(
        repo.repo_id(),
        hf_hub::RepoType::Model,
        revision.to_string(),
    ))
    .get("config.json")
    .map_err(|e| {
        format!(
            "cannot fetch {}'s config.json ({e}): memory not estimated",
            repo.repo_id()
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A hub model with nothing cached and the hub unreachable gives a note,
    /// never an error; a local folder's config is read.
    #[test]
    fn model_config_offline_is_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let options = ResolveOptions::from_vars(|key| match key {
            "HF_HUB_CACHE" => Some(dir.path().display().to_string()),
            "HF_HUB_OFFLINE" => Some("1".into()),
            _ => None,
        });
        let note = lookup_config("hf:meta-llama/Llama-3.1-8B", dir.path(), &options).unwrap_err();
        assert!(note.contains("HF_HUB_OFFLINE"), "{note}");

        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/llama");
        let config = lookup_config("gqa", &golden, &options).unwrap();
        let shape = (
            config.vocab_size,
            config.hidden_size,
            config.intermediate_size,
            config.num_layers,
            config.num_heads,
            config.num_kv_heads,
            config.head_dim,
        );
        assert_eq!(shape, (96, 32, 64, 2, 8, 2, 8));
    }
}
