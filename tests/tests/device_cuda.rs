//! `--device cuda` reaches the CUDA backend from every stage and command
//! that runs a model: the sft, reward, ppo and eval stages, `run`, `eval`,
//! `arena model:DIR` and `bench train`. On a machine without an NVIDIA
//! driver each stops with the backend's own message (the driver is
//! missing), exit code 1, and never with "no CUDA backend in this build";
//! stages that finished before stay cached. On a machine with a GPU these
//! checks cannot be made (the GPU suite runs the real thing) and say
//! SKIPPED.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use poker_pipe::backend::Device;
use poker_pipe::error::Exit;
use poker_pipe::graph::{Cancel, ContextParts, ExecSettings, StageContext, StageError, StageKind};
use poker_pipe::stages::eval::Eval;
use poker_pipe::stages::ppo::Ppo;
use poker_pipe::stages::reward::Reward;
use poker_pipe::stages::sft::Sft;
use poker_pipe_tests::{Sandbox, text};

const BIN: &str = env!("CARGO_BIN_EXE_pp-test");

/// Whether this machine has a usable GPU (then nothing here can fail the
/// way a GPU-less machine does).
fn gpu_here(test: &str) -> bool {
    let here = poker_pipe::model::memory::gpu_total_memory(0).is_ok();
    if here {
        eprintln!("SKIPPED {test}: a GPU is present, so the missing-driver path cannot be seen");
    }
    here
}

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden/llama")
        .join(name)
}

/// The message is the driver's, not a refusal of the device.
fn assert_driver_message(what: &str, message: &str) {
    assert!(message.contains("NVIDIA driver"), "{what}: {message}");
    assert!(!message.contains("no CUDA backend"), "{what}: {message}");
}

fn cuda_context(root: &Path) -> StageContext {
    StageContext::new(ContextParts {
        stage: "stage".to_string(),
        device: Device::Cuda(0),
        exec: ExecSettings {
            preset: None,
            micro_batch: 1,
            grad_accum: 1,
            activation_checkpointing: false,
            offload_optimizer: false,
            gpu_memory_gib: None,
            base_model: None,
            input_adapters: Default::default(),
            ran: None,
        },
        inputs: BTreeMap::new(),
        files: BTreeMap::new(),
        out_dir: root.join("out"),
        work_dir: root.join("work"),
        cancel: Cancel::new(),
    })
    .unwrap()
}

/// The failure of a stage kind run on `cuda:0`.
fn run_on_cuda<K: StageKind>(kind: K, params: serde_json::Value) -> StageError {
    let dir = tempfile::tempdir().unwrap();
    let params: K::Params = serde_json::from_value(params).unwrap();
    match kind.run(&params, &mut cuda_context(dir.path())) {
        Ok(outcome) => panic!("{} ran on cuda without a GPU: {outcome:?}", K::NAME),
        Err(e) => e,
    }
}

#[test]
fn every_model_stage_opens_the_cuda_backend() {
    if gpu_here("every_model_stage_opens_the_cuda_backend") {
        return;
    }
    let failures = [
        (
            Sft::NAME,
            run_on_cuda(
                Sft,
                serde_json::json!({"data": "data.sft", "base": {"base": "model"}}),
            ),
        ),
        (
            Reward::NAME,
            run_on_cuda(
                Reward,
                serde_json::json!({"init": "sft", "data": "data.pairs"}),
            ),
        ),
        (
            Ppo::NAME,
            run_on_cuda(
                Ppo,
                serde_json::json!({"actor": "sft", "critic": "reward", "prompts": "data.prompts"}),
            ),
        ),
        (
            Eval::NAME,
            run_on_cuda(
                Eval,
                serde_json::json!({"model": "sft", "scenarios": "data.test_prompts", "train_prompts": "data.prompts"}),
            ),
        ),
    ];
    for (kind, failure) in failures {
        assert_eq!(failure.exit, Exit::User, "{kind}: {:?}", failure.report);
        assert_driver_message(kind, &format!("{:?}", failure.report));
    }
}

/// A run on cuda does the data stages on the host, stops at the first
/// training stage with exit 1 and the driver's message, and keeps what
/// finished cached.
#[test]
fn run_stops_at_the_first_model_stage_and_keeps_the_rest() {
    if gpu_here("run_stops_at_the_first_model_stage_and_keeps_the_rest") {
        return;
    }
    let sandbox = Sandbox::new(BIN).unwrap();
    sandbox
        .write(
            "p.yaml",
            "name: dev
stages:
  data: {kind: poker-data, scenarios: 40, pairs: 20, prompts: 8, seed: 1}
  tok: {kind: tokenizer, data: [data.sft], vocab_size: 300}
  sft: {kind: sft, data: data.sft, tokenizer: tok, base: {random: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 4}}, method: full, batch_size: 4, max_seq_len: 64}
",
        )
        .unwrap();
    let out = sandbox.run(&["run", "p.yaml", "--device", "cuda"]).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_driver_message("run", &String::from_utf8_lossy(&out.stderr));
    let would_run = sandbox.would_run("p.yaml", &["--device", "cuda"]).unwrap();
    assert_eq!(would_run, ["sft"]);
}

/// `eval`, `arena` with a model seat and `bench train` on cuda.
#[test]
fn every_model_command_opens_the_cuda_backend() {
    if gpu_here("every_model_command_opens_the_cuda_backend") {
        return;
    }
    let sandbox = Sandbox::new(BIN).unwrap();
    let prompts = sandbox.write("prompts.txt", "Hello there\n").unwrap();
    let model = golden("mha").display().to_string();
    let config = golden("gqa").join("config.json").display().to_string();
    let arena_model = format!("model:{model}");
    let commands: [&[&str]; 3] = [
        &[
            "eval",
            "--model",
            &model,
            "--mode",
            "score",
            "--test-file",
            prompts.to_str().unwrap(),
            "--device",
            "cuda",
        ],
        &[
            "arena",
            "--a",
            &arena_model,
            "--b",
            "random",
            "--hands",
            "2",
            "--device",
            "cuda",
        ],
        &[
            "bench",
            "train",
            "--model-config",
            &config,
            "--steps",
            "1",
            "--device",
            "cuda:0",
        ],
    ];
    for args in commands {
        let out = sandbox.run(args).unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert_driver_message(args[0], &String::from_utf8_lossy(&out.stderr));
    }
}
