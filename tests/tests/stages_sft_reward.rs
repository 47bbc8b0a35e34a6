//! The reward stage's one-forward training pass against the model's own
//! `scores_backward` (the reference, checked against transformers): same
//! scores and same gradients on random weights, a random head and random
//! score gradients.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use poker_pipe::backend::{Backend, Cpu};
use poker_pipe::model::batch::Batch;
use poker_pipe::model::llama::TrainPass;
use poker_pipe::model::param::Param;
use poker_pipe::model::weights::HostTensor;
use poker_pipe::model::{Llama, LlamaConfig};
use poker_pipe::stages::reward::scores_backward;
use poker_pipe::stages::sft::train_all;

/// A seeded uniform generator in [lo, hi) (splitmix64): enough for test
/// inputs without another dependency.
struct Uniform(u64);

impl Uniform {
    fn next(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        lo + (hi - lo) * ((z >> 40) as f32 / (1u64 << 24) as f32)
    }
}

fn model(cfg: &LlamaConfig, head: &[f32]) -> Llama<Cpu> {
    let mut m = Llama::random(&Cpu, cfg.clone(), 5).unwrap();
    m.score = Some(Param::new(
        &Cpu,
        "score.weight",
        &HostTensor::new(vec![1, head.len()], head.to_vec()),
    ));
    train_all(&Cpu, &mut m);
    m
}

#[test]
fn one_forward_scores_backward_matches_the_model_reference() {
    let cfg = LlamaConfig::parse(
        r#"{"vocab_size": 50, "hidden_size": 16, "intermediate_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 2, "pad_token_id": 0}"#,
        Path::new("config.json"),
    )
    .unwrap();
    let mut rng = Uniform(11);
    let head: Vec<f32> = (0..16).map(|_| rng.next(-0.5, 0.5)).collect();
    let mut ours = model(&cfg, &head);
    let mut reference = model(&cfg, &head);
    let seqs: Vec<Vec<u32>> = (0..4)
        .map(|i| (0..3 + i).map(|_| rng.next(1.0, 49.0) as u32).collect())
        .collect();
    let batch = Batch::left_padded(&seqs, 0);
    let pass = TrainPass {
        seed: 1,
        checkpoint: false,
    };
    let dscores: Vec<f32> = (0..4).map(|_| rng.next(-1.0, 1.0)).collect();
    let (_, got) =
        scores_backward(&Cpu, &mut ours, &batch, pass, |_| ((), dscores.clone())).unwrap();
    let want = reference
        .scores_backward(&Cpu, &batch, &dscores, pass)
        .unwrap();
    assert!(
        want.iter().any(|w| w.abs() > 1e-4),
        "scores are not trivial"
    );
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{g} vs {w}");
    }
    for (a, b) in ours.params_mut().into_iter().zip(reference.params_mut()) {
        let ga = Cpu.download(a.grad.as_ref().unwrap());
        let gb = Cpu.download(b.grad.as_ref().unwrap());
        // The LM head is not on a reward model's path.
        let on_path = b.name != "lm_head.weight";
        assert_eq!(on_path, gb.iter().any(|y| *y != 0.0), "{}", b.name);
        for (x, y) in ga.iter().zip(&gb) {
            assert!(
                (x - y).abs() <= 1e-5 * y.abs().max(1e-3),
                "{}: {x} vs {y}",
                a.name
            );
        }
    }
}
