//! TensorBoard shows every stage of a run: TensorBoard's own reader
//! (tests/tensorboard/read_scalars.py), pointed at `runs/<pipeline>` as a
//! user would point `tensorboard --logdir`, finds one run per stage through
//! the links into the cache, with the same scalars at the same steps as
//! `metrics.jsonl` (to f32, TensorBoard's precision). The Python with the `tensorboard` package comes from
//! `POKER_PIPE_TENSORBOARD_PYTHON` (`.ci/run` makes one); without it the
//! test prints SKIPPED.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use poker_pipe_tests::{Sandbox, text};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pp-test");

fn pipeline() -> String {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/llama/mha");
    format!(
        r#"name: tb
model: {{base: "{}"}}
stages:
  data: {{kind: jsonl-data, sft: sft.jsonl, pairs: pairs.jsonl}}
  sft:
    kind: sft
    data: data.sft
    lora: {{rank: 4, alpha: 8, dropout: 0.0}}
    optim: {{lr: 2.0e-2}}
    batch_size: 8
    epochs: 3
    max_seq_len: 32
  reward: {{kind: reward, init: sft, data: data.pairs, test_data: data.pairs, optim: {{lr: 1.0e-3}}, max_seq_len: 32}}
"#,
        base.display()
    )
}

#[test]
fn tensorboard_reads_every_stage_as_metrics_jsonl_has_it() {
    let Some(python) = std::env::var_os("POKER_PIPE_TENSORBOARD_PYTHON") else {
        println!("SKIPPED tensorboard events: POKER_PIPE_TENSORBOARD_PYTHON is not set");
        return;
    };
    let sandbox = Sandbox::new(BIN).unwrap();
    let (mut sft, mut pairs) = (String::new(), String::new());
    for i in 0..24 {
        let (spot, good, bad) =
            [("two seven", "fold", "call"), ("ace king", "raise", "fold")][i % 2];
        sft.push_str(&format!(
            "{{\"prompt\":\"{spot}\",\"response\":\"{good}\"}}\n"
        ));
        pairs.push_str(&format!(
            "{{\"prompt\":\"{spot}\",\"chosen\":\"{good}\",\"rejected\":\"{bad}\"}}\n"
        ));
    }
    sandbox.write("sft.jsonl", &sft).unwrap();
    sandbox.write("pairs.jsonl", &pairs).unwrap();
    sandbox.write("p.yaml", &pipeline()).unwrap();
    let out = sandbox.run(&["run", "p.yaml"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tensorboard/read_scalars.py");
    let runs = sandbox.path().join("runs/tb");
    let read = std::process::Command::new(python)
        .arg(&script)
        .arg(&runs)
        .output()
        .unwrap();
    assert!(read.status.success(), "{}", text(&read));
    let found: Value = serde_json::from_slice(&read.stdout).unwrap();
    for stage in ["sft", "reward"] {
        let metrics = std::fs::read_to_string(runs.join(stage).join("metrics.jsonl")).unwrap();
        let lines: Vec<Value> = metrics
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(lines.len() > 2, "{stage}: {metrics}");
        let scalars = &found[stage];
        for name in lines[0]
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "step")
        {
            let expected: Vec<(u64, f32)> = lines
                .iter()
                .map(|l| {
                    (
                        l["step"].as_u64().unwrap(),
                        l[name].as_f64().unwrap() as f32,
                    )
                })
                .collect();
            let seen: Vec<(u64, f32)> = scalars[name]
                .as_array()
                .unwrap_or_else(|| panic!("{stage}: no `{name}` in {scalars}"))
                .iter()
                .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap() as f32))
                .collect();
            assert_eq!(seen, expected, "{stage}/{name}");
        }
        if stage == "reward" {
            // Per step, the batches' accuracy (compared above); at the last
            // step, the held-out pairs' from the summary.
            assert!(lines[0]["accuracy"].is_f64(), "{}", lines[0]);
            let summary: Value = serde_json::from_str(
                &std::fs::read_to_string(runs.join(stage).join("summary.json")).unwrap(),
            )
            .unwrap();
            let last = lines.last().unwrap()["step"].as_u64().unwrap();
            let want = summary["pairwise_accuracy"].as_f64().unwrap() as f32;
            let seen = &scalars["test_pairwise_accuracy"];
            assert_eq!(seen.as_array().map(Vec::len), Some(1), "{scalars}");
            assert_eq!(seen[0][0].as_u64(), Some(last));
            assert_eq!(seen[0][1].as_f64().map(|v| v as f32), Some(want));
        }
        // The wall-clock figures: the run `<stage>/wall`, one value of each
        // per step, positive, and the memory no more than the stage's
        // measured peak.
        let wall = &found[format!("{stage}/wall")];
        let memory = serde_json::from_str::<Value>(
            &std::fs::read_to_string(runs.join(stage).join("memory.json")).unwrap(),
        )
        .unwrap();
        let peak_gib = memory["peak_host_bytes"].as_f64().unwrap() / f64::from(1u32 << 30);
        for tag in ["tokens_per_s", "peak_memory_gib"] {
            let points = wall[tag]
                .as_array()
                .unwrap_or_else(|| panic!("{stage}/wall: no `{tag}` in {wall}"));
            let steps: Vec<u64> = points.iter().map(|p| p[0].as_u64().unwrap()).collect();
            let want: Vec<u64> = lines.iter().map(|l| l["step"].as_u64().unwrap()).collect();
            assert_eq!(steps, want, "{stage}/wall/{tag}");
            for p in points {
                let v = p[1].as_f64().unwrap();
                assert!(v.is_finite() && v > 0.0, "{stage}/wall/{tag}: {v}");
                if tag == "peak_memory_gib" {
                    assert!(v <= peak_gib * 1.001, "{stage}: {v} GiB > peak {peak_gib}");
                }
            }
        }
    }
}
