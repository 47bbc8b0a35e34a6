//! `poker-pipe eval --mode interactive|batch` on a model directory: piped
//! prompts get one answer each, batch writes `<stem>_results.txt` beside
//! the test file, greedy answers agree between the two modes and repeat
//! exactly, and the adapter beside a model is applied. Bad input is
//! survived: interactive reports a bad line and goes on, batch answers the
//! good lines, names the bad ones and exits 1, and a model folder with
//! non-finite weights is refused with the tensor's name.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use poker_pipe_tests::{Sandbox, text};

const BIN: &str = env!("CARGO_BIN_EXE_pp-test");

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden/llama")
        .join(name)
}

const PROMPTS: [&str; 3] = ["Hello there", "The river card is", "fold, call ->"];

/// `eval` of `model` in `mode`, greedy, with room for a short answer.
fn greedy<'a>(model: &'a Path, mode: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--mode",
        mode,
        "--temperature",
        "0",
        "--max-length",
        "24",
    ];
    args.extend_from_slice(extra);
    args
}

fn interactive(sandbox: &Sandbox, model: &Path, input: &str) -> String {
    let args = greedy(model, "interactive", &[]);
    let out = sandbox.run_with_stdin(&args, input.as_bytes()).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn batch_and_piped_interactive_answer_every_prompt_alike() {
    let sandbox = Sandbox::new(BIN).unwrap();
    let model = golden("mha");
    let lines: Vec<String> = PROMPTS
        .iter()
        .enumerate()
        .map(|(i, p)| {
            // Plain lines and JSON lines with a `prompt` both work.
            if i == 1 {
                format!("{{\"prompt\": \"{p}\", \"response\": \"ignored\"}}")
            } else {
                p.to_string()
            }
        })
        .collect();
    let file = sandbox
        .write("held/test_set.jsonl", &(lines.join("\n") + "\n"))
        .unwrap();
    let args = greedy(&model, "batch", &["--test-file", file.to_str().unwrap()]);
    let out = sandbox.run(&args).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let results_path = sandbox.path().join("held/test_set_results.txt");
    let results = std::fs::read_to_string(&results_path).unwrap();
    let rows: Vec<serde_json::Value> = results
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), PROMPTS.len());
    for (row, prompt) in rows.iter().zip(PROMPTS) {
        assert_eq!(row["prompt"], prompt);
        assert!(!row["response"].as_str().unwrap().is_empty(), "{row}");
    }
    // Greedy is deterministic: a second run writes the same file.
    let out = sandbox.run(&args).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&results_path).unwrap(), results);

    // Piped prompts (with a blank line, which is skipped) get the same answers.
    let answers = interactive(
        &sandbox,
        &model,
        &format!("{}\n\n{}\n{}\n", PROMPTS[0], PROMPTS[1], PROMPTS[2]),
    );
    let answers: Vec<&str> = answers.lines().collect();
    let expected: Vec<&str> = rows
        .iter()
        .map(|r| r["response"].as_str().unwrap())
        .collect();
    assert_eq!(answers, expected);

    // An adapter-only directory finds its base and answers too.
    let adapted = interactive(
        &sandbox,
        &golden("rust_adapter"),
        &format!("{}\n", PROMPTS[0]),
    );
    assert_eq!(adapted.lines().count(), 1);
}

#[test]
fn batch_without_a_test_file_is_a_usage_error() {
    let sandbox = Sandbox::new(BIN).unwrap();
    let model = golden("mha");
    let out = sandbox
        .run(&[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--mode",
            "batch",
        ])
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--test-file"));
}

