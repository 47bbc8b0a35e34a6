//! Where a model comes from: a local directory in the Hugging Face layout, a
//! repository on the hub (`hf:owner/name[@revision]`), or a llama.cpp GGUF
//! file (`gguf:FILE`). Resolving a source yields a local directory with the
//! files the loader reads (for GGUF, a folder made from the file's metadata
//! that links to it), and a canonical identity for stage hashes that pins the
//! exact hub commit and never carries the access token.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use miette::Diagnostic;
use serde::Serialize;
use thiserror::Error;

use super::hub;

/// The file that holds a model's architecture.
pub const CONFIG_FILE: &str = "config.json";
/// The tokenizer in the `tokenizers` crate's format.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Unsharded weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The index of sharded weights: tensor name -> shard file.
pub const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";
/// PEFT adapter configuration.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
/// PEFT adapter weights.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// Files fetched from the hub when present, for tools that expect them
/// beside the model; the loader itself does not need them.
pub const OPTIONAL_FILES: [&str; 3] = [
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
];

/// A parsed model source string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// `hf:owner/name[@revision]`.
    Hub(HubRepo),
    /// A directory in the Hugging Face layout.
    Local(PathBuf),
    /// `gguf:FILE`, a llama.cpp model file.
    Gguf(PathBuf),
}

/// A model repository on the hub, with the revision asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubRepo {
    pub owner: String,
    pub name: String,
    /// Branch, tag or commit; `None` means the hub's default, `main`.
    pub revision: Option<String>,
}

impl HubRepo {
    /// `owner/name`, the hub's repository id.
    pub fn repo_id(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// The revision to ask the hub for.
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Hub(repo) => match &repo.revision {
                Some(rev) => write!(f, "hf:{}@{rev}", repo.repo_id()),
                None => write!(f, "hf:{}", repo.repo_id()),
            },
            ModelSource::Local(path) => write!(f, "{}", path.display()),
            ModelSource::Gguf(path) => write!(f, "gguf:{}", path.display()),
        }
    }
}

impl FromStr for ModelSource {
    type Err = SourceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse(text)
    }
}

/// Everything that can go wrong while parsing or resolving a model source.
/// No variant ever holds the hub token.
#[derive(Debug, Error, Diagnostic)]
pub enum SourceError {
    #[error("invalid model source `{input}`: {reason}")]
    #[diagnostic(
        code(model::source::syntax),
        help(
            "write `hf:owner/name`, `hf:owner/name@revision` (a branch, tag or commit), \
             `gguf:FILE` (a llama.cpp model file), or the path of a local model directory"
        )
    )]
    Syntax { input: String, reason: String },

    #[error("model directory `{}` does not exist or is not a directory", dir.display())]
    #[diagnostic(
        code(model::source::no_dir),
        help("check the path; hub models are written `hf:owner/name`")
    )]
    NoDirectory { dir: PathBuf },

    #[error("model directory `{}` lacks {}", dir.display(), missing.join(", "))]
    #[diagnostic(code(model::source::missing_files), help("{hint}"))]
    MissingFiles {
        dir: PathBuf,
        missing: Vec<String>,
        hint: String,
    },

    #[error("cannot read the weight index `{}`: {reason}", path.display())]
    #[diagnostic(
        code(model::source::bad_index),
        help(
            "the index must be JSON with a `weight_map` object from tensor name to shard file; \
             re-download or re-save the model"
        )
    )]
    BadIndex { path: PathBuf, reason: String },

    #[error("cannot read `{}`: {source}", path.display())]
    #[diagnostic(code(model::source::io))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    #[diagnostic(transparent)]
    Hub(#[from] hub::HubError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Gguf(#[from] super::error::ModelError),
}

/// How hub sources are reached: the endpoint, the cache, the token and
/// whether the network may be used at all.
#[derive(Clone, Debug)]
pub struct ResolveOptions {
    /// Base URL of the hub, `https://huggingface.co` unless `HF_ENDPOINT`.
    pub endpoint: String,
    /// The hub cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `~/.cache/huggingface/hub`), shared with the Python tools.
    pub cache_dir: PathBuf,
    /// Sent to the hub as a bearer token; redacted in every printout.
    pub token: Option<hub::HubToken>,
    /// Use only the cache (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Draw download progress bars: on a terminal, unless
    /// `HF_HUB_DISABLE_PROGRESS_BARS` is set.
    pub progress: bool,
    /// Where folders made from GGUF files go: `gguf/` in the stage cache
    /// (`$POKER_PIPE_CACHE`, else `.poker-pipe`).
    pub gguf_cache: PathBuf,
}

