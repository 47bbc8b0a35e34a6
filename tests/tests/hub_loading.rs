//! Hub loading over a real HTTP connection: the tests resolve `hf:` sources
//! through the library against the loopback hub of `hub_support`.

#![allow(clippy::unwrap_used)]

mod hub_support;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;

use hub_support::*;
use poker_pipe::model::hub::{HubError, HubToken};
use poker_pipe::model::source::{
    self, ModelIdentity, ModelSource, ResolveOptions, SourceError, Weights,
};

/// A token the gated repository does not accept.
const DENIED_TOKEN: &str = "hf_DeniedSecretToken0987654321";

fn options(server: &HubServer, cache: &Path, token: Option<&str>) -> ResolveOptions {
    ResolveOptions {
        endpoint: server.endpoint.clone(),
        cache_dir: cache.to_path_buf(),
        token: token.and_then(HubToken::new),
        offline: false,
        progress: false,
        gguf_cache: cache.join("gguf"),
    }
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

#[test]
fn identify_names_the_commit_without_downloading() {
    let server = server();
    let cache = TempDir::new("identify");
    let source = source::parse("hf:tiny/llama-sharded@v1").unwrap();
    let want = ModelIdentity::Hub {
        repo: "tiny/llama-sharded".into(),
        revision: "v1".into(),
        commit: SHARDED_COMMIT.into(),
    };
    let mut offline = options(&server, &cache.0, None);
    offline.offline = true;
    assert!(matches!(
        source::identify(&source, &offline),
        Err(SourceError::Hub(HubError::OfflineMissing { .. }))
    ));

    let online = options(&server, &cache.0, None);
    assert_eq!(source::identify(&source, &online).unwrap(), want);
    assert_eq!(server.requests().len(), 1, "one API request");
    assert_eq!(server.file_requests(), 0);

    let resolved = source::resolve(&source, &online).unwrap();
    assert_eq!(resolved.identity, want);
    let before = server.requests().len();
    assert_eq!(source::identify(&source, &offline).unwrap(), want);
    let pinned = source::parse(&format!("hf:tiny/llama-sharded@{SHARDED_COMMIT}")).unwrap();
    let ModelIdentity::Hub { commit, .. } = source::identify(&pinned, &online).unwrap() else {
        panic!("expected a hub identity")
    };
    assert_eq!(commit, SHARDED_COMMIT);
    assert_eq!(
        server.requests().len(),
        before,
        "a commit id needs no request"
    );
}
