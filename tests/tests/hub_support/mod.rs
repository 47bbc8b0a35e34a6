//! A hand-written hub on 127.0.0.1 for the hub tests: it speaks the part of
//! the Hugging Face hub protocol `hf-hub` uses (the revision API, `resolve/`
//! URLs with ranges, etags, `x-repo-commit`, redirects of large files to a
//! CDN path, 401/403 for gated repositories) and records every request, and
//! the tiny models it serves. Shared by `hub_loading.rs` and `hub_env.rs`.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use poker_pipe::error::Failure;
use poker_pipe::model::source::SourceError;

/// The secret the gated repository grants access to. It must never show up
/// in any output, error or cached file.
pub const GRANTED_TOKEN: &str = "hf_GrantedSecretToken1234567890";

/// A repository the server hosts: its branches and one commit's files.
pub struct HostedRepo {
    pub commit: String,
    pub branches: Vec<String>,
    pub files: Vec<(String, Vec<u8>)>,
    pub gated: bool,
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub authorization: Option<String>,
}

pub struct HubServer {
    pub endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl HubServer {
    pub fn start(repos: HashMap<String, HostedRepo>) -> HubServer {
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

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn file_requests(&self) -> usize {
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
pub fn etag(bytes: &[u8]) -> String {
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
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
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
pub fn safetensors(tensors: &[(&str, &[usize])], seed: u64) -> Vec<u8> {
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

pub const CONFIG: &str = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"vocab_size":4,"rms_norm_eps":1e-5,"rope_theta":10000.0,"bos_token_id":0,"eos_token_id":1,"tie_word_embeddings":false}"#;
pub const TOKENIZER: &str = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,"model":{"type":"WordLevel","vocab":{"<s>":0,"</s>":1,"fold":2,"call":3},"unk_token":"</s>"}}"#;

fn text(name: &str, body: &str) -> (String, Vec<u8>) {
    (name.to_string(), body.as_bytes().to_vec())
}

/// A tiny model in one `model.safetensors`, with a README the resolver skips.
pub fn single_file_repo(commit: &str, seed: u64, gated: bool) -> HostedRepo {
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
pub fn sharded_repo(commit: &str) -> HostedRepo {
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

pub const TINY_COMMIT: &str = "1111111111111111111111111111111111111111";
pub const SHARDED_COMMIT: &str = "2222222222222222222222222222222222222222";
pub const GATED_COMMIT: &str = "3333333333333333333333333333333333333333";

pub fn server() -> HubServer {
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

pub fn hosted_bytes(repo: &HostedRepo, name: &str) -> Vec<u8> {
    repo.files
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, bytes)| bytes.clone())
        .unwrap()
}

/// Everything a user could see of an error: its message, its debug form
/// and the rendered miette report with help text.
pub fn rendered(err: SourceError) -> String {
    let plain = format!("{err}\n{err:?}");
    let failure = Failure::user(err);
    format!("{plain}\n{:?}", failure.report)
}

/// Every byte under a directory, for scanning the cache for secrets.
pub fn all_bytes(dir: &Path) -> Vec<u8> {
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

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}
