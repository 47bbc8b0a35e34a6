//! Our LLaMA against HF transformers on the committed fixtures of
//! tests/golden/llama/make_fixtures.py: logits (relative L2 error < 1e-4),
//! the masked loss (< 1e-5) and the gradient of every parameter (< 1e-3).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use poker_pipe::backend::Cpu;
use poker_pipe::model::weights::{TensorMap, load_file};
use poker_pipe::model::{Batch, Llama, TrainPass};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden/llama")
        .join(name)
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// The token batch of a fixture and the SFT targets/weights of its loss:
/// row `(b, t)` predicts token `t + 1`, weighted by the mask / mask count.
fn sft_batch(expected: &TensorMap) -> (Batch, Vec<u32>, Vec<f32>) {
    let ids = &expected["input_ids"];
    let (b, t) = (ids.shape[0], ids.shape[1]);
    let ids: Vec<u32> = ids.data.iter().map(|&x| x as u32).collect();
    let mask = &expected["loss_mask"].data;
    let count: f32 = (0..b)
        .flat_map(|r| (1..t).map(move |j| (r, j)))
        .map(|(r, j)| mask[r * t + j])
        .sum();
    let mut targets = vec![0; b * t];
    let mut weights = vec![0.0; b * t];
    for r in 0..b {
        for j in 0..t - 1 {
            targets[r * t + j] = ids[r * t + j + 1];
            weights[r * t + j] = mask[r * t + j + 1] / count;
        }
    }
    (Batch::dense(ids, b), targets, weights)
}

/// Checks a fixture and returns every parameter's gradient.
fn check_causal(name: &str, checkpoint: bool) -> Vec<(String, Vec<f32>)> {
    let dir = golden(name);
    let expected = load_file(&dir.join("expected.safetensors")).unwrap();
    let mut model = Llama::load(&Cpu, &dir).unwrap();
    for p in model.params_mut() {
        p.set_trainable(&Cpu, true);
    }
    let (batch, targets, weights) = sft_batch(&expected);
    let logits = model.logits(&Cpu, &batch);
    let err = rel_err(&logits, &expected["logits"].data);
    assert!(err < 1e-4, "{name}: logits rel err {err}");
    let pass = TrainPass {
        seed: 0,
        checkpoint,
    };
    let loss = model.loss_backward(&Cpu, &batch, &targets, &weights, pass);
    let want = expected["loss"].data[0];
    assert!(
        ((loss - want) / want).abs() < 1e-5,
        "{name}: loss {loss} vs {want}"
    );
    let mut grads = Vec::new();
    for p in model.params_mut() {
        let want = &expected[&format!("grad.{}", p.name)];
        let got = p.grad.clone().unwrap();
        let err = rel_err(&got, &want.data);
        assert!(err < 1e-3, "{name}: grad of {} rel err {err}", p.name);
        grads.push((p.name.clone(), got));
    }
    let in_fixture = expected.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(
        grads.len(),
        in_fixture,
        "{name}: every parameter's gradient is checked"
    );
    grads
}

#[test]
fn mha_matches_transformers() {
    check_causal("mha", false);
}

#[test]
fn gqa_with_llama3_rope_scaling_matches_transformers() {
    check_causal("gqa", false);
}

#[test]
fn tied_embeddings_in_the_rope_parameters_form_match_transformers() {
    check_causal("tied", false);
}

#[test]
fn activation_checkpointing_gives_identical_gradients() {
    assert_eq!(check_causal("gqa", true), check_causal("gqa", false));
}

#[test]
fn reward_model_scores_and_gradients_match_transformers() {
    let dir = golden("reward");
    let expected = load_file(&dir.join("expected.safetensors")).unwrap();
    let mut model = Llama::load(&Cpu, &dir).unwrap();
    assert!(model.lm_head.is_none() && model.score.is_some());
    for p in model.params_mut() {
        p.set_trainable(&Cpu, true);
    }
    let ids = &expected["input_ids"];
    let batch = Batch::dense(ids.data.iter().map(|&x| x as u32).collect(), ids.shape[0]);
    let want = &expected["scores"].data;
    let got = model.scores(&Cpu, &batch).unwrap();
    assert!(rel_err(&got, want) < 1e-4, "scores {got:?} vs {want:?}");
    let pass = TrainPass {
        seed: 0,
        checkpoint: false,
    };
    let again = model
        .scores_backward(&Cpu, &batch, &expected["coef"].data, pass)
        .unwrap();
    assert_eq!(got, again);
    let mut checked = 0;
    for p in model.params_mut() {
        let err = rel_err(
            p.grad.as_ref().unwrap(),
            &expected[&format!("grad.{}", p.name)].data,
        );
        assert!(err < 1e-3, "reward grad of {} rel err {err}", p.name);
        checked += 1;
    }
    assert_eq!(
        checked,
        expected.keys().filter(|k| k.starts_with("grad.")).count()
    );
}
