//! Models from the Hugging Face hub through `hf-hub`, in the cache layout
//! the Python tools share (`models--owner--name/{refs,blobs,snapshots}`).
//!
//! Online, one API request learns the commit the revision points at and the
//! repository's file list; files are then fetched pinned to that commit, so
//! a model is never assembled from two commits, and files already in the
//! cache are not fetched again. Offline, the revision's ref in the cache
//! names the snapshot to use.

use std::fmt;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};
use miette::Diagnostic;
use thiserror::Error;

use super::source::{
    self, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, CONFIG_FILE, HubRepo, ModelIdentity,
    OPTIONAL_FILES, ResolveOptions, ResolvedModel, SourceError, TOKENIZER_FILE, WEIGHTS_FILE,
    WEIGHTS_INDEX_FILE,
};

/// The public hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// A hub access token. It is only ever placed in a request header: its
/// `Debug` is redacted and it has no `Display`, so it cannot reach a log,
/// an error or a manifest by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct HubToken(String);

impl HubToken {
    /// A token from text (surrounding whitespace removed); `None` if blank.
    pub fn new(text: &str) -> Option<Self> {
        let token = text.trim();
        (!token.is_empty()).then(|| HubToken(token.to_string()))
    }

    /// The secret itself, for the request header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for HubToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HubToken(<redacted>)")
    }
}

/// Failures talking to the hub or reading its cache.
#[derive(Debug, Error, Diagnostic)]
pub enum HubError {
    #[error("`{repo}` is gated or private and {}", gated_reason(*status, *with_token))]
    #[diagnostic(
        code(model::hub::gated),
        help(
            "open {url} while logged in, accept the model's license and wait for access to be \
             granted; then create a read token at {endpoint}/settings/tokens and export it as \
             HF_TOKEN (or run `huggingface-cli login`)"
        )
    )]
    Gated {
        repo: String,
        url: String,
        endpoint: String,
        status: u16,
        with_token: bool,
    },

    #[error("`{repo}` at revision `{revision}` was not found on {endpoint} (HTTP 404)")]
    #[diagnostic(
        code(model::hub::not_found),
        help(
            "check the owner, name and revision; a private repository also answers 404 \
             without a token, so export HF_TOKEN if it is yours"
        )
    )]
    NotFound {
        repo: String,
        revision: String,
        endpoint: String,
    },

    #[error("`{repo}` at revision `{revision}` has no safetensors weights")]
    #[diagnostic(
        code(model::hub::no_weights),
        help(
            "poker-pipe reads `model.safetensors` or `model.safetensors.index.json`; convert \
             PyTorch `.bin` checkpoints with transformers' `save_pretrained(safe_serialization=True)`"
        )
    )]
    NoWeights { repo: String, revision: String },

    #[error("`{repo}` at revision `{revision}` has no {file}")]
    #[diagnostic(
        code(model::hub::missing_file),
        help(
            "poker-pipe needs {file} beside the weights; pick a repository in the transformers layout"
        )
    )]
    MissingFile {
        repo: String,
        revision: String,
        file: String,
    },

    #[error("offline mode: `{repo}` at revision `{revision}` is not complete in the hub cache {}: missing {}", cache.display(), missing.join(", "))]
    #[diagnostic(
        code(model::hub::offline_missing),
        help(
            "run once with network access to fill the cache (unset HF_HUB_OFFLINE), or point \
             HF_HOME / HF_HUB_CACHE at the cache that holds it"
        )
    )]
    OfflineMissing {
        repo: String,
        revision: String,
        cache: PathBuf,
        missing: Vec<String>,
    },

    #[error("the hub at {endpoint} answered HTTP {status} for `{repo}`")]
    #[diagnostic(
        code(model::hub::http),
        help(
            "try again later; if it persists, check the endpoint (HF_ENDPOINT) and the hub's status page"
        )
    )]
    Http {
        repo: String,
        endpoint: String,
        status: u16,
    },

    #[error("cannot reach the hub at {endpoint} for `{repo}`: {reason}")]
    #[diagnostic(
        code(model::hub::network),
        help(
            "check the network and proxy settings; with the model already downloaded, set \
             HF_HUB_OFFLINE=1 to use the cache alone"
        )
    )]
    Network {
        repo: String,
        endpoint: String,
        reason: String,
    },

    #[error("hub download of `{repo}` failed: {reason}")]
    #[diagnostic(
        code(model::hub::download),
        help("check free disk space and write access to the hub cache (HF_HOME / HF_HUB_CACHE)")
    )]
    Download { repo: String, reason: String },
}

