//! Manifests are protected: `cache verify` finds an edited manifest and an
//! entry whose manifest is gone, passes a clean read-only cache, and `run`
//! rebuilds (and says so) an entry whose files are missing or resized.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use poker_pipe_tests::{Sandbox, text};

const BIN: &str = env!("CARGO_BIN_EXE_pp-test");

const PIPELINE: &str = r#"name: sealtest
stages:
  src: {kind: text-source, text: "x"}
  step: {kind: text-step, input: src, suffix: "!"}
  after: {kind: text-step, input: step, suffix: "?"}
"#;

fn setup() -> Sandbox {
    let sandbox = Sandbox::new(BIN).unwrap();
    sandbox.write("p.yaml", PIPELINE).unwrap();
    let out = sandbox.run(&["run", "p.yaml"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    sandbox
}

fn entry(sandbox: &Sandbox, stage: &str) -> PathBuf {
    let plan = sandbox.plan("p.yaml", &[]).unwrap();
    let hash = plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == stage)
        .map(|s| s["hash"].as_str().unwrap().to_string())
        .unwrap();
    sandbox.path().join(".poker-pipe/cache").join(hash)
}

#[test]
fn an_edited_manifest_is_found() {
    let sandbox = setup();
    let manifest = entry(&sandbox, "step").join("manifest.json");
    let text_before = std::fs::read_to_string(&manifest).unwrap();
    let edited = text_before.replacen("\"duration_s\": ", "\"duration_s\": 1", 1);
    assert_ne!(edited, text_before);
    std::fs::write(&manifest, edited).unwrap();
    // `run` does not trust it either.
    assert_eq!(sandbox.would_run("p.yaml", &[]).unwrap(), ["step"]);
    let out = sandbox.run(&["cache", "verify"]).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("TAMPERED MANIFEST"), "{report}");
    assert!(report.contains("3 entries checked, 1 tampered"), "{report}");
}

#[test]
fn an_entry_without_its_manifest_is_reported() {
    let sandbox = setup();
    std::fs::remove_file(entry(&sandbox, "after").join("manifest.json")).unwrap();
    let out = sandbox.run(&["cache", "verify"]).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("MISSING MANIFEST"), "{report}");
    assert!(report.contains("3 entries checked, 1 tampered"), "{report}");
    // Quarantined: the next verify is clean, the next run rebuilds it.
    let out = sandbox.run(&["cache", "verify"]).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = sandbox.run(&["run", "p.yaml"]).unwrap();
    assert_eq!(Sandbox::ran(&out), ["after"], "{}", text(&out));
}

#[test]
fn run_rebuilds_an_entry_with_a_missing_or_resized_file_and_says_so() {
    let sandbox = setup();
    let step = entry(&sandbox, "step");
    let file = std::fs::read_dir(&step)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap() != "manifest.json" && p.is_file())
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    let out = sandbox.run(&["run", "p.yaml"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(Sandbox::ran(&out), ["step"], "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cache entry damaged"), "{stderr}");
    assert!(file.is_file(), "rebuilt");
    // The rebuilt entry has the same bytes, so `after` stays cached.

    std::fs::write(&file, "a different length").unwrap();
    let out = sandbox.run(&["run", "p.yaml"]).unwrap();
    assert_eq!(Sandbox::ran(&out), ["step"], "{}", text(&out));
    let out = sandbox.run(&["cache", "verify"]).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn a_clean_read_only_cache_verifies() {
    let sandbox = setup();
    let cache = sandbox.path().join(".poker-pipe");
    let chmod = |mode: &str| {
        let status = std::process::Command::new("chmod")
            .args(["-R", mode, cache.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    chmod("a-w");
    let out = sandbox.run(&["cache", "verify"]).unwrap();
    chmod("u+w");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 entries checked, 0 tampered"));
}
