//! The hub settings come from the environment as the Python tools read
//! them: `HF_ENDPOINT`, `HF_HOME`, `HF_TOKEN` and `HF_HUB_OFFLINE`. This
//! binary holds a single test because it changes its own environment.

#![allow(clippy::unwrap_used)]

mod hub_support;

use hub_support::*;
use poker_pipe::model::source::{self, ResolveOptions, Weights};

/// Set or clear the `HF_*` variables.
fn set_env(vars: &[(&str, Option<&str>)]) {
    for (key, value) in vars {
        // SAFETY: this test binary runs one test, and nothing else in it
        // reads or writes the environment while the variables change (the
        // loopback server is idle between resolves).
        unsafe {
            match value {
                Some(value) => std::env::set_var(key, value),
                None => std::env::remove_var(key),
            }
        }
    }
}

#[test]
fn endpoint_home_token_and_offline_come_from_the_environment() {
    let server = server();
    let home = TempDir::new("env-home");
    let home_text = home.0.to_string_lossy().to_string();
    set_env(&[
        ("HF_ENDPOINT", Some(&server.endpoint)),
        ("HF_HOME", Some(&home_text)),
        ("HF_HUB_CACHE", None),
        ("HF_TOKEN", Some(GRANTED_TOKEN)),
        ("HUGGING_FACE_HUB_TOKEN", None),
        ("HF_HUB_OFFLINE", None),
    ]);
    let source = source::parse("hf:corp/gated-llama").unwrap();
    let options = ResolveOptions::from_env();
    assert!(!format!("{options:?}").contains(GRANTED_TOKEN));
    let resolved = source::resolve(&source, &options).unwrap();
    assert!(
        resolved
            .dir
            .starts_with(home.0.join("hub/models--corp--gated-llama"))
    );
    let hosted = single_file_repo(GATED_COMMIT, 9, true);
    let Weights::Single(weights) = &resolved.weights else {
        panic!("expected a single weight file")
    };
    assert_eq!(
        std::fs::read(weights).unwrap(),
        hosted_bytes(&hosted, "model.safetensors")
    );
    let bearer = format!("Bearer {GRANTED_TOKEN}");
    assert!(
        server
            .requests()
            .iter()
            .all(|seen| seen.path.starts_with("/cdn/")
                || seen.authorization.as_deref() == Some(bearer.as_str()))
    );
    assert!(!contains(&all_bytes(&home.0), GRANTED_TOKEN));
    assert!(
        server.file_requests() >= 4,
        "config, tokenizer, generation config, weights"
    );

    // Offline, with no token and the server still up: nothing is requested.
    set_env(&[("HF_TOKEN", None), ("HF_HUB_OFFLINE", Some("1"))]);
    let before = server.requests().len();
    let offline = ResolveOptions::from_env();
    assert!(offline.offline && offline.token.is_none());
    assert_eq!(source::resolve(&source, &offline).unwrap(), resolved);
    assert_eq!(server.requests().len(), before);

    // A repository never fetched is named, with the way out.
    let missing = source::parse("hf:tiny/llama").unwrap();
    let text = rendered(source::resolve(&missing, &offline).unwrap_err());
    assert!(
        text.contains("tiny/llama") && text.contains("HF_HUB_OFFLINE"),
        "{text}"
    );
}
