//! Generation with a KV cache on the golden MHA and GQA checkpoints: greedy
//! tokens equal the argmax of a full forward at every step, left-padded
//! batches equal single prompts, seeded sampling is reproducible, eos stops.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use poker_pipe::backend::{Cpu, Sampling};
use poker_pipe::model::generate::{GenerateOptions, generate};
use poker_pipe::model::{Batch, Llama};

fn model(name: &str) -> Llama<Cpu> {
    Llama::load(
        &Cpu,
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("golden/llama")
            .join(name),
    )
    .unwrap()
}

fn opts(max_new_tokens: usize, sampling: Sampling, seed: u64) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        sampling,
        seed,
        eos: vec![],
        pad_id: 0,
    }
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn greedy_equals_the_argmax_of_a_full_forward_at_every_step() {
    for name in ["mha", "gqa"] {
        let m = model(name);
        let prompts = vec![vec![1, 17, 40, 8], vec![1, 60, 9], vec![1, 33]];
        let outs = generate(&Cpu, &m, &prompts, &opts(8, Sampling::GREEDY, 0));
        for (prompt, out) in prompts.iter().zip(&outs) {
            assert_eq!(out.len(), 8);
            let mut seq = prompt.clone();
            for &t in out {
                let logits = m.logits(&Cpu, &Batch::dense(seq.clone(), 1));
                let last = &logits[(seq.len() - 1) * 96..seq.len() * 96];
                assert_eq!(t, argmax(last), "{name}: step after {seq:?}");
                seq.push(t);
            }
        }
        // Each prompt alone gives the same tokens as the padded batch.
        for (prompt, out) in prompts.iter().zip(&outs) {
            let alone = generate(
                &Cpu,
                &m,
                std::slice::from_ref(prompt),
                &opts(8, Sampling::GREEDY, 0),
            );
            assert_eq!(&alone[0], out, "{name}: left padding changes nothing");
        }
    }
}

#[test]
fn seeded_sampling_is_reproducible_and_eos_stops() {
    let m = model("gqa");
    let prompts = vec![vec![1, 17, 40, 8], vec![1, 60]];
    let how = Sampling {
        temperature: 1.5,
        top_k: 20,
        top_p: 0.95,
    };
    let a = generate(&Cpu, &m, &prompts, &opts(12, how, 7));
    assert_eq!(a, generate(&Cpu, &m, &prompts, &opts(12, how, 7)));
    let others: Vec<_> = (8..12)
        .map(|s| generate(&Cpu, &m, &prompts, &opts(12, how, s)))
        .collect();
    assert!(
        others.iter().any(|o| *o != a),
        "other seeds draw other tokens"
    );
    let greedy = generate(&Cpu, &m, &prompts, &opts(12, Sampling::GREEDY, 0));
    let top1 = Sampling {
        temperature: 1.0,
        top_k: 1,
        top_p: 1.0,
    };
    assert_eq!(generate(&Cpu, &m, &prompts, &opts(12, top1, 3)), greedy);
    // Stop at the third token of the first row: that row ends there, eos
    // included; the other continues.
    let eos = greedy[0][2];
    let stop = GenerateOptions {
        eos: vec![eos],
        ..opts(12, Sampling::GREEDY, 0)
    };
    let stopped = generate(&Cpu, &m, &prompts, &stop);
    let first = greedy[0].iter().position(|&t| t == eos).unwrap();
    assert_eq!(stopped[0], greedy[0][..=first].to_vec());
    let second_end = greedy[1]
        .iter()
        .position(|&t| t == eos)
        .map_or(12, |i| i + 1);
    assert_eq!(stopped[1], greedy[1][..second_end].to_vec());
}

/// `bench decode --device cpu` times a batch of distinct prompts: it reports
/// the batch it ran, a prefill and decode steps that took time, and the
/// bandwidth bound it measured; a batch of zero is a usage error.
#[test]
fn bench_decode_runs_on_the_cpu() {
    let sandbox = poker_pipe_tests::Sandbox::new(env!("CARGO_BIN_EXE_pp-test")).unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/benches/tiny_config.json");
    let config = config.to_str().unwrap();
    let args = [
        "bench",
        "decode",
        "--device",
        "cpu",
        "--model-config",
        config,
        "--prompt-len",
        "12",
        "--new-tokens",
        "4",
        "--batch",
    ];
    let out = sandbox.run(&[&args[..], &["3"]].concat()).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["device"], "cpu");
    assert_eq!(json["batch"], 3);

    for key in ["prefill_tokens_per_s", "steps_per_s", "bound_steps_per_s"] {
        let v = json[key].as_f64().unwrap();
        assert!(v.is_finite() && v > 0.0, "{key}: {v}");
    }
    let tokens = json["tokens_per_s"].as_f64().unwrap();
    let steps = json["steps_per_s"].as_f64().unwrap();
    assert!(
        (tokens - 3.0 * steps).abs() <= 1e-9 * tokens,
        "{tokens} tokens/s, {steps} steps/s"
    );

    let out = sandbox.run(&[&args[..], &["0"]].concat()).unwrap();
    assert_eq!(out.status.code(), Some(1), "a user error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("bench::shape"));
}
