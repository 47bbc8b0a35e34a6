//! Hub loading over a real HTTP connection: a hand-written server on
//! 127.0.0.1 speaks the part of the Hugging Face hub protocol `hf-hub` uses
//! (the revision API, `resolve/` URLs with ranges, etags, `x-repo-commit`,
//! redirects of large files to a CDN path, 401/403 for gated repositories),
//! and the tests resolve `hf:` sources against it through the library.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use poker_pipe::error::Failure;
use poker_pipe::model::hub::{HubError, HubToken};
use poker_pipe::model::source::{
    self, ModelIdentity, ModelSource, ResolveOptions, SourceError, Weights,
};

/// The secret the gated repository grants access to. It must never show up
/// in any output, error or cached file.
const GRANTED_TOKEN: &str = "hf_GrantedSecretToken1234567890";
const DENIED_TOKEN: &str = "hf_DeniedSecretToken0987654321";

/// A repository the server hosts: its branches and one commit's files.
struct HostedRepo {
    commit: String,
    branches: Vec<String>,
    files: Vec<(String, Vec<u8>)>,
    gated: bool,
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    authorization: Option<String>,
}

struct HubServer {
    endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl HubServer {
    fn start(repos: HashMap<String, HostedRepo>) -> HubServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tags = repos
            .values()
            .flat_map(|repo| repo.files.iter())
            .map(|(_, bytes)| (bytes.as_ptr() as usize, etag(bytes)))
            .collect();
        let state = Arc::new(ServerState {
            repos,
            tags,
            endpoint: endpoint.clone(),
            seen: seen.clone(),
        });
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = state.clone();
                std::thread::spawn(move || state.serve(stream));
            }
        });
        HubServer { endpoint, seen }
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn file_requests(&self) -> usize {
        self.requests()
            .iter()
            .filter(|seen| seen.path.contains("/resolve/") || seen.path.starts_with("/cdn/"))
            .count()
    }
}

struct ServerState {
    repos: HashMap<String, HostedRepo>,
    /// Each file's etag by the address of its bytes, computed once.
    tags: HashMap<usize, String>,
    endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// An HTTP response before it is written.
struct Reply {
    status: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn new(status: &'static str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body,
        }
    }

    fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// An opaque, content-derived etag (FNV-1a and the length).
fn etag(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}{:016x}", bytes.len())
}

/// Answer a `Range: bytes=a-[b]` request with 206, anything else with 200.
fn ranged(bytes: &[u8], range: Option<&str>) -> Reply {
    let total = bytes.len();
    let Some(spec) = range.and_then(|r| r.strip_prefix("bytes=")) else {
        return Reply::new("200 OK", bytes.to_vec());
    };
    let (start, end) = spec.split_once('-').unwrap();
    let start: usize = start.parse().unwrap();
    let end: usize = if end.is_empty() {
        total.saturating_sub(1)
    } else {
        end.parse::<usize>().unwrap().min(total - 1)
    };
    let body = if start < total {
        bytes[start..=end].to_vec()
    } else {
        Vec::new()
    };
    Reply::new("206 Partial Content", body)
        .header("Content-Range", &format!("bytes {start}-{end}/{total}"))
}

impl ServerState {
    fn tag(&self, bytes: &[u8]) -> &str {
        self.tags
            .get(&(bytes.as_ptr() as usize))
            .map_or("", String::as_str)
    }