impl ResolveOptions {
    /// Options from the process environment, as the Python hub client reads
    /// them, so one cache and one login serve both.
    pub fn from_env() -> Self {
        Self::from_vars(|key| std::env::var(key).ok())
    }

    /// Options from any variable lookup; `from_env` with the real one. The
    /// token comes from `HF_TOKEN`, else `HUGGING_FACE_HUB_TOKEN`, else the
    /// file `$HF_HOME/token` that `huggingface-cli login` writes.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let non_empty = |key: &str| var(key).filter(|value| !value.trim().is_empty());
        let hf_home = non_empty("HF_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home_dir(&var).join(".cache").join("huggingface"));
        let cache_dir = non_empty("HF_HUB_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token = non_empty("HF_TOKEN")
            .or_else(|| non_empty("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| std::fs::read_to_string(hf_home.join("token")).ok())
            .and_then(|text| hub::HubToken::new(&text));
        let endpoint = non_empty("HF_ENDPOINT")
            .map(|url| url.trim_end_matches('/').to_string())
            .unwrap_or_else(|| hub::DEFAULT_ENDPOINT.to_string());
        let offline = non_empty("HF_HUB_OFFLINE").is_some_and(|value| is_true(&value));
        let gguf_cache = non_empty("POKER_PIPE_CACHE")
            .map_or_else(|| PathBuf::from(".poker-pipe"), PathBuf::from)
            .join("gguf");
        ResolveOptions {
            gguf_cache,
            endpoint,
            cache_dir,
            token,
            offline,
            progress: std::io::IsTerminal::is_terminal(&std::io::stderr())
                && !non_empty("HF_HUB_DISABLE_PROGRESS_BARS").is_some_and(|v| is_true(&v)),
        }
    }
}

fn home_dir(var: &impl Fn(&str) -> Option<String>) -> PathBuf {
    var("HOME")
        .or_else(|| var("USERPROFILE"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The hub's own reading of boolean variables (`1`, `true`, `yes`, `on`).
fn is_true(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// Parse `hf:owner/name[@revision]` or a directory path. Anything starting
/// with `hf:` must be a well-formed repository id; everything else is a path.
pub fn parse(text: &str) -> Result<ModelSource, SourceError> {
    let syntax = |reason: &str| SourceError::Syntax {
        input: text.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(syntax("it is empty"));
    }
    if let Some(file) = trimmed.strip_prefix("gguf:") {
        if file.is_empty() {
            return Err(syntax("the file after `gguf:` is empty"));
        }
        return Ok(ModelSource::Gguf(PathBuf::from(file)));
    }
    let Some(rest) = trimmed.strip_prefix("hf:") else {
        return Ok(ModelSource::Local(PathBuf::from(trimmed)));
    };
    let (id, revision) = match rest.split_once('@') {
        Some((id, rev)) => {
            if rev.is_empty() {
                return Err(syntax("the revision after `@` is empty"));
            }
            let odd = |c: char| c.is_whitespace() || c == '@' || c == '\\';
            if rev.chars().any(odd) || rev.contains("..") || rev.starts_with('/') {
                return Err(syntax(
                    "the revision contains a space, `@`, `\\` or `..`, or starts with `/`",
                ));
            }
            (id, Some(rev.to_string()))
        }
        None => (rest, None),
    };
    let Some((owner, name)) = id.split_once('/') else {
        return Err(syntax("a hub repository id has the form `owner/name`"));
    };
    for (part, what) in [(owner, "owner"), (name, "name")] {
        if part.is_empty() {
            return Err(syntax(&format!("the {what} is empty")));
        }
        if !part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(syntax(&format!(
                "the {what} `{part}` may only hold letters, digits, `-`, `_` and `.`"
            )));
        }
        if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) || part.contains("..") {
            return Err(syntax(&format!(
                "the {what} `{part}` may not start or end with `-` or `.`, nor hold `..`"
            )));
        }
    }
    Ok(ModelSource::Hub(HubRepo {
        owner: owner.to_string(),
        name: name.to_string(),
        revision,
    }))
}

/// The weight files of a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Weights {
    /// One `model.safetensors`.
    Single(PathBuf),
    /// `model.safetensors.index.json` and the distinct shards it names, in
    /// the order they first appear in the index.
    Sharded {
        index: PathBuf,
        shards: Vec<PathBuf>,
    },
    /// A GGUF file (the target of a converted folder's `model.gguf`).
    Gguf(PathBuf),
}

/// A PEFT adapter stored beside the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterFiles {
    pub config: PathBuf,
    pub weights: PathBuf,
}

/// What a source names, exactly: a hub repository at a commit, or a
/// directory. Serialised into manifests and hashed into stage hashes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum ModelIdentity {
    Hub {
        repo: String,
        /// The revision as the user wrote it (default `main`).
        revision: String,
        /// The commit it resolved to.
        commit: String,
    },
    Local {
        /// The directory, made absolute. Its files' contents are hashed
        /// separately, so moving a directory is the only thing this misses.
        dir: PathBuf,
    },
    Gguf {
        /// The file, made absolute; its content is hashed separately.
        file: PathBuf,
    },
}

impl ModelIdentity {
    /// A short canonical string: `hf:owner/name@commit` or `dir:/abs/path`.
    pub fn canonical(&self) -> String {
        match self {
            ModelIdentity::Hub { repo, commit, .. } => format!("hf:{repo}@{commit}"),
            ModelIdentity::Local { dir } => format!("dir:{}", dir.display()),
            ModelIdentity::Gguf { file } => format!("gguf:{}", file.display()),
        }
    }
}

/// A source made local: the directory and the files the loader reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedModel {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub tokenizer: PathBuf,
    pub weights: Weights,
    pub adapter: Option<AdapterFiles>,
    pub identity: ModelIdentity,
}

impl ResolvedModel {
    /// Every file the model consists of, for content hashing.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.config.clone(), self.tokenizer.clone()];
        match &self.weights {
            Weights::Single(path) => files.push(path.clone()),
            Weights::Sharded { index, shards } => {
                files.push(index.clone());
                files.extend(shards.iter().cloned());
            }
            Weights::Gguf(path) => files.push(path.clone()),
        }
        if let Some(adapter) = &self.adapter {
            files.push(adapter.config.clone());
            files.push(adapter.weights.clone());
        }
        files
    }
}

