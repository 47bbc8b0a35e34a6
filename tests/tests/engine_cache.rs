//! Cache integrity: killed runs leave no finished-looking entry and resume;
//! Ctrl-C saves state and exits 130; concurrent runs wait; ls, gc, verify.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::time::Duration;

use poker_pipe_tests::{Sandbox, signal, text, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_pp-test");

const PIPELINE: &str = r#"name: cachetest
stages:
  src: {kind: text-source, text: "x"}
  slow: {kind: text-step, input: src, suffix: "!", steps: 40}
  after: {kind: text-step, input: slow, suffix: "?"}
"#;

fn setup() -> Sandbox {
    let sandbox = Sandbox::new(BIN).unwrap();
    sandbox.write("p.yaml", PIPELINE).unwrap();
    sandbox
}

fn hash_of(sandbox: &Sandbox, stage: &str) -> String {
    let plan = sandbox.plan("p.yaml", &[]).unwrap();
    plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == stage)
        .map(|s| s["hash"].as_str().unwrap().to_string())
        .unwrap()
}

/// Start a slow run and wait until stage `slow` has saved some steps.
fn start_slow(sandbox: &Sandbox) -> std::process::Child {
    let child = sandbox
        .spawn(&["run", "p.yaml"], &[("PP_TEST_STEP_MS", "50")])
        .unwrap();
    let state = sandbox
        .path()
        .join(".poker-pipe/work")
        .join(hash_of(sandbox, "slow"))
        .join("step.txt");
    assert!(wait_for(&state, 20), "stage never started");
    std::thread::sleep(Duration::from_millis(150));
    child
}

#[test]
fn sigkill_mid_stage_leaves_no_entry_and_the_next_run_resumes() {
    let sandbox = setup();
    let mut child = start_slow(&sandbox);
    signal(&child, "KILL").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), None, "killed by a signal");
    let slow = hash_of(&sandbox, "slow");
    let entry = sandbox.path().join(".poker-pipe/cache").join(&slow);
    assert!(!entry.exists(), "a killed stage must not leave an entry");
    assert_eq!(sandbox.would_run("p.yaml", &[]).unwrap(), ["slow", "after"]);
    let out = sandbox.run(&["run", "p.yaml"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(Sandbox::ran(&out), ["slow", "after"]);
    let log = std::fs::read_to_string(entry.join("training.log")).unwrap();
    assert!(log.contains("resuming from step"), "{log}");
    let model = std::fs::read_to_string(entry.join("model.txt")).unwrap();
    assert_eq!(model, format!("x{}", "!".repeat(40)));
    let leftovers = std::fs::read_dir(sandbox.path().join(".poker-pipe/tmp"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "temporary folders of dead runs are cleaned");
}

#[test]
fn ctrl_c_saves_state_exits_130_and_resumes() {
    let sandbox = setup();
    let child = start_slow(&sandbox);
    signal(&child, "INT").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("interrupted"), "{stderr}");
    let out = sandbox.run(&["run", "p.yaml"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(Sandbox::ran(&out), ["slow", "after"]);
    let log =
        std::fs::read_to_string(sandbox.path().join("runs/cachetest/slow/training.log")).unwrap();
    assert!(log.contains("interrupted at step"), "{log}");
    assert!(log.contains("resuming from step"), "{log}");
}

#[test]
fn a_failing_or_crashing_stage_keeps_what_finished() {
    let sandbox = setup();
    let mut cmd = sandbox.command(&["run", "p.yaml"]);
    let out = cmd.env("PP_TEST_FAIL", "slow").output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("failing on purpose"));
    let mut cmd = sandbox.command(&["run", "p.yaml"]);
    let out = cmd.env("PP_TEST_PANIC", "slow").output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stage `slow` crashed: a bug in stage slow")
    );
    let mut cmd = sandbox.command(&["run", "p.yaml"]);
    let out = cmd.env("PP_TEST_CRASH", "slow").output().unwrap();
    assert_eq!(out.status.code(), None, "aborted: {}", text(&out));
    assert_eq!(sandbox.would_run("p.yaml", &[]).unwrap(), ["slow", "after"]);
    let out = sandbox.run(&["run", "p.yaml"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(Sandbox::ran(&out), ["slow", "after"]);
}

#[test]
fn a_second_run_waits_for_the_first() {
    let sandbox = setup();
    let first = sandbox
        .spawn(&["run", "p.yaml"], &[("PP_TEST_HANG", "slow")])
        .unwrap();
    let state_dir = sandbox
        .path()
        .join(".poker-pipe/work")
        .join(hash_of(&sandbox, "slow"));
    assert!(wait_for(&state_dir.join("training.log"), 20));
    let mut second = sandbox.spawn(&["run", "p.yaml"], &[]).unwrap();
    // Follow the second run's stderr until it says it is waiting.
    let stderr = second.stderr.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let waiting = loop {
        match seen.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.contains("waiting: another poker-pipe process") => break true,
            Ok(_) => {}
            Err(_) => break false,
        }
    };
    assert!(waiting, "the second run never said it was waiting");
    signal(&first, "INT").unwrap();
    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(130), "{}", text(&first));
    let second = second.wait_with_output().unwrap();
    reader.join().unwrap();
    assert!(second.status.success(), "{}", text(&second));
    assert_eq!(Sandbox::ran(&second), ["slow", "after"]);
    let out = sandbox.run(&["cache", "verify"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn ls_verify_and_gc() {
    let sandbox = setup();
    let out = sandbox.run(&["run", "p.yaml"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = sandbox.run(&["cache", "ls"]).unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("cachetest/slow"), "{listing}");
    assert!(listing.contains("3 entries"), "{listing}");

    let out = sandbox.run(&["cache", "verify"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let slow = hash_of(&sandbox, "slow");
    let model = sandbox
        .path()
        .join(".poker-pipe/cache")
        .join(&slow)
        .join("model.txt");
    std::fs::write(&model, "tampered").unwrap();
    let out = sandbox.run(&["cache", "verify"]).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("TAMPERED") && report.contains("model.txt"),
        "{report}"
    );
    assert_eq!(sandbox.would_run("p.yaml", &[]).unwrap(), ["slow"]);
    let out = sandbox.run(&["run", "p.yaml"]).unwrap();
    assert_eq!(Sandbox::ran(&out), ["slow"]);

    // A changed pipeline leaves the old `after` unused: gc drops it.
    sandbox
        .write(
            "p.yaml",
            &PIPELINE.replace("suffix: \"?\"", "suffix: \"??\""),
        )
        .unwrap();
    let out = sandbox.run(&["run", "p.yaml"]).unwrap();
    assert_eq!(Sandbox::ran(&out), ["after"]);
    let out = sandbox.run(&["cache", "gc", "p.yaml"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("removed 1 folder(s)"), "{report}");
    assert!(!report.contains("freed 0 B"), "{report}");
    assert!(sandbox.would_run("p.yaml", &[]).unwrap().is_empty());
    let out = sandbox.run(&["cache", "ls"]).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 entries"));
}
