//! `run --quiet` and `--verbose` do what they say, off a terminal: quiet
//! prints no stage chatter and no progress (the final table still goes to
//! stdout and training.log still gets every line), verbose prints every
//! training step, and the default prints a few throttled progress lines,
//! not one per step.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use poker_pipe_tests::{Sandbox, text};

const BIN: &str = env!("CARGO_BIN_EXE_pp-test");

fn pipeline() -> String {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/llama/mha");
    format!(
        r#"name: talk
model: {{base: "{}"}}
stages:
  data: {{kind: jsonl-data, sft: sft.jsonl}}
  sft:
    kind: sft
    data: data.sft
    lora: {{rank: 2, alpha: 4, dropout: 0.0}}
    batch_size: 4
    epochs: 10
    max_seq_len: 16
"#,
        base.display()
    )
}

/// stderr of a fresh `run` with `flags`, and its training.log.
fn run(flags: &[&str]) -> (String, String) {
    let sandbox = Sandbox::new(BIN).unwrap();
    let sft: String = (0..8)
        .map(|i| format!("{{\"prompt\":\"ace king {i}\",\"response\":\"raise\"}}\n"))
        .collect();
    sandbox.write("sft.jsonl", &sft).unwrap();
    sandbox.write("p.yaml", &pipeline()).unwrap();
    let mut args = vec!["run", "p.yaml"];
    args.extend_from_slice(flags);
    let out = sandbox.run(&args).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("sft"));
    // Where the run's report went, unless quiet; it is written either way.
    let quiet = flags.contains(&"--quiet");
    assert_eq!(
        stdout.contains("report: runs/talk/report.html"),
        !quiet,
        "{stdout}"
    );
    assert!(sandbox.path().join("runs/talk/report.html").is_file());
    let log = std::fs::read_to_string(sandbox.path().join("runs/talk/sft/training.log"));
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        log.unwrap_or_default(),
    )
}

fn step_lines(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.starts_with("[sft] step "))
        .count()
}

#[test]
fn quiet_and_verbose_do_what_they_say() {
    // 8 examples, batch 4, 10 epochs: 20 steps.
    let (quiet, quiet_log) = run(&["--quiet"]);
    assert_eq!(step_lines(&quiet), 0, "{quiet}");
    assert!(!quiet.contains("running sft"), "{quiet}");
    assert!(!quiet.contains("  sft: "), "{quiet}");
    let (verbose, _) = run(&["--verbose"]);
    assert_eq!(step_lines(&verbose), 20, "{verbose}");
    let (normal, normal_log) = run(&[]);
    assert!(normal.contains("running sft"), "{normal}");
    // The first and the last step, and one more only if 10 s went by.
    assert!((2..=4).contains(&step_lines(&normal)), "{normal}");
    // The files do not depend on what the terminal was told.
    assert_eq!(quiet_log.lines().count(), normal_log.lines().count());
}
