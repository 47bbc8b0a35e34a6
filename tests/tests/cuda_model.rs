//! Our LLaMA on the CUDA backend: the HF golden fixtures of tests/golden/llama,
//! 50 training steps tracking the CPU loss curve, and greedy generation equal
//! to the CPU's. The CUDA backend computes in bf16 with f32 accumulation, so
//! the fixtures are held to bf16 tolerances: logits and loss within 1e-2
//! relative, every parameter gradient within 5e-2 (a backward pass chains a
//! dozen bf16 roundings per value).
//!
//! Without a GPU each test prints `SKIPPED` with the reason and passes.

#![allow(clippy::unwrap_used)]

use poker_pipe_tests::golden::{golden, rel_err, sft_batch};

use poker_pipe::backend::{Backend, Cpu, CudaBackend, Dtype, Sampling};
use poker_pipe::model::config::LlamaConfig;
use poker_pipe::model::generate::{GenerateOptions, generate};
use poker_pipe::model::weights::load_file;
use poker_pipe::model::{Batch, Llama, TrainPass};
use poker_pipe::train::adamw::{AdamW, AdamWConfig};

fn gpu(test: &str) -> Option<CudaBackend> {
    match CudaBackend::open(0, Dtype::F32) {
        Ok(be) => Some(be),
        Err(e) => {
            eprintln!("SKIPPED {test}: no usable GPU ({e})");
            None
        }
    }
}

fn check_fixture(be: &CudaBackend, name: &str) {
    let dir = golden(name);
    let expected = load_file(&dir.join("expected.safetensors")).unwrap();
    let mut model = Llama::load(be, &dir).unwrap();
    for p in model.params_mut() {
        p.set_trainable(be, true);
    }
    let (batch, targets, weights) = sft_batch(&expected);
    let err = rel_err(&model.logits(be, &batch), &expected["logits"].data);
    assert!(err < 1e-2, "{name}: logits rel err {err}");
    let pass = TrainPass {
        seed: 0,
        checkpoint: false,
    };
    let loss: f32 = model
        .loss_backward(be, &batch, &targets, &weights, pass)
        .iter()
        .sum();
    let want = expected["loss"].data[0];
    assert!(
        ((loss - want) / want).abs() < 1e-2,
        "{name}: loss {loss} vs {want}"
    );
    let mut checked = 0;
    for p in model.params_mut() {
        let want = &expected[&format!("grad.{}", p.name)];
        let got = be.download(p.grad.as_ref().unwrap());
        let err = rel_err(&got, &want.data);
        assert!(err < 5e-2, "{name}: grad of {} rel err {err}", p.name);
        checked += 1;
    }
    assert!(checked > 0, "{name}: gradients were checked");
}

#[test]
fn golden_fixtures_pass_on_cuda() {
    let Some(be) = gpu("golden_fixtures_pass_on_cuda") else {
        return;
    };
    for name in ["mha", "gqa", "tied"] {
        check_fixture(&be, name);
    }
}

/// The golden GQA config widened to head dim 64, so training and generation
/// also run the flash attention kernels.
fn flash_config() -> LlamaConfig {
    let path = golden("gqa").join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json["head_dim"] = 64.into();
    json["hidden_size"] = 128.into();
    json["intermediate_size"] = 256.into();
    LlamaConfig::parse(&json.to_string(), &path).unwrap()
}

/// Per-step losses of `steps` AdamW steps at `lr` on a fixed batch.
fn loss_curve<B: Backend>(be: &B, mut model: Llama<B>, steps: usize, lr: f32) -> Vec<f32> {
    for p in model.params_mut() {
        p.set_trainable(be, true);
    }
    let (b, t) = (4, 24);
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 37 % 90 + 4) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|i| (i * 11 % 90 + 3) as u32).collect();
    let weights: Vec<f32> = (0..b * t)
        .map(|i| if i % t == t - 1 { 0.0 } else { 1.0 / 92.0 })
        .collect();
    let batch = Batch::dense(ids, b);
    let mut opt = AdamW::<B>::new(AdamWConfig::default());
    (0..steps)
        .map(|step| {
            model.zero_grads(be);
            let pass = TrainPass {
                seed: step as u64,
                checkpoint: step % 2 == 1,
            };
            let loss: f32 = model
                .loss_backward(be, &batch, &targets, &weights, pass)
                .iter()
                .sum();
            opt.update(be, model.params_mut(), lr);
            loss
        })
        .collect()
}

#[test]
fn fifty_training_steps_track_the_cpu_loss_curve() {
    let Some(be) = gpu("fifty_training_steps_track_the_cpu_loss_curve") else {
        return;
    };
    // Learning rates that keep the loss well above zero for 50 steps: a 2%
    // band around a loss near 0 would be below bf16's resolution of logits.
    for (what, cfg, lr) in [
        (
            "gqa",
            LlamaConfig::load(&golden("gqa").join("config.json")).unwrap(),
            1e-3,
        ),
        ("flash", flash_config(), 2e-4),
    ] {
        let cpu = loss_curve(&Cpu, Llama::random(&Cpu, cfg.clone(), 7).unwrap(), 50, lr);
        let gpu = loss_curve(&be, Llama::random(&be, cfg, 7).unwrap(), 50, lr);
        assert!(
            cpu[49] < 0.8 * cpu[0],
            "{what}: the CPU run learns: {cpu:?}"
        );
        for (step, (g, c)) in gpu.iter().zip(&cpu).enumerate() {
            assert!(
                ((g - c) / c).abs() < 0.02,
                "{what}: step {step}: cuda loss {g} vs cpu {c}"
            );
        }
    }
}

#[test]
fn greedy_generation_equals_the_cpu() {
    let Some(be) = gpu("greedy_generation_equals_the_cpu") else {
        return;
    };
    let opts = GenerateOptions {
        max_new_tokens: 12,
        sampling: Sampling::GREEDY,
        seed: 0,
        eos: vec![],
        pad_id: 0,
    };
    let prompts = vec![vec![1, 17, 40, 8], vec![1, 60, 9], vec![1, 33]];
    for name in ["mha", "gqa"] {
        let cpu = generate(
            &Cpu,
            &Llama::load(&Cpu, &golden(name)).unwrap(),
            &prompts,
            &opts,
        );
        let gpu = generate(
            &be,
            &Llama::load(&be, &golden(name)).unwrap(),
            &prompts,
            &opts,
        );
        assert_eq!(gpu, cpu, "{name}: greedy tokens");
    }
}
