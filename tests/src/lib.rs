//! Shared helpers for the end-to-end tests in `tests/tests/`: the test stage
//! kinds, and a sandbox folder in which to run the CLI as a real process.

pub mod golden;
pub mod kinds;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// A temporary working directory with its own cache.
pub struct Sandbox {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Sandbox {
    /// A sandbox running `bin` (pass `env!("CARGO_BIN_EXE_pp-test")`).
    pub fn new(bin: &str) -> std::io::Result<Self> {
        Ok(Sandbox {
            dir: tempfile::tempdir()?,
            bin: PathBuf::from(bin),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write a file under the sandbox (creating folders).
    pub fn write(&self, rel: &str, text: &str) -> std::io::Result<PathBuf> {
        let path = self.dir.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// A command for the binary, run inside the sandbox with a clean cache
    /// setting and no test behaviours unless added.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("POKER_PIPE_CACHE")
            .env_remove("PP_TEST_HANG")
            .env_remove("PP_TEST_FAIL")
            .env_remove("PP_TEST_CRASH")
            .env_remove("PP_TEST_PANIC")
            .env_remove("PP_TEST_STEP_MS")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        cmd
    }

    /// Run to completion.
    pub fn run(&self, args: &[&str]) -> std::io::Result<Output> {
        self.command(args).output()
    }

    /// Start in the background with piped output.
    pub fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> std::io::Result<Child> {
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()
    }

    /// `plan --format json` as a value.
    pub fn plan(&self, file: &str, extra: &[&str]) -> Result<serde_json::Value, String> {
        let mut args = vec!["plan", file, "--format", "json"];
        args.extend_from_slice(extra);
        let out = self.run(&args).map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(text(&out));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", text(&out)))
    }

    /// The problems of `validate --format json FILE`, which must fail.
    pub fn problems(&self, file: &str) -> Result<Vec<serde_json::Value>, String> {
        let out = self
            .run(&["validate", "--format", "json", file])
            .map_err(|e| e.to_string())?;
        if out.status.code() != Some(1) {
            return Err(text(&out));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", text(&out)))
    }

    /// Run to completion with `input` on stdin.
    pub fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> std::io::Result<Output> {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            // A command may stop before it reads its input (a model that
            // fails to load): its exit status is what the test checks.
            match std::io::Write::write_all(&mut stdin, input) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e),
                _ => {}
            }
        }
        child.wait_with_output()
    }

    /// Stage names `plan` says would run.
    pub fn would_run(&self, file: &str, extra: &[&str]) -> Result<Vec<String>, String> {
        let plan = self.plan(file, extra)?;
        Ok(plan["stages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["status"] == "run")
            .filter_map(|s| s["name"].as_str().map(String::from))
            .collect())
    }

    /// Stage names a finished `run` reported as `ran`.
    pub fn ran(out: &Output) -> Vec<String> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let name = words.next()?;
                (words.next()? == "ran").then(|| name.to_string())
            })
            .collect()
    }
}

/// stdout and stderr of a finished process, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Send a signal to a child (`INT`, `KILL`).
pub fn signal(child: &Child, name: &str) -> std::io::Result<()> {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("kill -{name} failed")))
    }
}

/// Wait until `path` exists (a stage reached a point), up to `seconds`.
pub fn wait_for(path: &Path, seconds: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// Toy training data in `sft.jsonl` and `pairs.jsonl`: 96 prompts whose
/// answer is a function of their first word, and pairs that prefer it over
/// the next action. A tiny model learns them in a few dozen steps.
pub fn write_toy_data(sandbox: &Sandbox) -> std::io::Result<()> {
    let actions = ["fold", "call", "raise 6", "check"];
    let (mut sft, mut pairs) = (String::new(), String::new());
    for i in 0..96 {
        let a = i % 4;
        let prompt = format!("spot{a} pot {} stack {} ->", 10 + i % 7, 90 - i % 11);
        sft.push_str(&format!(
            "{{\"prompt\":\"{prompt}\",\"response\":\"{}\"}}\n",
            actions[a]
        ));
        pairs.push_str(&format!(
            "{{\"prompt\":\"{prompt}\",\"chosen\":\"{}\",\"rejected\":\"{}\"}}\n",
            actions[a],
            actions[(a + 1) % 4]
        ));
    }
    sandbox.write("sft.jsonl", &sft)?;
    sandbox.write("pairs.jsonl", &pairs)?;
    Ok(())
}
