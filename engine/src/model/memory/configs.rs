//! The model shape a stage is planned on: a local folder's `config.json`,
//! or a hub repository's, from the hub cache or fetched alone, else, for the
//! Llama 3.x bases the recipes name, the `config.json` this binary carries
//! (so `plan` and `validate` work offline and before a gated repository has
//! granted access).

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
/// (offline with nothing cached and no built-in shape, an unreadable file);
/// it is never fatal.
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
        ModelSource::Hub(repo) => match (hub_config(&repo, options), builtin(&repo)) {
            (Ok(path), _) => path,
            (Err(_), Some((name, text))) => {
                return LlamaConfig::parse(text, Path::new(name)).map_err(|e| e.to_string());
            }
            (Err(note), None) => return Err(note),
        },
        ModelSource::Gguf(file) => {
            source::resolve(&ModelSource::Gguf(base_dir.join(file)), options)
                .map_err(|e| e.to_string())?
                .config
        }
    };
    LlamaConfig::load(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The `config.json` of each Llama 3.x base the recipes plan on, written
/// from Meta's published architecture (width, depth, heads, vocabulary,
/// RoPE scaling, tied embeddings), with the repository names (base and
/// instruct, which share the shape) that stand for it.
const BUILTIN: [(&str, &[&str], &str); 4] = [
    (
        "<built-in Llama 3.1 8B config.json>",
        &["Llama-3.1-8B", "Meta-Llama-3.1-8B"],
        include_str!("bases/llama-3.1-8b.json"),
    ),
    (
        "<built-in Llama 3.1 70B config.json>",
        &["Llama-3.1-70B", "Meta-Llama-3.1-70B"],
        include_str!("bases/llama-3.1-70b.json"),
    ),
    (
        "<built-in Llama 3.2 1B config.json>",
        &["Llama-3.2-1B"],
        include_str!("bases/llama-3.2-1b.json"),
    ),
    (
        "<built-in Llama 3.2 3B config.json>",
        &["Llama-3.2-3B"],
        include_str!("bases/llama-3.2-3b.json"),
    ),
];

/// The built-in `config.json` (its display name and text) of a
/// `meta-llama` repository, base or `-Instruct`, at any revision.
fn builtin(repo: &source::HubRepo) -> Option<(&'static str, &'static str)> {
    if !repo.owner.eq_ignore_ascii_case("meta-llama") {
        return None;
    }
    let name = repo.name.strip_suffix("-Instruct").unwrap_or(&repo.name);
    BUILTIN
        .iter()
        .find(|(_, names, _)| names.iter().any(|n| n.eq_ignore_ascii_case(name)))
        .map(|(display, _, text)| (*display, *text))
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

    fn offline(cache: &Path) -> ResolveOptions {
        ResolveOptions::from_vars(|key| match key {
            "HF_HUB_CACHE" => Some(cache.display().to_string()),
            "HF_HUB_OFFLINE" => Some("1".into()),
            _ => None,
        })
    }

    fn shape(c: &LlamaConfig) -> [usize; 8] {
        [
            c.vocab_size,
            c.hidden_size,
            c.intermediate_size,
            c.num_layers,
            c.num_heads,
            c.num_kv_heads,
            c.head_dim,
            usize::from(c.tie_word_embeddings),
        ]
    }

    /// A hub model with nothing cached, the hub unreachable and no built-in
    /// shape gives a note, never an error; a local folder's config is read.
    #[test]
    fn model_config_offline_is_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let options = offline(dir.path());
        let note = lookup_config("hf:someone/Llama-3.1-8B", dir.path(), &options).unwrap_err();
        assert!(note.contains("HF_HUB_OFFLINE"), "{note}");

        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/llama");
        let config = lookup_config("gqa", &golden, &options).unwrap();
        assert_eq!(shape(&config), [96, 32, 64, 2, 8, 2, 8, 0]);
    }

    /// Offline with an empty hub cache, every Llama 3.x base (base and
    /// instruct, any revision) has the published shape; the parameter count
    /// is the published one (8.03 B, 70.6 B, 1.24 B, 3.21 B).
    #[test]
    fn llama3_bases_are_built_in() {
        let dir = tempfile::tempdir().unwrap();
        let options = offline(dir.path());
        let published = [
            (
                "Llama-3.1-8B",
                [128_256, 4096, 14_336, 32, 32, 8, 128, 0],
                8_030_261_248,
            ),
            (
                "Meta-Llama-3.1-8B-Instruct",
                [128_256, 4096, 14_336, 32, 32, 8, 128, 0],
                8_030_261_248,
            ),
            (
                "Llama-3.1-70B@main",
                [128_256, 8192, 28_672, 80, 64, 8, 128, 0],
                70_553_706_496,
            ),
            (
                "Llama-3.2-1B-Instruct",
                [128_256, 2048, 8192, 16, 32, 8, 64, 1],
                1_235_814_400,
            ),
            (
                "Llama-3.2-3B",
                [128_256, 3072, 8192, 28, 24, 8, 128, 1],
                3_212_749_824,
            ),
        ];
        for (name, want, params) in published {
            let source = format!("hf:meta-llama/{name}");
            let config = lookup_config(&source, dir.path(), &options).unwrap();
            assert_eq!(shape(&config), want, "{name}");
            assert_eq!(
                crate::model::memory::param_counts(&config).causal_lm,
                params,
                "{name}"
            );
        }
    }

    /// The built-in 8B config reads as the published config.json does.
    #[test]
    fn the_built_in_8b_config_is_the_published_one() {
        let dir = tempfile::tempdir().unwrap();
        let built_in = lookup_config(
            "hf:meta-llama/Llama-3.1-8B",
            dir.path(),
            &offline(dir.path()),
        )
        .unwrap();
        let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/golden/memory/llama-3.1-8b-config.json");
        assert_eq!(built_in, LlamaConfig::load(&golden).unwrap());
    }

    /// A config.json in the hub cache wins over the built-in one.
    #[test]
    fn a_cached_config_wins_over_the_built_in() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("models--meta-llama--Llama-3.1-8B");
        let snapshot = folder.join("snapshots").join("abc123");
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::create_dir_all(folder.join("refs")).unwrap();
        std::fs::write(folder.join("refs").join("main"), "abc123").unwrap();
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/llama/gqa");
        std::fs::copy(golden.join("config.json"), snapshot.join("config.json")).unwrap();
        let config = lookup_config(
            "hf:meta-llama/Llama-3.1-8B",
            dir.path(),
            &offline(dir.path()),
        )
        .unwrap();
        assert_eq!(shape(&config), [96, 32, 64, 2, 8, 2, 8, 0]);
    }
}
