//! The memory planner seen from the command line: `plan` shows each
//! training stage's breakdown and a stage x preset table, `validate` warns
//! when a stage does not fit a preset, a hub model that cannot be looked at
//! offline gives a note instead of an error (the Llama 3.x bases are built
//! in, so they plan offline with nothing cached), and a stage that runs out of
//! GPU memory fails with a message naming the stage, preset, estimate and
//! next smaller preset while what finished stays cached; a stage beyond any
//! device is rejected by `validate`, and a CPU stage beyond the host is
//! refused before it allocates.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use poker_pipe::backend::Dtype;
use poker_pipe::model::LlamaConfig;
use poker_pipe::model::memory::{
    Breakdown, Task, Trains, Workload, estimate, gib_text, host_lower_bound, host_memory_bytes,
};
use poker_pipe::stages::sft::Architecture;
use poker_pipe::stages::tokenizer::SpecialTokens;
use poker_pipe_tests::{Sandbox, text};

const BIN: &str = env!("CARGO_BIN_EXE_pp-memory");

/// The tiny GQA model of the golden fixtures, as a model folder.
fn sandbox() -> Sandbox {
    let sandbox = Sandbox::new(BIN).unwrap();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/llama/gqa/config.json");
    let config = std::fs::read_to_string(golden).unwrap();
    sandbox.write("model/config.json", &config).unwrap();
    sandbox
}

/// `small` cannot hold even the CUDA context; `big` holds everything.
fn pipeline(model: &str, out_of_memory: bool) -> String {
    format!(
        "name: mem
memory_presets:
  small: {{gpu_memory_gib: 0.25, micro_batch: 1, activation_checkpointing: true}}
  mid:   {{gpu_memory_gib: 0.4, micro_batch: 2, activation_checkpointing: true}}
  big:   {{gpu_memory_gib: 2, micro_batch: 4}}
preset: big
stages:
  src: {{kind: text-source, text: hello}}
  train: {{kind: lm-train, input: src, model: {model}, lora_rank: 4, batch_size: 4, max_seq_len: 64, out_of_memory: {out_of_memory}}}
"
    )
}

fn tiny_config(sandbox: &Sandbox) -> LlamaConfig {
    LlamaConfig::load(&sandbox.path().join("model/config.json")).unwrap()
}

#[test]
fn plan_shows_the_breakdown_and_every_preset() {
    let sandbox = sandbox();
    sandbox.write("p.yaml", &pipeline("model", false)).unwrap();
    let json = sandbox.plan("p.yaml", &[]).unwrap();
    let train = &json["stages"][1];
    assert_eq!(train["name"], "train");
    let expected = estimate(&Workload {
        config: &tiny_config(&sandbox),
        task: Task::Sft,
        trains: Trains::lora_all(4),
        micro_batch: 4,
        seq_len: 64,
        checkpointing: false,
        optimizer_offload: false,
        weights: Dtype::F32,
        cuda: true,
    });
    assert_eq!(
        train["memory_breakdown"],
        serde_json::to_value(expected).unwrap()
    );
    assert_eq!(train["memory_estimate_bytes"], expected.total());
    assert_eq!(train["fits_preset"], true);
    assert!(json["stages"][0].get("memory_breakdown").is_none());

    let out = sandbox.run(&["plan", "p.yaml"]).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout.contains("peak GPU memory (preset big)"), "{stdout}");
    assert!(
        stdout.contains("train (micro-batch 4 x 1 accumulation)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("workspace 544.0 MiB") && stdout.contains("fits 2 GiB"),
        "{stdout}"
    );
    let table = stdout
        .lines()
        .find(|l| l.starts_with("train ") && l.contains('!'))
        .unwrap_or_else(|| panic!("no preset table row for train:\n{stdout}"));
    assert_eq!(table.matches('!').count(), 2, "{table}");

    let out = sandbox
        .run(&["plan", "p.yaml", "--preset", "small"])
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("DOES NOT FIT 0.25 GiB"), "{stdout}");
    assert!(
        stdout.contains("micro-batch 1 x 4 accumulation, checkpointing"),
        "{stdout}"
    );
}

