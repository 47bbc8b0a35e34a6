//! A hub base model enters the stage hash as the commit its revision points
//! to: when `main` moves, `sft` (and only the stages on that base) hash
//! anew; offline, the commit recorded in the hub cache stands in for the
//! request and gives the same hash.

#![allow(clippy::unwrap_used)]

// Shared with the other hub tests; this one uses a part of it.
#[allow(dead_code)]
mod hub_support;

use std::collections::HashMap;

use hub_support::*;
use poker_pipe_tests::{Sandbox, text};

const BIN: &str = env!("CARGO_BIN_EXE_pp-test");

const PIPELINE: &str = "name: hubbed\nmodel: {base: \"hf:tiny/llama\"}\nstages:\n  data: {kind: poker-data, scenarios: 10, pairs: 10, prompts: 10}\n  sft: {kind: sft, data: data.sft}\n";

fn hub_at(commit: &str) -> HubServer {
    HubServer::start(HashMap::from([(
        "tiny/llama".to_string(),
        single_file_repo(commit, 7, false),
    )]))
}

/// (data hash, sft hash) as `plan` gives them with this hub environment.
fn hashes(sandbox: &Sandbox, env: &[(&str, &str)]) -> (String, String) {
    let mut cmd = sandbox.command(&["plan", "p.yaml", "--format", "json"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hash = |i: usize| plan["stages"][i]["hash"].as_str().unwrap().to_string();
    (hash(0), hash(1))
}

#[test]
fn a_moved_hub_branch_rehashes_the_stages_on_it() {
    let sandbox = Sandbox::new(BIN).unwrap();
    sandbox.write("p.yaml", PIPELINE).unwrap();
    let cache = sandbox.path().join("hub");
    let cache = cache.to_str().unwrap();
    let first = hub_at(TINY_COMMIT);
    let online = [
        ("HF_ENDPOINT", first.endpoint.as_str()),
        ("HF_HUB_CACHE", cache),
    ];
    let before = hashes(&sandbox, &online);

    // Fetched once, the cache's record of `main` gives the same identity
    // without the network.
    let mut fetch = sandbox.command(&["fetch", "hf:tiny/llama"]);
    for (k, v) in online {
        fetch.env(k, v);
    }
    let out = fetch.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let offline = [("HF_HUB_OFFLINE", "1"), ("HF_HUB_CACHE", cache)];
    let asked = first.requests().len();
    assert_eq!(hashes(&sandbox, &offline), before);
    assert_eq!(first.requests().len(), asked, "no request offline");

    // `main` moves on the hub (with a fresh cache): sft hashes anew.
    let moved = hub_at("4444444444444444444444444444444444444444");
    let fresh = sandbox.path().join("hub2");
    let after = hashes(
        &sandbox,
        &[
            ("HF_ENDPOINT", moved.endpoint.as_str()),
            ("HF_HUB_CACHE", fresh.to_str().unwrap()),
        ],
    );
    assert_eq!(after.0, before.0, "the data stage has no base");
    assert_ne!(after.1, before.1, "sft follows the commit");
}