/// Make a source local: a directory is checked in place; a hub repository
/// is downloaded into the hub cache (or found there when offline).
pub fn resolve(
    source: &ModelSource,
    options: &ResolveOptions,
) -> Result<ResolvedModel, SourceError> {
    match source {
        ModelSource::Local(dir) => {
            let dir = std::path::absolute(dir).map_err(|source| SourceError::Io {
                path: dir.clone(),
                source,
            })?;
            let identity = ModelIdentity::Local { dir: dir.clone() };
            inspect_dir(&dir, identity)
        }
        ModelSource::Hub(repo) => hub::resolve(repo, options),
        ModelSource::Gguf(file) => {
            let file = gguf_file(file)?;
            let dir = super::gguf::materialize(&file, &options.gguf_cache)?;
            inspect_dir(&dir, ModelIdentity::Gguf { file })
        }
    }
}

/// The absolute path of a GGUF source's file, which must exist.
fn gguf_file(file: &Path) -> Result<PathBuf, SourceError> {
    let abs = std::path::absolute(file).map_err(|source| SourceError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    if !abs.is_file() {
        return Err(SourceError::Io {
            path: abs,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such GGUF file"),
        });
    }
    Ok(abs)
}

/// The model folder a source names on this machine: a directory as given,
/// a hub or GGUF source resolved (downloaded or converted) first. For
/// commands that take `--model`.
pub fn local_dir(text: &str) -> Result<PathBuf, SourceError> {
    match parse(text)? {
        ModelSource::Local(dir) => Ok(dir),
        source => Ok(resolve(&source, &ResolveOptions::from_env())?.dir),
    }
}

/// What a source names, without downloading anything: a local directory's
/// absolute path, or a hub repository's current commit (one API request;
/// offline, the cache's record). `resolve` later yields the same identity.
pub fn identify(
    source: &ModelSource,
    options: &ResolveOptions,
) -> Result<ModelIdentity, SourceError> {
    match source {
        ModelSource::Local(dir) => {
            let dir = std::path::absolute(dir).map_err(|source| SourceError::Io {
                path: dir.clone(),
                source,
            })?;
            Ok(ModelIdentity::Local { dir })
        }
        ModelSource::Hub(repo) => hub::identify(repo, options),
        ModelSource::Gguf(file) => Ok(ModelIdentity::Gguf {
            file: gguf_file(file)?,
        }),
    }
}

/// Check a directory in the Hugging Face layout and list its model files.
/// Every missing file is named at once, so one fix suffices.
pub fn inspect_dir(dir: &Path, identity: ModelIdentity) -> Result<ResolvedModel, SourceError> {
    if !dir.is_dir() {
        return Err(SourceError::NoDirectory {
            dir: dir.to_path_buf(),
        });
    }
    let mut missing = Vec::new();
    let mut require = |name: &str| {
        let path = dir.join(name);
        if !path.is_file() {
            missing.push(name.to_string());
        }
        path
    };
    let config = require(CONFIG_FILE);
    let tokenizer = require(TOKENIZER_FILE);
    let index = dir.join(WEIGHTS_INDEX_FILE);
    let weights = if index.is_file() {
        let shards = shard_names(&index)?
            .into_iter()
            .map(|name| require(&name))
            .collect();
        Weights::Sharded { index, shards }
    } else if !dir.join(WEIGHTS_FILE).exists() && dir.join(super::gguf::GGUF_LINK).exists() {
        let link = dir.join(super::gguf::GGUF_LINK);
        Weights::Gguf(std::fs::canonicalize(&link).unwrap_or(link))
    } else {
        Weights::Single(require(WEIGHTS_FILE))
    };
    let adapter_config = dir.join(ADAPTER_CONFIG_FILE);
    let adapter_weights = dir.join(ADAPTER_WEIGHTS_FILE);
    let adapter = match (adapter_config.is_file(), adapter_weights.is_file()) {
        (true, true) => Some(AdapterFiles {
            config: adapter_config,
            weights: adapter_weights,
        }),
        (false, false) => None,
        (true, false) => {
            missing.push(ADAPTER_WEIGHTS_FILE.to_string());
            None
        }
        (false, true) => {
            missing.push(ADAPTER_CONFIG_FILE.to_string());
            None
        }
    };
    if !missing.is_empty() {
        return Err(SourceError::MissingFiles {
            dir: dir.to_path_buf(),
            missing,
            hint: format!(
                "a model directory holds {CONFIG_FILE}, {TOKENIZER_FILE} and either \
                 {WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE} with its shards (a PEFT adapter adds \
                 {ADAPTER_CONFIG_FILE} and {ADAPTER_WEIGHTS_FILE}); save it with \
                 `save_pretrained` or point at a stage output"
            ),
        });
    }
    Ok(ResolvedModel {
        dir: dir.to_path_buf(),
        config,
        tokenizer,
        weights,
        adapter,
        identity,
    })
}

/// The distinct shard files a weight index names, in first-seen order.
/// Shard names must be plain file names: an index must not reach outside
/// its directory.
pub fn shard_names(index: &Path) -> Result<Vec<String>, SourceError> {
    let bad = |reason: String| SourceError::BadIndex {
        path: index.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(index).map_err(|source| SourceError::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|err| bad(err.to_string()))?;
    let map = json
        .get("weight_map")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| bad("no `weight_map` object".to_string()))?;
    let mut shards: Vec<String> = Vec::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("the shard of `{tensor}` is not a string")))?;
        let plain = Path::new(file)
            .file_name()
            .is_some_and(|name| name == std::ffi::OsStr::new(file));
        if !plain || file == ".." {
            return Err(bad(format!("shard `{file}` is not a plain file name")));
        }
        if !shards.iter().any(|known| known == file) {
            shards.push(file.to_string());
        }
    }
    if shards.is_empty() {
        return Err(bad("the `weight_map` is empty".to_string()));
    }
    Ok(shards)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn hub(owner: &str, name: &str, revision: Option<&str>) -> ModelSource {
        ModelSource::Hub(HubRepo {
            owner: owner.into(),
            name: name.into(),
            revision: revision.map(Into::into),
        })
    }

    #[test]
    fn parses_hub_sources_and_paths() {
        assert_eq!(
            parse("hf:meta-llama/Llama-3.1-8B").unwrap(),
            hub("meta-llama", "Llama-3.1-8B", None)
        );
        assert_eq!(
            parse("hf:org/model_v2.1@refs/pr/3").unwrap(),
            hub("org", "model_v2.1", Some("refs/pr/3"))
        );
        assert_eq!(
            parse("runs/tiny/sft").unwrap(),
            ModelSource::Local(PathBuf::from("runs/tiny/sft"))
        );
        let text = "hf:a/b@0123456789abcdef0123456789abcdef01234567";
        assert_eq!(parse(text).unwrap().to_string(), text);
    }

    #[test]
    fn rejects_malformed_hub_sources_with_a_reason() {
        for (text, needle) in [
            ("hf:llama", "owner/name"),
            ("hf:/name", "owner is empty"),
            ("hf:owner/", "name is empty"),
            ("hf:own er/x", "may only hold"),
            ("hf:a/b/c", "may only hold"),
            ("hf:a/b@", "revision after `@` is empty"),
            ("hf:a/b@x@y", "revision contains"),
            ("hf:a/b@/etc/passwd", "starts with `/`"),
            ("hf:a/b@..%2f", "revision contains"),
            ("hf:-a/b", "may not start"),
            ("  ", "empty"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.to_string().contains(needle), "{text}: {err}");
            assert!(miette::Diagnostic::help(&err).is_some());
        }
    }

    #[test]
    fn env_options_follow_the_python_client() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |key: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_string())
            }
        };
        let opts = ResolveOptions::from_vars(vars(&[
            ("HOME", "/home/u"),
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_HUB_OFFLINE", "True"),
            ("HF_TOKEN", "hf_secret"),
        ]));
        assert_eq!(opts.endpoint, "http://127.0.0.1:9");
        assert_eq!(
            opts.cache_dir,
            PathBuf::from("/home/u/.cache/huggingface/hub")
        );
        assert!(opts.offline);
        assert_eq!(opts.token.as_ref().unwrap().expose(), "hf_secret");
        assert!(!format!("{opts:?}").contains("hf_secret"));

        let opts =
            ResolveOptions::from_vars(vars(&[("HF_HOME", "/data/hf"), ("HF_HUB_OFFLINE", "0")]));
        assert_eq!(opts.cache_dir, PathBuf::from("/data/hf/hub"));
        assert_eq!(opts.endpoint, "https://huggingface.co");
        assert!(!opts.offline);

        let opts = ResolveOptions::from_vars(vars(&[
            ("HF_HOME", "/data/hf"),
            ("HF_HUB_CACHE", "/fast/hub"),
        ]));
        assert_eq!(opts.cache_dir, PathBuf::from("/fast/hub"));
    }

    #[test]
    fn token_file_under_hf_home_is_read() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join("token"), "hf_fromfile\n").unwrap();
        let dir = home.path().to_string_lossy().to_string();
        let opts = ResolveOptions::from_vars(|key| (key == "HF_HOME").then(|| dir.clone()));
        assert_eq!(opts.token.unwrap().expose(), "hf_fromfile");
    }

    #[test]
    fn local_directory_lists_every_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "{}").unwrap();
        std::fs::write(dir.path().join(ADAPTER_CONFIG_FILE), "{}").unwrap();
        let source = ModelSource::Local(dir.path().to_path_buf());
        let opts = ResolveOptions::from_vars(|_| None);
        match resolve(&source, &opts).unwrap_err() {
            SourceError::MissingFiles { missing, .. } => assert_eq!(
                missing,
                vec![TOKENIZER_FILE, WEIGHTS_FILE, ADAPTER_WEIGHTS_FILE]
            ),
            other => panic!("unexpected {other:?}"),
        }
        let missing_dir = ModelSource::Local(dir.path().join("nope"));
        assert!(matches!(
            resolve(&missing_dir, &opts).unwrap_err(),
            SourceError::NoDirectory { .. }
        ));
    }

    #[test]
    fn local_sharded_directory_resolves_with_its_shards() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            CONFIG_FILE,
            TOKENIZER_FILE,
            "a.safetensors",
            "b.safetensors",
        ] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        let index = r#"{"metadata":{},"weight_map":{"w1":"a.safetensors","w2":"b.safetensors","w3":"a.safetensors"}}"#;
        std::fs::write(dir.path().join(WEIGHTS_INDEX_FILE), index).unwrap();
        let resolved = resolve(
            &ModelSource::Local(dir.path().to_path_buf()),
            &ResolveOptions::from_vars(|_| None),
        )
        .unwrap();
        let Weights::Sharded { shards, .. } = &resolved.weights else {
            panic!("expected shards")
        };
        assert_eq!(
            shards,
            &vec![
                dir.path().join("a.safetensors"),
                dir.path().join("b.safetensors")
            ]
        );
        assert_eq!(resolved.files().len(), 5);
        assert!(resolved.identity.canonical().starts_with("dir:/"));
    }

    #[test]
    fn index_naming_a_path_outside_the_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join(WEIGHTS_INDEX_FILE);
        std::fs::write(&index, r#"{"weight_map":{"w":"../evil.safetensors"}}"#).unwrap();
        assert!(matches!(
            shard_names(&index),
            Err(SourceError::BadIndex { .. })
        ));
        std::fs::write(&index, r#"{"weights":{}}"#).unwrap();
        assert!(matches!(
            shard_names(&index),
            Err(SourceError::BadIndex { .. })
        ));
    }
}