    fn serve(&self, stream: TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).is_err() {
            return;
        }
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_string();
        let authorization = headers.get("authorization").cloned();
        self.seen.lock().unwrap().push(Seen {
            path: path.clone(),
            authorization: authorization.clone(),
        });
        let reply = self.route(
            &path,
            authorization.as_deref(),
            headers.get("range").map(String::as_str),
        );
        let mut stream = stream;
        let mut head = format!(
            "HTTP/1.1 {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            reply.status,
            reply.body.len()
        );
        for (name, value) in &reply.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(&reply.body);
    }

    fn route(&self, path: &str, authorization: Option<&str>, range: Option<&str>) -> Reply {
        let not_found = || {
            Reply::new(
                "404 Not Found",
                br#"{"error":"Repository not found"}"#.to_vec(),
            )
            .header("X-Error-Code", "RepoNotFound")
        };
        if let Some(tag) = path.strip_prefix("/cdn/") {
            return self
                .repos
                .values()
                .flat_map(|repo| repo.files.iter())
                .find(|(_, bytes)| self.tag(bytes) == tag)
                .map_or_else(not_found, |(_, bytes)| ranged(bytes, range));
        }
        if let Some(rest) = path.strip_prefix("/api/models/") {
            let Some((id, revision)) = rest.split_once("/revision/") else {
                return not_found();
            };
            let Some(repo) = self.repos.get(id) else {
                return not_found();
            };
            if !repo.knows(revision) {
                return not_found();
            }
            let siblings: Vec<String> = repo
                .files
                .iter()
                .map(|(name, _)| format!(r#"{{"rfilename":"{name}"}}"#))
                .collect();
            let body = format!(
                r#"{{"id":"{id}","sha":"{}","gated":{},"siblings":[{}]}}"#,
                repo.commit,
                repo.gated,
                siblings.join(",")
            );
            return Reply::new("200 OK", body.into_bytes())
                .header("Content-Type", "application/json");
        }
        let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
        let [owner, name, "resolve", revision, file] = parts[..] else {
            return not_found();
        };
        let Some(repo) = self.repos.get(&format!("{owner}/{name}")) else {
            return not_found();
        };
        if !repo.knows(revision) {
            return not_found();
        }
        if repo.gated {
            match authorization {
                None => {
                    return Reply::new("401 Unauthorized", br#"{"error":"Access to model is restricted. You must have access to it and be authenticated to access it. Please log in."}"#.to_vec())
                        .header("X-Error-Code", "GatedRepo");
                }
                Some(value) if value != format!("Bearer {GRANTED_TOKEN}") => {
                    return Reply::new("403 Forbidden", br#"{"error":"Access to model is restricted and you are not in the authorized list."}"#.to_vec())
                        .header("X-Error-Code", "GatedRepo");
                }
                Some(_) => {}
            }
        }
        let Some((_, bytes)) = repo.files.iter().find(|(n, _)| n == file) else {
            return Reply::new("404 Not Found", b"Entry not found".to_vec())
                .header("X-Error-Code", "EntryNotFound");
        };
        let tag = self.tag(bytes);
        if file.ends_with(".safetensors") {
            // Large files live on a CDN: the hub redirects with linked headers.
            return Reply::new("302 Found", Vec::new())
                .header("Location", &format!("{}/cdn/{tag}", self.endpoint))
                .header("X-Repo-Commit", &repo.commit)
                .header("X-Linked-Etag", &format!("\"{tag}\""))
                .header("X-Linked-Size", &bytes.len().to_string());
        }
        ranged(bytes, range)
            .header("ETag", &format!("\"{tag}\""))
            .header("X-Repo-Commit", &repo.commit)
    }
}

impl HostedRepo {
    fn knows(&self, revision: &str) -> bool {
        revision == self.commit || self.branches.iter().any(|b| b == revision)
    }
}

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("poker-pipe-hub-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A safetensors file of f32 tensors with seeded pseudo-random values.
fn safetensors(tensors: &[(&str, &[usize])], seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut data = Vec::new();
    let mut header = Vec::new();
    for (name, shape) in tensors {
        let count: usize = shape.iter().product();
        let start = data.len();
        for _ in 0..count {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let value = ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
            data.extend_from_slice(&value.to_le_bytes());
        }
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        header.push(format!(
            r#""{name}":{{"dtype":"F32","shape":[{}],"data_offsets":[{start},{}]}}"#,
            dims.join(","),
            data.len()
        ));
    }
    let mut json = format!("{{{}}}", header.join(","));
    while json.len() % 8 != 0 {
        json.push(' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(&data);
    out
}

const CONFIG: &str = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"vocab_size":4,"rms_norm_eps":1e-5,"rope_theta":10000.0,"bos_token_id":0,"eos_token_id":1,"tie_word_embeddings":false}"#;
const TOKENIZER: &str = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,"model":{"type":"WordLevel","vocab":{"<s>":0,"</s>":1,"fold":2,"call":3},"unk_token":"</s>"}}"#;

fn text(name: &str, body: &str) -> (String, Vec<u8>) {
    (name.to_string(), body.as_bytes().to_vec())
}

/// A tiny model in one `model.safetensors`, with a README the resolver skips.
fn single_file_repo(commit: &str, seed: u64, gated: bool) -> HostedRepo {
    let tensors: [(&str, &[usize]); 2] = [
        ("model.embed_tokens.weight", &[4, 8]),
        ("lm_head.weight", &[4, 8]),
    ];
    HostedRepo {
        commit: commit.to_string(),
        branches: vec!["main".to_string()],
        files: vec![
            text("config.json", CONFIG),
            text("tokenizer.json", TOKENIZER),
            text(
                "generation_config.json",
                r#"{"bos_token_id":0,"eos_token_id":1}"#,
            ),
            text("README.md", "# tiny"),
            ("model.safetensors".to_string(), safetensors(&tensors, seed)),
        ],
        gated,
    }
}

/// The same kind of model split over two shards with an index.
fn sharded_repo(commit: &str) -> HostedRepo {
    let first: [(&str, &[usize]); 1] = [("model.embed_tokens.weight", &[4, 8])];
    let second: [(&str, &[usize]); 2] = [("model.norm.weight", &[8]), ("lm_head.weight", &[4, 8])];
    let index = r#"{"metadata":{"total_size":288},"weight_map":{"model.embed_tokens.weight":"model-00001-of-00002.safetensors","model.norm.weight":"model-00002-of-00002.safetensors","lm_head.weight":"model-00002-of-00002.safetensors"}}"#;
    HostedRepo {
        commit: commit.to_string(),
        branches: vec!["main".to_string(), "v1".to_string()],
        files: vec![
            text("config.json", CONFIG),
            text("tokenizer.json", TOKENIZER),
            text("model.safetensors.index.json", index),
            (
                "model-00001-of-00002.safetensors".to_string(),
                safetensors(&first, 11),
            ),
            (
                "model-00002-of-00002.safetensors".to_string(),
                safetensors(&second, 12),
            ),
        ],
        gated: false,
    }
}

const TINY_COMMIT: &str = "1111111111111111111111111111111111111111";
const SHARDED_COMMIT: &str = "2222222222222222222222222222222222222222";
const GATED_COMMIT: &str = "3333333333333333333333333333333333333333";

fn server() -> HubServer {
    let mut repos = HashMap::new();
    repos.insert(
        "tiny/llama".to_string(),
        single_file_repo(TINY_COMMIT, 7, false),
    );
    repos.insert(
        "tiny/llama-sharded".to_string(),
        sharded_repo(SHARDED_COMMIT),
    );
    repos.insert(
        "corp/gated-llama".to_string(),
        single_file_repo(GATED_COMMIT, 9, true),
    );
    HubServer::start(repos)
}

fn options(server: &HubServer, cache: &Path, token: Option<&str>) -> ResolveOptions {
    ResolveOptions {
        endpoint: server.endpoint.clone(),
        cache_dir: cache.to_path_buf(),
        token: token.and_then(HubToken::new),
        offline: false,
        progress: false,
    }
}

fn hosted_bytes(repo: &HostedRepo, name: &str) -> Vec<u8> {
    repo.files
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, bytes)| bytes.clone())
        .unwrap()
}

/// Everything a user could see of an error: its message, its debug form
/// and the rendered miette report with help text.
fn rendered(err: SourceError) -> String {
    let plain = format!("{err}\n{err:?}");
    let failure = Failure::user(err);
    format!("{plain}\n{:?}", failure.report)
}

/// Every byte under a directory, for scanning the cache for secrets.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            out.extend_from_slice(path.to_string_lossy().as_bytes());
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file() {
                out.extend(std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[test]
fn downloads_then_reuses_the_cache_then_works_offline() {
    let server = server();
    let cache = TempDir::new("single");
    let source = source::parse("hf:tiny/llama").unwrap();

    let resolved = source::resolve(&source, &options(&server, &cache.0, None)).unwrap();
    let hosted = single_file_repo(TINY_COMMIT, 7, false);
    let Weights::Single(weights) = &resolved.weights else {
        panic!("expected a single weight file, got {:?}", resolved.weights)
    };
    assert_eq!(
        std::fs::read(weights).unwrap(),
        hosted_bytes(&hosted, "model.safetensors")
    );
    assert_eq!(std::fs::read(&resolved.config).unwrap(), CONFIG.as_bytes());
    assert_eq!(
        std::fs::read(&resolved.tokenizer).unwrap(),
        TOKENIZER.as_bytes()
    );
    assert!(resolved.dir.join("generation_config.json").is_file());
    assert!(
        !resolved.dir.join("README.md").exists(),
        "only model files are fetched"
    );
    assert_eq!(
        resolved.identity,
        ModelIdentity::Hub {
            repo: "tiny/llama".into(),
            revision: "main".into(),
            commit: TINY_COMMIT.into()
        }
    );
    assert_eq!(
        resolved.identity.canonical(),
        format!("hf:tiny/llama@{TINY_COMMIT}")
    );
    let refs = cache
        .0
        .join("models--tiny--llama")
        .join("refs")
        .join("main");
    assert_eq!(std::fs::read_to_string(refs).unwrap().trim(), TINY_COMMIT);
    let first_fetch = server.file_requests();
    assert!(
        first_fetch >= 4,
        "config, tokenizer, generation config and weights"
    );

    let again = source::resolve(&source, &options(&server, &cache.0, None)).unwrap();
    assert_eq!(again, resolved);
    assert_eq!(
        server.file_requests(),
        first_fetch,
        "a cached file is never fetched again"
    );

    let before = server.requests().len();
    let mut offline = options(&server, &cache.0, None);
    offline.offline = true;
    let from_cache = source::resolve(&source, &offline).unwrap();
    assert_eq!(from_cache, resolved);
    assert_eq!(
        server.requests().len(),
        before,
        "offline makes no request at all"
    );
}

#[test]
fn offline_without_the_model_in_the_cache_names_what_is_missing() {
    let server = server();
    let cache = TempDir::new("offline-empty");
    let mut offline = options(&server, &cache.0, None);
    offline.offline = true;
    let err = source::resolve(&source::parse("hf:tiny/llama@v2").unwrap(), &offline).unwrap_err();
    assert!(matches!(
        err,
        SourceError::Hub(HubError::OfflineMissing { .. })
    ));
    let text = rendered(err);
    assert!(text.contains("tiny/llama") && text.contains("v2"), "{text}");
    assert!(text.contains("HF_HUB_OFFLINE"), "{text}");
    assert!(server.requests().is_empty());

    // A snapshot that lost a file is reported file by file.
    source::resolve(
        &source::parse("hf:tiny/llama").unwrap(),
        &options(&server, &cache.0, None),
    )
    .unwrap();
    let snapshot = cache
        .0
        .join("models--tiny--llama/snapshots")
        .join(TINY_COMMIT);
    std::fs::remove_file(snapshot.join("tokenizer.json")).unwrap();
    let err = source::resolve(&source::parse("hf:tiny/llama").unwrap(), &offline).unwrap_err();
    match err {
        SourceError::Hub(HubError::OfflineMissing { missing, .. }) => {
            assert_eq!(missing, vec!["tokenizer.json".to_string()])
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn sharded_checkpoint_at_a_branch_downloads_every_shard() {
    let server = server();
    let cache = TempDir::new("sharded");
    let source = source::parse("hf:tiny/llama-sharded@v1").unwrap();
    let resolved = source::resolve(&source, &options(&server, &cache.0, None)).unwrap();
    let hosted = sharded_repo(SHARDED_COMMIT);
    let Weights::Sharded { index, shards } = &resolved.weights else {
        panic!("expected shards, got {:?}", resolved.weights)
    };
    assert!(index.ends_with("model.safetensors.index.json"));
    let names: Vec<_> = shards
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors"
        ]
    );
    for (shard, name) in shards.iter().zip(&names) {
        assert_eq!(std::fs::read(shard).unwrap(), hosted_bytes(&hosted, name));
    }
    assert_eq!(
        resolved.identity,
        ModelIdentity::Hub {
            repo: "tiny/llama-sharded".into(),
            revision: "v1".into(),
            commit: SHARDED_COMMIT.into()
        }
    );
    // Large files went through the CDN redirect.
    assert!(
        server
            .requests()
            .iter()
            .any(|seen| seen.path.starts_with("/cdn/"))
    );

    let mut offline = options(&server, &cache.0, None);
    offline.offline = true;
    assert_eq!(source::resolve(&source, &offline).unwrap(), resolved);
    // The commit itself also resolves offline.
    let by_commit = source::parse(&format!("hf:tiny/llama-sharded@{SHARDED_COMMIT}")).unwrap();
    assert_eq!(
        source::resolve(&by_commit, &offline).unwrap().dir,
        resolved.dir
    );
}

#[test]
fn gated_repository_without_a_token_says_to_accept_the_license_and_set_hf_token() {
    let server = server();
    let cache = TempDir::new("gated-401");
    let source = source::parse("hf:corp/gated-llama").unwrap();
    let err = source::resolve(&source, &options(&server, &cache.0, None)).unwrap_err();
    assert!(matches!(
        err,
        SourceError::Hub(HubError::Gated {
            status: 401,
            with_token: false,
            ..
        })
    ));
    let text = rendered(err);
    for needle in ["corp/gated-llama", "license", "HF_TOKEN", "401"] {
        assert!(text.contains(needle), "missing {needle}: {text}");
    }
    assert!(
        text.contains(&format!("{}/corp/gated-llama", server.endpoint)),
        "{text}"
    );
}

#[test]
fn gated_repository_with_a_denied_token_never_shows_the_token() {
    let server = server();
    let cache = TempDir::new("gated-403");
    let source = source::parse("hf:corp/gated-llama").unwrap();
    let opts = options(&server, &cache.0, Some(DENIED_TOKEN));
    assert!(!format!("{opts:?}").contains(DENIED_TOKEN));
    let err = source::resolve(&source, &opts).unwrap_err();
    assert!(matches!(
        err,
        SourceError::Hub(HubError::Gated {
            status: 403,
            with_token: true,
            ..
        })
    ));
    let text = rendered(err);
    assert!(
        text.contains("license") && text.contains("HF_TOKEN") && text.contains("403"),
        "{text}"
    );
    assert!(!text.contains(DENIED_TOKEN), "the token leaked: {text}");
    assert!(!contains(&all_bytes(&cache.0), DENIED_TOKEN));
    // The token did go to the server, as a bearer header.
    assert!(
        server
            .requests()
            .iter()
            .any(|seen| seen.authorization.as_deref() == Some(&format!("Bearer {DENIED_TOKEN}")))
    );
}

#[test]
fn gated_repository_with_a_granted_token_downloads_and_keeps_the_token_out_of_files() {
    let server = server();
    let cache = TempDir::new("gated-ok");
    let source = source::parse("hf:corp/gated-llama").unwrap();
    let resolved =
        source::resolve(&source, &options(&server, &cache.0, Some(GRANTED_TOKEN))).unwrap();
    let hosted = single_file_repo(GATED_COMMIT, 9, true);
    let Weights::Single(weights) = &resolved.weights else {
        panic!("expected a single weight file")
    };
    assert_eq!(
        std::fs::read(weights).unwrap(),
        hosted_bytes(&hosted, "model.safetensors")
    );
    let identity = format!("{:?}", resolved.identity);
    let printed = format!("{resolved:?}{identity}{}", resolved.identity.canonical());
    assert!(!printed.contains(GRANTED_TOKEN));
    assert!(!contains(&all_bytes(&cache.0), GRANTED_TOKEN));
}

#[test]
fn unknown_repository_and_unreachable_hub_give_actionable_errors() {
    let server = server();
    let cache = TempDir::new("errors");
    let missing = source::parse("hf:tiny/nothing-here").unwrap();
    let text = rendered(source::resolve(&missing, &options(&server, &cache.0, None)).unwrap_err());
    assert!(
        text.contains("not found") && text.contains("HF_TOKEN"),
        "{text}"
    );

    // A port nobody listens on: bind, note it, close it.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut opts = options(&server, &cache.0, None);
    opts.endpoint = format!("http://127.0.0.1:{port}");
    let err = source::resolve(&source::parse("hf:tiny/llama").unwrap(), &opts).unwrap_err();
    assert!(
        matches!(err, SourceError::Hub(HubError::Network { .. })),
        "{err:?}"
    );
    assert!(rendered(err).contains("HF_HUB_OFFLINE"));
}

#[test]
fn local_directory_sources_resolve_in_place() {
    let dir = TempDir::new("local");
    let hosted = single_file_repo(TINY_COMMIT, 3, false);
    for (name, bytes) in &hosted.files {
        std::fs::write(dir.0.join(name), bytes).unwrap();
    }
    let source = ModelSource::Local(dir.0.clone());
    let server = server();
    let resolved = source::resolve(&source, &options(&server, &dir.0, None)).unwrap();
    assert_eq!(resolved.dir, dir.0);
    assert!(matches!(resolved.identity, ModelIdentity::Local { .. }));
    assert!(
        server.requests().is_empty(),
        "a directory never touches the hub"
    );
}

/// Download throughput over loopback and the cost of a warm-cache resolve,
/// a measurement rather than a test (figures in engine/PERF.md):
/// `cargo test -p poker-pipe-tests --test hub_loading -- --ignored --nocapture`
#[test]
#[ignore = "a measurement; run with --ignored --nocapture"]
fn hub_download_throughput() {
    let megabytes: usize = std::env::var("POKER_PIPE_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let floats = megabytes * (1 << 20) / 4;
    let shape = [floats];
    let tensors: [(&str, &[usize]); 1] = [("lm_head.weight", &shape)];
    let mut repo = single_file_repo(TINY_COMMIT, 1, false);
    repo.files.retain(|(name, _)| name != "model.safetensors");
    repo.files
        .push(("model.safetensors".to_string(), safetensors(&tensors, 5)));
    let bytes = repo.files.iter().map(|(_, b)| b.len()).sum::<usize>() as f64;
    let server = HubServer::start(HashMap::from([("big/llama".to_string(), repo)]));
    let cache = TempDir::new("bench");
    let source = source::parse("hf:big/llama").unwrap();
    let started = std::time::Instant::now();
    source::resolve(&source, &options(&server, &cache.0, None)).unwrap();
    let cold_s = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    source::resolve(&source, &options(&server, &cache.0, None)).unwrap();
    let warm_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut offline = options(&server, &cache.0, None);
    offline.offline = true;
    let started = std::time::Instant::now();
    source::resolve(&source, &offline).unwrap();
    let offline_ms = started.elapsed().as_secs_f64() * 1e3;
    println!(
        "{{\"bytes\": {bytes}, \"cold_s\": {cold_s:.3}, \"cold_mb_per_s\": {:.1}, \
         \"warm_ms\": {warm_ms:.2}, \"offline_ms\": {offline_ms:.2}}}",
        bytes / cold_s / 1e6
    );
}

#[test]
fn a_cache_filled_by_the_python_tools_is_reused_without_downloads() {
    let server = server();
    let cache = TempDir::new("python-cache");
    // huggingface_hub's layout: blobs, a snapshot of links, refs/main; no
    // refs/<commit> entry (hf-hub's own lookup would miss the files).
    let folder = cache.0.join("models--tiny--llama");
    let snapshot = folder.join("snapshots").join(TINY_COMMIT);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(folder.join("blobs")).unwrap();
    std::fs::create_dir_all(folder.join("refs")).unwrap();
    std::fs::write(folder.join("refs/main"), TINY_COMMIT).unwrap();
    let hosted = single_file_repo(TINY_COMMIT, 7, false);
    for (name, bytes) in &hosted.files {
        let blob = folder.join("blobs").join(etag(bytes));
        std::fs::write(&blob, bytes).unwrap();
        std::os::unix::fs::symlink(&blob, snapshot.join(name)).unwrap();
    }
    let source = source::parse("hf:tiny/llama").unwrap();
    let resolved = source::resolve(&source, &options(&server, &cache.0, None)).unwrap();
    assert_eq!(resolved.dir, snapshot);
    assert_eq!(server.file_requests(), 0, "{:?}", server.requests());
    assert_eq!(server.requests().len(), 1, "only the revision lookup");
}