/// Why the hub refused, from its status and whether a token was sent.
fn gated_reason(status: u16, with_token: bool) -> &'static str {
    match (status, with_token) {
        (403, _) => "the token in use has not been granted access (HTTP 403)",
        (_, true) => "the token in use was rejected (HTTP 401)",
        (_, false) => "no token was sent (HTTP 401)",
    }
}

/// The snapshot directory of a commit in the cache.
fn snapshot_dir(repo: &HubRepo, cache_dir: &Path, commit: &str) -> PathBuf {
    cache_dir
        .join(hub_repo(repo, commit).folder_name())
        .join("snapshots")
        .join(commit)
}

/// Resolve a hub repository to a complete local snapshot.
pub fn resolve(repo: &HubRepo, options: &ResolveOptions) -> Result<ResolvedModel, SourceError> {
    let cache_dir = absolute_cache(options)?;
    if options.offline {
        resolve_offline(repo, &cache_dir)
    } else {
        resolve_online(repo, options, &cache_dir)
    }
}

/// The identity of a hub model without downloading it: the commit its
/// revision points at, from one API request, or offline from the cache's
/// refs (a full commit id given as the revision needs neither). For `plan`
/// and stage hashes, which must not fetch gigabytes to say what would run.
pub fn identify(repo: &HubRepo, options: &ResolveOptions) -> Result<ModelIdentity, SourceError> {
    let revision = repo.revision();
    if revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(identity(repo, revision));
    }
    if options.offline {
        let cache_dir = absolute_cache(options)?;
        return cached_commit(repo, &cache_dir)
            .map(|commit| identity(repo, &commit))
            .ok_or_else(|| {
                HubError::OfflineMissing {
                    repo: repo.repo_id(),
                    revision: revision.to_string(),
                    cache: cache_dir,
                    missing: vec!["the whole repository".to_string()],
                }
                .into()
            });
    }
    let (_, commit, _) = remote_info(repo, options)?;
    Ok(identity(repo, &commit))
}

fn absolute_cache(options: &ResolveOptions) -> Result<PathBuf, SourceError> {
    std::path::absolute(&options.cache_dir).map_err(|source| SourceError::Io {
        path: options.cache_dir.clone(),
        source,
    })
}

/// The API client, and the commit and file list of the repository's
/// revision (one request).
fn remote_info(
    repo: &HubRepo,
    options: &ResolveOptions,
) -> Result<(Api, String, Vec<String>), SourceError> {
    let cache_dir = absolute_cache(options)?;
    let api = ApiBuilder::from_cache(Cache::new(cache_dir))
        .with_endpoint(options.endpoint.clone())
        .with_token(options.token.as_ref().map(|t| t.expose().to_string()))
        .with_progress(options.progress)
        .with_retries(2)
        .build()
        .map_err(|err| classify(err, repo, options))?;
    let info = api
        .repo(hub_repo(repo, repo.revision()))
        .info()
        .map_err(|err| classify(err, repo, options))?;
    if !is_commit_id(&info.sha) {
        return Err(HubError::Download {
            repo: repo.repo_id(),
            reason: format!("the hub named an invalid commit `{}`", info.sha),
        }
        .into());
    }
    let files = info.siblings.into_iter().map(|s| s.rfilename).collect();
    Ok((api, info.sha, files))
}

fn hub_repo(repo: &HubRepo, revision: &str) -> Repo {
    Repo::with_revision(repo.repo_id(), RepoType::Model, revision.to_string())
}

fn identity(repo: &HubRepo, commit: &str) -> ModelIdentity {
    ModelIdentity::Hub {
        repo: repo.repo_id(),
        revision: repo.revision().to_string(),
        commit: commit.to_string(),
    }
}

/// A commit id is a plain name (40 hex digits on the hub); anything else in
/// a ref file or an API answer must not become a path in the cache.
fn is_commit_id(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric())
}

/// The commit a revision pointed at when it was last fetched, from the
/// cache's `refs/`; a full commit hash stands for itself.
fn cached_commit(repo: &HubRepo, cache_dir: &Path) -> Option<String> {
    let folder = cache_dir.join(hub_repo(repo, "main").folder_name());
    let revision = repo.revision();
    if let Ok(text) = std::fs::read_to_string(folder.join("refs").join(revision)) {
        let commit = text.trim();
        if is_commit_id(commit) {
            return Some(commit.to_string());
        }
    }
    let is_commit = revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit());
    (is_commit && folder.join("snapshots").join(revision).is_dir()).then(|| revision.to_string())
}

