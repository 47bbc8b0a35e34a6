//! `eval` survives bad input: interactive reports a bad line and goes on,
//! batch answers the good lines, names the bad ones and exits 1, and a
//! model folder with non-finite weights is refused with the tensor's name.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use poker_pipe_tests::{Sandbox, text};

const BIN: &str = env!("CARGO_BIN_EXE_pp-test");

fn mha() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/llama/mha")
}

/// A prompt far longer than `--max-length 24` allows.
fn too_long() -> String {
    "the river card is ".repeat(40)
}

#[test]
fn interactive_reports_a_bad_line_and_goes_on() {
    let sandbox = Sandbox::new(BIN).unwrap();
    let model = mha();
    let mut input = b"Hello there\n\xff\xfe bad\n".to_vec();
    input.extend_from_slice(format!("{}\nfold, call ->\n", too_long()).as_bytes());
    let args = [
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--mode",
        "interactive",
        "--temperature",
        "0",
        "--max-length",
        "24",
    ];
    let out = sandbox.run_with_stdin(&args, &input).unwrap();
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
    let model = mha();
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
    let out = sandbox
        .run(&[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--mode",
            "batch",
            "--test-file",
            file.to_str().unwrap(),
            "--temperature",
            "0",
            "--max-length",
            "24",
        ])
        .unwrap();
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
    for entry in std::fs::read_dir(mha()).unwrap() {
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
    let prompts = sandbox.write("p.txt", "Hello there\n").unwrap();
    let out = sandbox
        .command(&[
            "eval",
            "--model",
            dir.to_str().unwrap(),
            "--mode",
            "interactive",
        ])
        .stdin(std::fs::File::open(prompts).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("model.embed_tokens.weight") && stderr.contains("NaN"),
        "{stderr}"
    );
}
