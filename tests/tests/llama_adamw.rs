//! AdamW + clipping against torch's 10-step trajectory
//! (tests/golden/adamw/make_fixture.py; parameters within 1e-5 relative),
//! and gradient accumulation over micro-batches equal to the large batch.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use poker_pipe::backend::Cpu;
use poker_pipe::model::param::Param;
use poker_pipe::model::weights::{HostTensor, load_file};
use poker_pipe::model::{Batch, Llama, TrainPass};
use poker_pipe::train::adamw::{AdamW, AdamWConfig};
use poker_pipe::train::clip::clip_grad_norm;

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

#[test]
fn adamw_with_clipping_follows_torch_for_ten_steps() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/adamw");
    let t = load_file(&dir.join("trajectory.safetensors")).unwrap();
    let h = &t["hyper"].data;
    let cfg = AdamWConfig {
        beta1: h[1],
        beta2: h[2],
        eps: h[3],
        weight_decay: h[4],
    };
    let max_norm = h[5] as f64;
    let mut a = Param::new(&Cpu, "a", &t["a.init"]);
    let mut b = Param::new(&Cpu, "b", &t["b.init"]);
    let mut opt = AdamW::<Cpu>::new(cfg);
    let mut clipped = 0;
    for step in 0..10 {
        a.grad = Some(t[&format!("step{step}.grad.a")].data.clone());
        b.grad = Some(t[&format!("step{step}.grad.b")].data.clone());
        let norm = clip_grad_norm(&Cpu, &mut [&mut a, &mut b], max_norm);
        let want = t[&format!("step{step}.norm")].data[0] as f64;
        assert!(
            (norm - want).abs() < 1e-5 * want,
            "step {step}: norm {norm} vs {want}"
        );
        clipped += usize::from(norm > max_norm);
        opt.update(&Cpu, [&mut a, &mut b], t[&format!("step{step}.lr")].data[0]);
        for (p, key) in [(&a, "a"), (&b, "b")] {
            let err = rel_err(&p.value, &t[&format!("step{step}.{key}")].data);
            assert!(err < 1e-5, "step {step}: {key} rel err {err}");
        }
    }
    assert!(
        clipped > 0 && clipped < 10,
        "clipping active on some steps only"
    );
}

#[test]
fn accumulating_micro_batches_equals_the_large_batch() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/llama/gqa");
    let ids: Vec<u32> = (0..4 * 6).map(|i| (i * 37 % 90 + 4) as u32).collect();
    let targets: Vec<u32> = (0..4 * 6).map(|i| (i * 11 % 90 + 3) as u32).collect();
    let weights: Vec<f32> = (0..4 * 6)
        .map(|i| if i % 6 == 5 { 0.0 } else { 1.0 / 20.0 })
        .collect();
    let run = |micro: usize| {
        let mut model = Llama::load(&Cpu, &dir).unwrap();
        for p in model.params_mut() {
            p.set_trainable(&Cpu, true);
        }
        let rows = micro * 6;
        let mut loss = 0.0;
        for m in 0..4 / micro {
            let span = m * rows..(m + 1) * rows;
            let batch = Batch::dense(ids[span.clone()].to_vec(), micro);
            let pass = TrainPass {
                seed: 0,
                checkpoint: false,
            };
            loss += model
                .loss_backward(&Cpu, &batch, &targets[span.clone()], &weights[span], pass)
                .iter()
                .sum::<f32>();
        }
        let mut opt = AdamW::<Cpu>::new(AdamWConfig::default());
        let grads: Vec<Vec<f32>> = model
            .params_mut()
            .iter()
            .map(|p| p.grad.clone().unwrap())
            .collect();
        opt.update(&Cpu, model.params_mut(), 1e-3);
        let after: Vec<HostTensor> = model.params_mut().iter().map(|p| p.to_host(&Cpu)).collect();
        (loss, grads, after)
    };
    let (loss4, grads4, after4) = run(4);
    let (loss1, grads1, after1) = run(1);
    assert!((loss4 - loss1).abs() < 1e-5 * loss4);
    for (g4, g1) in grads4.iter().zip(&grads1) {
        assert!(rel_err(g1, g4) < 1e-5);
    }
    for (p4, p1) in after4.iter().zip(&after1) {
        assert!(rel_err(&p1.data, &p4.data) < 1e-6);
    }
}