fn resolve_offline(repo: &HubRepo, cache_dir: &Path) -> Result<ResolvedModel, SourceError> {
    let offline_missing = |missing: Vec<String>| HubError::OfflineMissing {
        repo: repo.repo_id(),
        revision: repo.revision().to_string(),
        cache: cache_dir.to_path_buf(),
        missing,
    };
    let Some(commit) = cached_commit(repo, cache_dir) else {
        return Err(offline_missing(vec!["the whole repository".to_string()]).into());
    };
    match source::inspect_dir(
        &snapshot_dir(repo, cache_dir, &commit),
        identity(repo, &commit),
    ) {
        Err(SourceError::MissingFiles { missing, .. }) => Err(offline_missing(missing).into()),
        Err(SourceError::NoDirectory { .. }) => {
            Err(offline_missing(vec!["the whole repository".to_string()]).into())
        }
        other => other,
    }
}

fn resolve_online(
    repo: &HubRepo,
    options: &ResolveOptions,
    cache_dir: &Path,
) -> Result<ResolvedModel, SourceError> {
    let (api, commit, files) = remote_info(repo, options)?;
    let has = |name: &str| files.iter().any(|f| f == name);
    let fetcher = Fetcher {
        pinned: api.repo(hub_repo(repo, &commit)),
        snapshot: snapshot_dir(repo, cache_dir, &commit),
        repo,
        options,
    };
    let missing = |file: &str| HubError::MissingFile {
        repo: repo.repo_id(),
        revision: repo.revision().to_string(),
        file: file.to_string(),
    };
    for required in [CONFIG_FILE, TOKENIZER_FILE] {
        if !has(required) {
            return Err(missing(required).into());
        }
        fetcher.get(required)?;
    }
    if has(WEIGHTS_INDEX_FILE) {
        let index = fetcher.get(WEIGHTS_INDEX_FILE)?;
        for shard in source::shard_names(&index)? {
            if !has(&shard) {
                return Err(missing(&shard).into());
            }
            fetcher.get(&shard)?;
        }
    } else if has(WEIGHTS_FILE) {
        fetcher.get(WEIGHTS_FILE)?;
    } else {
        return Err(HubError::NoWeights {
            repo: repo.repo_id(),
            revision: repo.revision().to_string(),
        }
        .into());
    }
    let extras = [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE]
        .into_iter()
        .chain(OPTIONAL_FILES);
    for extra in extras {
        if has(extra) {
            fetcher.get(extra)?;
        }
    }
    if repo.revision() != commit {
        let cache_error = |source| SourceError::Io {
            path: cache_dir.to_path_buf(),
            source,
        };
        Cache::new(cache_dir.to_path_buf())
            .repo(hub_repo(repo, repo.revision()))
            .create_ref(&commit)
            .map_err(cache_error)?;
    }
    source::inspect_dir(
        &snapshot_dir(repo, cache_dir, &commit),
        identity(repo, &commit),
    )
}

/// Fetches files of one repository pinned to one commit, reusing the cache.
struct Fetcher<'a> {
    pinned: ApiRepo,
    /// The commit's snapshot directory. A file already there is used as is:
    /// the Python tools fill snapshots without the `refs/<commit>` entry
    /// that hf-hub's own cache lookup needs.
    snapshot: PathBuf,
    repo: &'a HubRepo,
    options: &'a ResolveOptions,
}

impl Fetcher<'_> {
    fn get(&self, file: &str) -> Result<PathBuf, HubError> {
        let cached = self.snapshot.join(file);
        if cached.is_file() {
            return Ok(cached);
        }
        self.pinned
            .get(file)
            .map_err(|err| classify(err, self.repo, self.options))
    }
}

/// Turn hf-hub's error into one that says what to do. Status codes from the
/// hub decide: 401/403 mean a gated (or private) repository.
fn classify(err: ApiError, repo: &HubRepo, options: &ResolveOptions) -> HubError {
    let repo_id = repo.repo_id();
    match err {
        ApiError::TooManyRetries(inner) => classify(*inner, repo, options),
        ApiError::RequestError(request) => match *request {
            ureq::Error::Status(status @ (401 | 403), _) => HubError::Gated {
                url: format!("{}/{repo_id}", options.endpoint),
                repo: repo_id,
                endpoint: options.endpoint.clone(),
                status,
                with_token: options.token.is_some(),
            },
            ureq::Error::Status(404, _) => HubError::NotFound {
                repo: repo_id,
                revision: repo.revision().to_string(),
                endpoint: options.endpoint.clone(),
            },
            ureq::Error::Status(status, _) => HubError::Http {
                repo: repo_id,
                endpoint: options.endpoint.clone(),
                status,
            },
            ureq::Error::Transport(transport) => HubError::Network {
                repo: repo_id,
                endpoint: options.endpoint.clone(),
                reason: transport.kind().to_string(),
            },
        },
        other => HubError::Download {
            repo: repo_id,
            reason: other.to_string(),
        },
    }
}
