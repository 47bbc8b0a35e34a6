//! What ships in the repository: the committed schema is fresh, every
//! pipeline and example validates with the built-in kinds, and the
//! `jsonl-data` kind accepts the sample data and rejects bad lines.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use poker_pipe::spec::{load_and_check, pipeline_schema};
use poker_pipe::stages::builtin;
use poker_pipe_tests::{Sandbox, text};

const BIN: &str = env!("CARGO_BIN_EXE_pp-test");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_committed_schema_is_fresh() {
    let committed = std::fs::read_to_string(repo().join("schemas/pipeline.schema.json")).unwrap();
    let mut fresh = serde_json::to_string_pretty(&pipeline_schema(&builtin())).unwrap();
    fresh.push('\n');
    assert!(
        committed == fresh,
        "schemas/pipeline.schema.json is stale: run `cargo run --release -p poker-pipe -- schema --out schemas/pipeline.schema.json`"
    );
}

/// A pipeline whose base is a GGUF under `models/` names it relative to the
/// repository root, where the README runs it from, and where the model is
/// only once fetched (`.ci/run` fetches it; README, "GGUF"): validated by the
/// binary run there, or SKIPPED without the model.
fn validate_from_the_root(file: &Path, model: &str) {
    if !repo().join(model).is_file() {
        println!(
            "SKIPPED: {} needs {model} (see the README's GGUF section)",
            file.display()
        );
        return;
    }
    let out = std::process::Command::new(BIN)
        .arg("validate")
        .arg(file)
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}: {}", file.display(), text(&out));
}

/// The `models/...` file a pipeline's `gguf:` base names, if any.
fn gguf_under_models(yaml: &str) -> Option<&str> {
    let rest = yaml.split("gguf:").nth(1)?;
    let path = rest.split(['"', '\'', ' ', ',', '}', '\n']).next()?;
    path.starts_with("models/").then_some(path)
}

#[test]
fn every_shipped_pipeline_validates_and_names_the_schema() {
    let mut files = yaml_files(&repo().join("pipelines"));
    files.extend(yaml_files(&repo().join("examples")));
    assert!(files.len() >= 2);
    for file in files {
        let yaml = std::fs::read_to_string(&file).unwrap();
        if let Some(model) = gguf_under_models(&yaml) {
            validate_from_the_root(&file, model);
        } else if let Err(problems) = load_and_check(&file, &builtin()) {
            panic!("{}: {:#?}", file.display(), problems.json());
        }
        let first = yaml.lines().next().unwrap_or_default();
        assert_eq!(
            first,
            "# yaml-language-server: $schema=../schemas/pipeline.schema.json",
            "{}",
            file.display()
        );
    }
}

#[test]
fn jsonl_data_runs_on_good_data_and_names_every_bad_line() {
    let sandbox = Sandbox::new(BIN).unwrap();
    let sft = std::fs::read_to_string(repo().join("examples/data/sft.jsonl")).unwrap();
    sandbox.write("data/sft.jsonl", &sft).unwrap();
    sandbox
        .write("data/prompts.jsonl", "{\"prompt\": \"p\"}\n")
        .unwrap();
    let pipeline = "name: mine\nstages:\n  data: {kind: jsonl-data, sft: data/sft.jsonl, prompts: data/prompts.jsonl}\n";
    sandbox.write("p.yaml", pipeline).unwrap();
    let out = sandbox.run(&["run", "p.yaml"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let written = std::fs::read_to_string(sandbox.path().join("runs/mine/data/sft.jsonl")).unwrap();
    assert_eq!(written.lines().count(), sft.lines().count());

    let bad =
        format!("{sft}{{\"prompt\": \"p\"}}\nnot json\n{{\"prompt\": \"p\", \"response\": 7}}\n");
    sandbox.write("data/sft.jsonl", &bad).unwrap();
    let out = sandbox.run(&["run", "p.yaml"]).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let n = sft.lines().count();
    for (line, what) in [
        (n + 1, "missing \"response\""),
        (n + 2, "not valid JSON"),
        (n + 3, "must be a string"),
    ] {
        let at = format!("sft.jsonl:{line}: ");
        assert!(
            stderr.contains(&at) && stderr.contains(what),
            "{at} {what}: {stderr}"
        );
    }
    assert!(stderr.contains("nothing was produced"), "{stderr}");
    // The earlier good entry stays; the bad data made none.
    let entries = std::fs::read_dir(sandbox.path().join(".poker-pipe/cache"))
        .unwrap()
        .count();
    assert_eq!(entries, 1);
    let out = sandbox.run(&["validate", "p.yaml"]).unwrap();
    assert!(out.status.success());
    std::fs::remove_file(sandbox.path().join("data/prompts.jsonl")).unwrap();
    let out = sandbox.run(&["validate", "p.yaml"]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}
