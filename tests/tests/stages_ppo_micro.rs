//! The memory knobs of the `ppo` stage change how it runs, never what it
//! computes: a roll-out batch of 6 generated and trained in micro-batches
//! of 2 (with activation checkpointing and the optimizer offloaded to the
//! host) or of 4 (a ragged last piece) ends with the same metrics and the
//! same actor, bit for bit, as the whole batch at once.

#![allow(clippy::unwrap_used)]

mod stages_ppo_support;

use std::path::{Path, PathBuf};

use poker_pipe::graph::{Cancel, Outcome, StageKind};
use poker_pipe::model::weights;
use poker_pipe::stages::ppo::{Ppo, PpoParams};
use stages_ppo_support::{Fixture, context, fixture, ppo_inputs};

fn params() -> PpoParams {
    serde_json::from_value(serde_json::json!({
        "actor": "sft", "critic": "reward", "prompts": "data.prompts",
        "actor_lr": 1e-3, "critic_lr": 1e-3, "batch_size": 6, "epochs": 1,
        "max_new_tokens": 3, "ema": 0.9, "ev_weight": 0.5, "ppo_epochs": 2, "seed": 9
    }))
    .unwrap()
}

/// Runs the stage with these execution settings; returns its output folder.
fn run(f: &Fixture, name: &str, micro: u32, checkpointing: bool, offload: bool) -> PathBuf {
    let root = f.dir.path().join(name);
    let mut ctx = context("rlhf", &root, &ppo_inputs(f), Cancel::new()).unwrap();
    ctx.exec.micro_batch = micro;
    ctx.exec.activation_checkpointing = checkpointing;
    ctx.exec.offload_optimizer = offload;
    match Ppo.run(&params(), &mut ctx) {
        Ok(outcome) => assert_eq!(outcome, Outcome::Done),
        Err(e) => panic!("{:?}", e.report),
    }
    root.join("out")
}

fn metrics(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn same_outputs(want: &Path, got: &Path, label: &str) {
    let (a, b) = (metrics(want), metrics(got));
    assert_eq!(a.len(), b.len(), "{label}");
    for (x, y) in a.iter().zip(&b) {
        for (key, value) in x.as_object().unwrap() {
            let (Some(p), Some(q)) = (value.as_f64(), y[key].as_f64()) else {
                continue;
            };
            assert_eq!(p.to_bits(), q.to_bits(), "{label}: {key} {p} vs {q}");
        }
    }
    for folder in ["actor", "actor_ema"] {
        let file = |out: &Path| {
            weights::load_file(&out.join(folder).join("adapter_model.safetensors")).unwrap()
        };
        let (a, b) = (file(want), file(got));
        assert_eq!(a.len(), b.len());
        for (name, t) in &a {
            let u = &b[name];
            for (p, q) in t.data.iter().zip(&u.data) {
                assert_eq!(
                    p.to_bits(),
                    q.to_bits(),
                    "{label}: {folder} {name}: {p} vs {q}"
                );
            }
        }
    }
}

#[test]
fn micro_batches_checkpointing_and_offload_leave_ppo_results_unchanged() {
    let f = fixture().unwrap();
    let whole = run(&f, "whole", 6, false, false);
    let pieces = run(&f, "pieces", 2, true, true);
    let ragged = run(&f, "ragged", 4, false, false);
    same_outputs(&whole, &pieces, "micro-batch 2, checkpointing, offload");
    same_outputs(&whole, &ragged, "micro-batch 4");
    // The run trained: the actor moved away from the SFT adapter.
    let first = &metrics(&whole)[0];
    assert!(first["policy_loss"].as_f64().is_some_and(f64::is_finite));
}
