//! Our LLaMA against HF transformers on the committed fixtures of
//! tests/golden/llama/make_fixtures.py: logits (relative L2 error < 1e-4),
//! the masked loss (< 1e-5) and the gradient of every parameter (< 1e-3).

#![allow(clippy::unwrap_used)]

use poker_pipe_tests::golden::{golden, rel_err, sft_batch};

use poker_pipe::backend::Cpu;
use poker_pipe::model::weights::load_file;
use poker_pipe::model::{Batch, Llama, TrainPass};

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
