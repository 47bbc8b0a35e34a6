//! Every command that prints ends quietly when its reader is gone
//! (`poker-pipe plan tiny.yaml | head -1`): exit 0, or SIGPIPE as a shell
//! tool dies of it (141 in a shell), never a panic.

#![allow(clippy::unwrap_used)]

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use poker_pipe_tests::Sandbox;

const BIN: &str = env!("CARGO_BIN_EXE_pp-test");

const PIPELINE: &str = r#"name: pipetest
stages:
  src: {kind: text-source, text: "x"}
  step: {kind: text-step, input: src, suffix: "!"}
"#;

fn repo(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
        .to_str()
        .unwrap()
        .to_string()
}

/// SIGPIPE's number on Linux and the BSDs.
const SIGPIPE: i32 = 13;

/// Runs `cmd` with a stdout whose read end is already closed, so the
/// command's first write fails; panics unless it ended quietly.
fn assert_quiet_with_closed_stdout(mut cmd: Command, what: &[&str]) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = cmd.stdout(writer).stderr(Stdio::piped()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let quiet = out.status.code() == Some(0) || out.status.signal() == Some(SIGPIPE);
    assert!(
        quiet && !stderr.contains("panicked"),
        "{what:?}: status {:?}, signal {:?}\n{stderr}",
        out.status.code(),
        out.status.signal()
    );
}

#[test]
fn every_printing_command_ends_quietly_on_a_broken_pipe() {
    let sandbox = Sandbox::new(BIN).unwrap();
    sandbox.write("p.yaml", PIPELINE).unwrap();
    let tiny = repo("pipelines/tiny.yaml");
    let model: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/llama/mha");
    let model = model.to_str().unwrap();
    let prompts = sandbox.write("prompts.txt", "Hello there\n").unwrap();
    let prompts = prompts.to_str().unwrap();
    // The cache gets an entry first, so that `cache ls` has rows to print.
    let out = sandbox.run(&["run", "p.yaml"]).unwrap();
    assert!(out.status.success(), "{}", poker_pipe_tests::text(&out));
    let commands: Vec<Vec<&str>> = vec![
        vec!["--help"],
        vec!["--version"],
        vec!["validate", &tiny],
        vec!["validate", "--format", "json", &tiny],
        vec!["schema"],
        vec!["plan", &tiny],
        vec!["plan", "--format", "json", &tiny],
        vec!["run", "p.yaml"],
        vec!["cache", "ls"],
        vec!["cache", "verify"],
        vec!["cache", "gc", "p.yaml"],
        vec!["equity", "AsKs", "QdQh", "--iters", "2000"],
        vec![
            "arena",
            "--a",
            "random",
            "--b",
            "calling-station",
            "--hands",
            "20",
        ],
        vec![
            "eval",
            "--model",
            model,
            "--mode",
            "interactive",
            "--max-length",
            "8",
        ],
        vec!["fetch", model],
        vec!["bench", "poker-eval", "--hands", "1000", "--passes", "1"],
        vec!["bench", "poker-stability", "--spots", "20"],
        vec!["bench", "poker-data", "--scenarios", "20"],
    ];
    for args in &commands {
        let mut cmd = sandbox.command(args);
        if args[0] == "eval" {
            cmd.stdin(std::fs::File::open(prompts).unwrap());
        }
        assert_quiet_with_closed_stdout(cmd, args);
    }
}
