//! LoRA against PEFT (fixture tests/golden/llama/lora from make_fixtures.py):
//! logits (relative L2 error < 1e-4) and the gradient of every LoRA
//! parameter (< 1e-3); merge/unmerge; PEFT layout round trip; dropout
//! gradients by finite differences; and the adapter our code saved, loaded
//! by PEFT (rust_adapter/peft_check.json, written by the script).

#![allow(clippy::unwrap_used)]

use poker_pipe_tests::golden::{
    Lcg, assert_gradients_match_differences, golden, rel_err, sft_batch,
};
use std::path::PathBuf;

use poker_pipe::backend::Cpu;
use poker_pipe::model::llama::PROJECTIONS;
use poker_pipe::model::lora::{self, LoraConfig};
use poker_pipe::model::weights::{TensorMap, load_file, save_file};
use poker_pipe::model::{Batch, Llama, TrainPass};

fn base() -> Llama<Cpu> {
    Llama::load(&Cpu, &golden("mha")).unwrap()
}

#[test]
fn peft_adapter_logits_and_lora_gradients_match() {
    let expected = load_file(&golden("lora").join("expected.safetensors")).unwrap();
    let mut model = base();
    let cfg = lora::load(&Cpu, &mut model, &golden("lora")).unwrap();
    assert_eq!((cfg.rank, cfg.alpha, cfg.targets.len()), (4, 8.0, 7));
    let (batch, targets, weights) = sft_batch(&expected);
    let err = rel_err(&model.logits(&Cpu, &batch), &expected["logits"].data);
    assert!(err < 1e-4, "logits rel err {err}");
    let loss = model.loss_backward(
        &Cpu,
        &batch,
        &targets,
        &weights,
        TrainPass {
            seed: 0,
            checkpoint: false,
        },
    );
    let loss: f32 = loss.iter().sum();
    assert!((loss - expected["loss"].data[0]).abs() < 1e-5 * loss.abs());
    let mut checked = 0;
    for p in model.params_mut() {
        match p.grad.as_ref() {
            Some(g) => {
                let want = &expected[&format!("grad.{}", p.name)];
                let err = rel_err(g, &want.data);
                assert!(err < 1e-3, "grad of {} rel err {err}", p.name);
                checked += 1;
            }
            None => assert!(!p.name.contains("lora"), "{} must train", p.name),
        }
    }
    assert_eq!(
        checked,
        expected.keys().filter(|k| k.starts_with("grad.")).count()
    );
    assert_eq!(checked, 2 * 7 * 2, "A and B of 7 projections in 2 layers");
}

#[test]
fn merge_gives_the_same_logits_and_unmerge_restores_the_base() {
    let expected = load_file(&golden("lora").join("expected.safetensors")).unwrap();
    let (batch, _, _) = sft_batch(&expected);
    let mut model = base();
    let before = model.base_tensors(&Cpu);
    lora::load(&Cpu, &mut model, &golden("lora")).unwrap();
    let unmerged = model.logits(&Cpu, &batch);
    lora::set_merged(&Cpu, &mut model, true);
    assert!(rel_err(&model.logits(&Cpu, &batch), &unmerged) < 1e-5);
    assert!(
        rel_err(
            &model.base_tensors(&Cpu)["model.layers.1.mlp.up_proj.weight"].data,
            &before["model.layers.1.mlp.up_proj.weight"].data
        ) > 1e-3
    );
    lora::set_merged(&Cpu, &mut model, false);
    for (name, t) in model.base_tensors(&Cpu) {
        assert!(
            rel_err(&t.data, &before[&name].data) < 1e-6,
            "{name} restored"
        );
    }
    assert!(rel_err(&model.logits(&Cpu, &batch), &unmerged) < 1e-6);
}

/// A fresh adapter with non-zero B (A from PEFT's init, B random), so it
/// changes the logits.
fn rust_adapter(model: &mut Llama<Cpu>) -> LoraConfig {
    let cfg = LoraConfig {
        rank: 2,
        alpha: 6.0,
        dropout: 0.1,
        targets: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
        rslora: false,
    };
    lora::attach(&Cpu, model, &cfg, 17).unwrap();
    let mut rng = Lcg(99);
    for p in model.params_mut() {
        if p.name.contains("lora_B") {
            p.value.iter_mut().for_each(|v| *v = 0.2 * rng.uniform());
        }
    }
    cfg
}