/// `arena --a model:DIR` seats a model folder at the table: the result is
/// reproducible, and a folder that is not a model is a user error naming
/// the flag.
#[test]
fn arena_seats_a_model_folder() {
    let sandbox = Sandbox::new(BIN).unwrap();
    let spec = format!("model:{}", golden("mha").display());
    let play = || {
        let out = sandbox
            .run(&[
                "arena",
                "--a",
                &spec,
                "--b",
                "calling-station",
                "--hands",
                "6",
                "--max-new-tokens",
                "3",
                "--format",
                "json",
            ])
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = play();
    assert_eq!(first["hands"], 6);
    assert_eq!(first, play());

    let out = sandbox
        .run(&["arena", "--a", "random", "--b", "model:no/such/dir"])
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--b") && err.contains("no/such/dir"), "{err}");
}

/// `arena --trace FILE` writes every decision of player A with the expert's
/// answer and the regret, and names the costliest spot types; a file that
/// cannot be created is a user error.
#[test]
fn arena_traces_player_a() {
    let sandbox = Sandbox::new(BIN).unwrap();
    let trace = sandbox.path().join("trace.jsonl");
    let trace_arg = trace.display().to_string();
    let out = sandbox
        .run(&[
            "arena",
            "--a",
            "calling-station",
            "--b",
            "random",
            "--hands",
            "40",
            "--trace",
            &trace_arg,
        ])
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("bb of regret"), "{stdout}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // A calling station acts at least once in each of its 40 hands.
    assert!(lines.len() >= 40, "{}", lines.len());
    for d in &lines {
        let action = d["action"].as_str().unwrap();
        assert!(["check", "call", "all in"].contains(&action), "{d}");
        assert!(d["prompt"].as_str().unwrap().ends_with("->"), "{d}");
        assert!(d["regret_bb"].as_f64().unwrap() >= 0.0, "{d}");
        assert!(d["spot_type"].is_string() && d["expert"].is_string(), "{d}");
    }

    let out = sandbox
        .run(&[
            "arena",
            "--a",
            "random",
            "--b",
            "random",
            "--hands",
            "2",
            "--trace",
            "no/such/dir/t.jsonl",
        ])
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/dir/t.jsonl"));
}

/// A prompt far longer than `--max-length 24` allows.
fn too_long() -> String {
    "the river card is ".repeat(40)
}

#[test]
fn interactive_reports_a_bad_line_and_goes_on() {
    let sandbox = Sandbox::new(BIN).unwrap();
    let model = golden("mha");
    let mut input = b"Hello there\n\xff\xfe bad\n".to_vec();
    input.extend_from_slice(format!("{}\nfold, call ->\n", too_long()).as_bytes());
    let out = sandbox
        .run_with_stdin(&greedy(&model, "interactive", &[]), &input)
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let answers = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(answers.lines().count(), 2, "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2: invalid UTF-8"), "{stderr}");
    assert!(stderr.contains("line 3: "), "{stderr}");
}

#[test]
fn batch_answers_the_good_lines_and_names_the_bad_ones() {
    let sandbox = Sandbox::new(BIN).unwrap();
    let model = golden("mha");
    let lines = [
        "Hello there".to_string(),
        r#"{"prompt": 3}"#.to_string(),
        too_long(),
        r#"{"response": "call"}"#.to_string(),
        r#"{"prompt": "fold, call ->"}"#.to_string(),
    ];
    let file = sandbox
        .write("t/test_set.jsonl", &(lines.join("\n") + "\n"))
        .unwrap();
    let args = greedy(&model, "batch", &["--test-file", file.to_str().unwrap()]);
    let out = sandbox.run(&args).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for n in [2, 3, 4] {
        assert!(
            stderr.contains(&format!("test_set.jsonl:{n}: ")),
            "{stderr}"
        );
    }
    assert!(!stderr.contains("test_set.jsonl:1:"), "{stderr}");
    let results = std::fs::read_to_string(sandbox.path().join("t/test_set_results.txt")).unwrap();
    let prompts: Vec<String> = results
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["prompt"].to_string())
        .collect();
    assert_eq!(prompts, ["\"Hello there\"", "\"fold, call ->\""]);
}

#[test]
fn non_finite_weights_are_refused_with_the_tensor_name() {
    let sandbox = Sandbox::new(BIN).unwrap();
    let dir = sandbox.path().join("nan-model");
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(golden("mha")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    // safetensors: u64 header length, JSON header, then the data. Poison
    // the first value of `model.embed_tokens.weight` (f32) with NaN.
    let weights = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let tensor = &header["model.embed_tokens.weight"];
    assert_eq!(tensor["dtype"], "F32");
    let at = 8 + n + tensor["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&weights, bytes).unwrap();
    let out = sandbox
        .run_with_stdin(&greedy(&dir, "interactive", &[]), b"Hello there\n")
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("model.embed_tokens.weight") && stderr.contains("NaN"),
        "{stderr}"
    );
}