#[test]
fn validate_warns_about_presets_that_do_not_fit() {
    let sandbox = sandbox();
    sandbox.write("p.yaml", &pipeline("model", false)).unwrap();
    let out = sandbox.run(&["validate", "p.yaml"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning"))
        .collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(
        warnings[0].contains("stage `train`")
            && warnings[0].contains("preset `small`")
            && warnings[0].contains("preset `big` fits it"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_hub_model_is_a_note_not_an_error() {
    let sandbox = sandbox();
    sandbox
        .write("p.yaml", &pipeline("\"hf:someone/private-llama\"", false))
        .unwrap();
    let out = sandbox
        .command(&["plan", "p.yaml", "--format", "json"])
        .env("HF_HUB_CACHE", sandbox.path().join("hub"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let train = &json["stages"][1];
    assert!(train["memory_estimate_bytes"].is_null(), "{train}");
    let note = train["memory_note"].as_str().unwrap();
    assert!(note.contains("HF_HUB_OFFLINE"), "{note}");
}

#[test]
fn out_of_memory_names_stage_preset_estimate_and_a_smaller_preset() {
    let sandbox = sandbox();
    sandbox.write("p.yaml", &pipeline("model", true)).unwrap();
    let out = sandbox.run(&["run", "p.yaml"]).unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    // miette wraps long lines: compare the words alone.
    let stderr = String::from_utf8_lossy(&out.stderr)
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        stderr.contains("stage `train` ran out of GPU memory under preset `big`"),
        "{stderr}"
    );
    let planned = sandbox.plan("p.yaml", &[]).unwrap()["stages"][1]["memory_estimate_bytes"]
        .as_u64()
        .unwrap();
    assert!(
        stderr.contains(&format!(
            "the planner estimated {} of the preset's 2 GiB",
            gib_text(planned)
        )),
        "{stderr}"
    );
    assert!(stderr.contains("--preset mid"), "{stderr}");
    assert!(stderr.contains("allocating the activations"), "{stderr}");
    // The stage before it stays cached and linked; the failed one left
    // nothing in the cache and is all that would run again.
    assert_eq!(sandbox.would_run("p.yaml", &[]).unwrap(), ["train"]);
    assert!(sandbox.path().join("runs/mem/src").exists());
    assert!(!sandbox.path().join("runs/mem/train").exists());
}

/// A hub cache holding nothing but Llama 3.1 8B's published config.json,
/// laid out as hf-hub keeps it, so the 8B pipelines plan offline.
fn llama8b_hub(sandbox: &Sandbox) -> std::path::PathBuf {
    let commit = "0e9e39f249a16976918f6564b8830bc894c89659";
    let config = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/memory/llama-3.1-8b-config.json"),
    )
    .unwrap();
    let repo = "hub/models--meta-llama--Llama-3.1-8B";
    sandbox.write(&format!("{repo}/refs/main"), commit).unwrap();
    sandbox
        .write(&format!("{repo}/snapshots/{commit}/config.json"), &config)
        .unwrap();
    sandbox.path().join("hub")
}

/// `plan --format json` of a shipped 8B pipeline under `preset`, offline,
/// over the hub cache holding the published config.json.
fn plan_8b(sandbox: &Sandbox, file: &str, preset: &str) -> serde_json::Value {
    plan_8b_over(sandbox, file, preset, &llama8b_hub(sandbox))
}

/// `plan --format json` of a shipped 8B pipeline under `preset`, offline,
/// over the hub cache `hub`.
fn plan_8b_over(sandbox: &Sandbox, file: &str, preset: &str, hub: &Path) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pipelines")
        .join(file);
    let out = sandbox
        .command(&[
            "plan",
            path.to_str().unwrap(),
            "--format",
            "json",
            "--preset",
            preset,
        ])
        .env("HF_HUB_CACHE", hub)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("HF_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Offline, with an empty hub cache and no token, both 8B pipelines plan
/// from the binary's built-in Llama 3.1 8B config.json, to the byte the
/// figures the published config.json gives.
#[test]
fn the_8b_pipelines_plan_offline_with_nothing_cached() {
    let sandbox = Sandbox::new(BIN).unwrap();
    let empty = sandbox.path().join("empty-hub");
    for file in ["llama8b_lora.yaml", "llama8b_full.yaml"] {
        for preset in PRESETS_8B {
            let built_in = plan_8b_over(&sandbox, file, preset, &empty);
            let published = plan_8b(&sandbox, file, preset);
            for name in ["sft", "reward", "rlhf"] {
                let figures = |plan: &serde_json::Value| {
                    let s = stage(plan, name);
                    (s["memory_breakdown"].clone(), s["memory_note"].clone())
                };
                let (breakdown, note) = figures(&built_in);
                assert!(breakdown.is_object(), "{file} {preset} {name}: {note}");
                assert_eq!(
                    (breakdown, note),
                    figures(&published),
                    "{file} {preset} {name}"
                );
            }
        }
    }
}

const PRESETS_8B: [&str; 4] = ["rtx4090-24g", "a100-40g", "a40-48g", "a100-80g"];

/// The stage of a plan by name.
fn stage<'a>(plan: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage {name} in {plan}"))
}

/// Reward and PPO learn their model from upstream (`init: sft`, `actor:
/// sft` -> the pipeline's `model:`), so every training stage of the LoRA
/// pipeline has an estimate under every preset; the reward model has no LM
/// head and PPO holds one base under its four adapters.
#[test]
fn every_training_stage_of_the_8b_pipeline_is_planned_under_every_preset() {
    let sandbox = Sandbox::new(BIN).unwrap();
    for preset in PRESETS_8B {
        let plan = plan_8b(&sandbox, "llama8b_lora.yaml", preset);
        for name in ["sft", "reward", "rlhf"] {
            let s = stage(&plan, name);
            let bytes = s["memory_estimate_bytes"]
                .as_u64()
                .unwrap_or_else(|| panic!("{preset}: {name} not planned: {s}"));
            assert!(bytes > 15 << 30, "{preset} {name}: {bytes}");
        }
        let weights = |name: &str| stage(&plan, name)["memory_breakdown"]["weights"].clone();
        assert_eq!(weights("sft"), 8_030_261_248u64 * 2, "{preset}");
        assert_eq!(
            weights("reward"),
            (8_030_261_248u64 - 525_336_576) * 2,
            "{preset}"
        );
        assert_eq!(weights("rlhf"), 8_030_261_248u64 * 2, "{preset}");
        for name in ["data", "eval"] {
            assert!(stage(&plan, name)["memory_breakdown"].is_null(), "{name}");
        }
        // Every stage fits every preset, with a margin (the fit rule keeps
        // 5% of the card free).
        for name in ["sft", "reward", "rlhf"] {
            assert_eq!(stage(&plan, name)["fits_preset"], true, "{preset} {name}");
        }
    }
    // On 24 GB, PPO fits because the preset offloads AdamW's state: the
    // two trained rank-128 adapters' m and v would add 5 GiB. Actor and
    // critic (and the heads) are f32, the frozen reference and reward
    // adapters bf16; one role's gradients exist at a time.
    let plan = plan_8b(&sandbox, "llama8b_lora.yaml", "rtx4090-24g");
    let ppo = &stage(&plan, "rlhf")["memory_breakdown"];
    assert_eq!(ppo["optimizer"], 0);
    assert_eq!(
        ppo["adapters"],
        (2 * 335_544_320u64 + 2 * 4096) * 4 + 2 * 335_544_320 * 2
    );
    assert_eq!(ppo["gradients"], (335_544_320u64 + 4096) * 4);
}

/// `validate` of the shipped 8B pipelines: the LoRA one fits every preset
/// (no warning); the full one warns only about full fine-tuning of 8B,
/// which fits no single card, once per preset.
#[test]
fn validate_warns_only_where_full_fine_tuning_cannot_fit() {
    let sandbox = Sandbox::new(BIN).unwrap();
    let hub = llama8b_hub(&sandbox);
    let validate = |file: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../pipelines")
            .join(file);
        let out = sandbox
            .command(&["validate", path.to_str().unwrap()])
            .env("HF_HUB_CACHE", &hub)
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.starts_with("warning"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(validate("llama8b_lora.yaml"), Vec::<String>::new());
    let warnings = validate("llama8b_full.yaml");
    assert_eq!(warnings.len(), PRESETS_8B.len(), "{warnings:?}");
    assert!(
        warnings.iter().all(|w| w.contains("stage `sft`")),
        "{warnings:?}"
    );
}

/// A model started from random weights is planned too: its shape from the
/// `random:` architecture, its vocabulary the bound its tokenizer stage
/// trains to, and the reward and PPO stages after it inherit that model.
#[test]
fn a_random_init_lineage_is_planned_from_its_architecture_and_tokenizer() {
    let sandbox = Sandbox::new(BIN).unwrap();
    let architecture = serde_json::json!({
        "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4
    });
    sandbox
        .write(
            "p.yaml",
            &format!(
                "name: rnd
memory_presets:
  small: {{gpu_memory_gib: 2, micro_batch: 2, activation_checkpointing: true}}
stages:
  data: {{kind: poker-data, scenarios: 40, pairs: 20, prompts: 8, seed: 1}}
  tok: {{kind: tokenizer, data: [data.sft], vocab_size: 300}}
  sft: {{kind: sft, data: data.sft, tokenizer: tok, base: {{random: {architecture}}}, method: full, batch_size: 4, max_seq_len: 64}}
  reward: {{kind: reward, init: sft, data: data.pairs, batch_size: 4, max_seq_len: 64}}
  rlhf: {{kind: ppo, actor: sft, critic: reward, prompts: data.prompts, batch_size: 4}}
"
            ),
        )
        .unwrap();
    let plan = sandbox.plan("p.yaml", &[]).unwrap();
    let architecture: Architecture = serde_json::from_value(architecture).unwrap();
    let special = SpecialTokens {
        bos_token_id: 0,
        eos_token_id: 0,
        pad_token_id: 0,
        vocab_size: 300,
    };
    let config = LlamaConfig::parse(
        &architecture.config_json(&special).to_string(),
        Path::new("config.json"),
    )
    .unwrap();
    let expected = estimate(&Workload {
        config: &config,
        task: Task::Sft,
        trains: Trains::Full,
        micro_batch: 2,
        seq_len: 64,
        checkpointing: true,
        optimizer_offload: false,
        weights: Dtype::F32,
        cuda: true,
    });
    assert_eq!(
        stage(&plan, "sft")["memory_breakdown"],
        serde_json::to_value(expected).unwrap()
    );
    for name in ["reward", "rlhf"] {
        assert!(
            stage(&plan, name)["memory_estimate_bytes"].is_u64(),
            "{name}: {plan}"
        );
    }
    assert!(stage(&plan, "tok")["memory_breakdown"].is_null());
}

/// A pipeline training a random model of `architecture` (JSON) from
/// scratch after its data and tokenizer stages.
fn random_pipeline(architecture: &str) -> String {
    format!(
        "name: big
memory_presets:
  small: {{gpu_memory_gib: 24, micro_batch: 1, activation_checkpointing: true}}
  large: {{gpu_memory_gib: 80, micro_batch: 2}}
stages:
  data: {{kind: poker-data, scenarios: 40, pairs: 20, prompts: 8, seed: 1}}
  tok: {{kind: tokenizer, data: [data.sft], vocab_size: 300}}
  sft: {{kind: sft, data: data.sft, tokenizer: tok, base: {{random: {architecture}}}, method: full, batch_size: 2, max_seq_len: 16}}
"
    )
}

/// A billion-wide hidden state is beyond any device: `validate` rejects the
/// stage (exit 1, pointing at it) instead of `run` aborting on the
/// allocation, and `run` refuses the file the same way before anything
/// runs.
#[test]
fn validate_rejects_a_stage_beyond_any_device() {
    let sandbox = Sandbox::new(BIN).unwrap();
    sandbox
        .write(
            "p.yaml",
            &random_pipeline(
                "{hidden_size: 1000000000, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 4}",
            ),
        )
        .unwrap();
    for command in ["validate", "run"] {
        let out = sandbox.run(&[command, "p.yaml"]).unwrap();
        assert_eq!(out.status.code(), Some(1), "{command}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("stage `sft` needs at least")
                && stderr.contains("more than any")
                && stderr.contains("p.yaml:8:3"),
            "{stderr}"
        );
    }
    assert!(!sandbox.path().join("runs/big/data").exists());
}

/// A CPU stage whose plan is beyond this machine's memory (about 1.4 TiB,
/// within what a device could hold) is refused before it allocates: exit
/// 3 with the out-of-memory diagnostic (the planner's figure, the next
/// preset to try), and the stages before it stay cached.
#[test]
fn a_cpu_stage_beyond_the_host_is_refused_before_it_allocates() {
    let sandbox = Sandbox::new(BIN).unwrap();
    sandbox
        .write(
            "p.yaml",
            &random_pipeline(
                "{hidden_size: 32768, intermediate_size: 65536, num_hidden_layers: 8, num_attention_heads: 256}",
            ),
        )
        .unwrap();
    let planned = sandbox.plan("p.yaml", &["--preset", "large"]).unwrap();
    let breakdown: Breakdown = serde_json::from_value(
        planned["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "sft")
            .unwrap()["memory_breakdown"]
            .clone(),
    )
    .unwrap();
    let needed = host_lower_bound(&breakdown);
    if host_memory_bytes().is_none_or(|total| total >= needed) {
        eprintln!("SKIPPED: this machine holds {needed} bytes, the refusal cannot be seen");
        return;
    }
    let out = sandbox
        .run(&["run", "p.yaml", "--preset", "large"])
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr)
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        stderr.contains("stage `sft` cannot fit in host memory under preset `large`"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "the planner estimated {}",
            gib_text(breakdown.total())
        )),
        "{stderr}"
    );
    assert!(stderr.contains("--preset small"), "{stderr}");
    assert!(stderr.contains("run::out_of_memory"), "{stderr}");
    assert_eq!(
        sandbox.would_run("p.yaml", &["--preset", "large"]).unwrap(),
        ["sft"]
    );
}