#[test]
fn saved_adapters_round_trip_in_peft_layout() {
    let mut model = base();
    let cfg = rust_adapter(&mut model);
    let dir = tempfile_dir();
    lora::save(&Cpu, &mut model, &cfg, &dir, "mha").unwrap();
    let saved = load_file(&dir.join("adapter_model.safetensors")).unwrap();
    assert!(saved.contains_key("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"));
    assert_eq!(saved.len(), 2 * 3 * 2);
    let mut again = base();
    let cfg2 = lora::load(&Cpu, &mut again, &dir).unwrap();
    assert_eq!(cfg, cfg2);
    let batch = Batch::dense(vec![1, 5, 9, 30, 2, 77], 1);
    assert_eq!(model.logits(&Cpu, &batch), again.logits(&Cpu, &batch));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("poker-pipe-lora-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn dropout_gradients_match_finite_differences() {
    let mut model = base();
    rust_adapter(&mut model);
    let batch = Batch::dense(vec![1, 5, 9, 30, 2, 77, 4, 8], 2);
    let targets: Vec<u32> = vec![5, 9, 30, 0, 77, 4, 8, 0];
    let weights = vec![0.25, 0.25, 0.25, 0.0, 0.25, 0.25, 0.25, 0.0];
    let seed = 1234;
    model.loss_backward(
        &Cpu,
        &batch,
        &targets,
        &weights,
        TrainPass {
            seed,
            checkpoint: false,
        },
    );
    let loss = |m: &Llama<Cpu>| {
        m.token_nll(&Cpu, &batch, &targets, &weights, Some(seed))
            .iter()
            .map(|&x| x as f64)
            .sum::<f64>()
    };
    let mut rng = Lcg(5);
    let names: Vec<String> = model
        .params_mut()
        .iter()
        .filter(|p| p.grad.is_some())
        .map(|p| p.name.clone())
        .collect();
    let layer0: Vec<String> = names
        .into_iter()
        .filter(|n| n.contains("layers.0"))
        .collect();
    assert_gradients_match_differences(&mut model, &layer0, &mut rng, 1e-2, 2e-2, loss);
}

/// With POKER_PIPE_WRITE_FIXTURES=1 writes rust_adapter/ for the golden
/// script to check in PEFT; otherwise checks the committed adapter is what
/// this code writes and gives these logits, and that PEFT agreed.
#[test]
fn our_saved_adapter_loads_in_peft_with_our_logits() {
    let dir = golden("rust_adapter");
    let mut model = base();
    let cfg = rust_adapter(&mut model);
    let batch = Batch::dense(
        vec![1, 5, 9, 30, 2, 77, 4, 8, 1, 60, 61, 62, 63, 64, 65, 66],
        2,
    );
    let logits = model.logits(&Cpu, &batch);
    if std::env::var_os("POKER_PIPE_WRITE_FIXTURES").is_some() {
        lora::save(&Cpu, &mut model, &cfg, &dir, "../mha").unwrap();
        let mut t = TensorMap::new();
        t.insert(
            "input_ids".into(),
            poker_pipe::model::weights::HostTensor::new(
                vec![2, 8],
                batch.ids.iter().map(|&x| x as f32).collect(),
            ),
        );
        t.insert(
            "logits".into(),
            poker_pipe::model::weights::HostTensor::new(vec![2, 8, 96], logits.clone()),
        );
        save_file(&dir.join("rust_logits.safetensors"), &t, None).unwrap();
    }
    let committed = load_file(&dir.join("adapter_model.safetensors")).unwrap();
    let mut fresh = base();
    lora::load(&Cpu, &mut fresh, &dir).unwrap();
    for p in model
        .params_mut()
        .into_iter()
        .filter(|p| p.name.contains("lora"))
    {
        assert_eq!(p.value, committed[&p.name].data, "{}", p.name);
    }
    let recorded = load_file(&dir.join("rust_logits.safetensors")).unwrap();
    assert!(rel_err(&fresh.logits(&Cpu, &batch), &recorded["logits"].data) < 1e-6);
    let check = std::fs::read_to_string(dir.join("peft_check.json")).unwrap();
    assert!(
        check.contains("\"ok\": true"),
        "PEFT disagreed with our adapter: {check}"
    );
}

/// A training step's gradients do not depend on how its sequences are cut
/// into micro-batches (so the memory presets stay out of the stage hash):
/// five sequences of 3 to 140 tokens, all at once, one at a time and in
/// ragged groups, with and without activation checkpointing, give the same
/// gradient bits, for a full fine-tune (head, embeddings and a 600-wide MLP
/// whose down projection sums over more than one K block) with the head
/// apart or tied to the embedding, and for LoRA on every projection with
/// dropout.
#[test]
fn micro_batches_give_the_same_gradient_bits() {
    let config = r#"{"vocab_size": 97, "hidden_size": 64, "intermediate_size": 600,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 256}"#;
    let cfg =
        poker_pipe::model::LlamaConfig::parse(config, std::path::Path::new("<test>")).unwrap();
    let mut rng = Lcg(5);
    let examples: Vec<(Vec<u32>, Vec<f32>)> = [3, 140, 17, 60, 33]
        .iter()
        .map(|&len| {
            let ids = (0..len)
                .map(|_| 1 + (rng.uniform().abs() * 95.0) as u32)
                .collect();
            let weights = (0..len)
                .map(|j| {
                    if j < len / 3 {
                        0.0
                    } else {
                        0.1 + rng.uniform().abs()
                    }
                })
                .collect();
            (ids, weights)
        })
        .collect();
    let gradients = |(tied, lora_on): (bool, bool), groups: &[&[usize]], checkpoint: bool| {
        let cfg = poker_pipe::model::LlamaConfig {
            tie_word_embeddings: tied,
            ..cfg.clone()
        };
        let mut model = Llama::random(&Cpu, cfg, 3).unwrap();
        if lora_on {
            let lora_cfg = LoraConfig {
                rank: 4,
                alpha: 8.0,
                dropout: 0.2,
                targets: PROJECTIONS.iter().map(|t| t.to_string()).collect(),
                rslora: false,
            };
            lora::attach(&Cpu, &mut model, &lora_cfg, 7).unwrap();
            let mut init = Lcg(9);
            for p in model
                .params_mut()
                .into_iter()
                .filter(|p| p.name.contains("lora_B"))
            {
                p.value.iter_mut().for_each(|v| *v = 0.1 * init.uniform());
            }
        } else {
            for p in model.params_mut() {
                p.set_trainable(&Cpu, true);
            }
        }
        model.begin_step(&Cpu);
        for group in groups {
            let seqs: Vec<Vec<u32>> = group.iter().map(|&e| examples[e].0.clone()).collect();
            let batch = Batch::left_padded(&seqs, 0);
            let (mut targets, mut weights) = (vec![0; batch.rows()], vec![0.0; batch.rows()]);
            for (b, &e) in group.iter().enumerate() {
                let (ids, w) = &examples[e];
                let pad = batch.pad[b] as usize;
                for j in 0..ids.len() - 1 {
                    targets[b * batch.seq + pad + j] = ids[j + 1];
                    weights[b * batch.seq + pad + j] = w[j + 1];
                }
            }
            let pass = TrainPass {
                seed: 11,
                checkpoint,
            };
            model.loss_backward(&Cpu, &batch, &targets, &weights, pass);
        }
        model.end_step(&Cpu);
        let mut grads: Vec<(String, Vec<u32>)> = model
            .params_mut()
            .into_iter()
            .filter_map(|p| {
                Some((
                    p.name.clone(),
                    p.grad.as_ref()?.iter().map(|g| g.to_bits()).collect(),
                ))
            })
            .collect();
        grads.sort();
        grads
    };
    for case in [(false, false), (true, false), (true, true)] {
        let whole = gradients(case, &[&[0, 1, 2, 3, 4]], false);
        assert!(whole.len() >= 14, "{} gradients", whole.len());
        let nonzero = whole
            .iter()
            .filter(|(_, g)| g.iter().any(|&b| f32::from_bits(b) != 0.0))
            .count();
        assert_eq!(nonzero, whole.len(), "every gradient is live");
        for (groups, checkpoint) in [
            (&[&[0][..], &[1], &[2], &[3], &[4]][..], false),
            (&[&[0, 1][..], &[2, 3, 4]][..], true),
            (&[&[0, 1, 2][..], &[3], &[4]][..], false),
        ] {
            let cut = gradients(case, groups, checkpoint);
            for ((name, a), (_, b)) in whole.iter().zip(&cut) {
                assert!(
                    a == b,
                    "(tied, lora) {case:?}, {groups:?}: gradient of {name} differs"
                );
            }
        }
    }
}
