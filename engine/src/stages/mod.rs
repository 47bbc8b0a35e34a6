//! The stage kinds (one file each) and the registry the CLI hands the
//! executor. The artifact types that connect kinds are defined here, once,
//! so a producer and its consumers cannot disagree on a name.

use std::sync::OnceLock;

use crate::graph::{ArtifactType, OutputDecl, Registry};

pub mod device;
pub mod dpo;
pub mod eval;
pub mod grpo;
pub mod jsonl_data;
pub mod lm_answerer;
pub mod model_seats;
pub mod poker_data;
pub mod ppo;
pub mod preference;
pub mod reward;
pub mod rl;
pub mod sft;
pub mod tokenizer;

/// Supervised examples: JSONL of `{"prompt", "response"}`.
pub const SFT_DATASET: ArtifactType = ArtifactType("sft-dataset");
/// Preference pairs: JSONL of `{"prompt", "chosen", "rejected"}`.
pub const PAIRS_DATASET: ArtifactType = ArtifactType("pairs-dataset");
/// Prompts for PPO roll-outs: JSONL of `{"prompt"}`.
pub const PROMPT_SET: ArtifactType = ArtifactType("prompt-set");
/// A causal language model folder (config.json, weights, tokenizer, adapters).
pub const CAUSAL_LM: ArtifactType = ArtifactType("causal-lm");
/// A reward model folder (LlamaForSequenceClassification layout).
pub const REWARD_MODEL: ArtifactType = ArtifactType("reward-model");
/// An evaluation report (summary.json).
pub const EVAL_REPORT: ArtifactType = ArtifactType("eval-report");
/// A tokenizer folder (tokenizer.json).
pub const TOKENIZER: ArtifactType = ArtifactType("tokenizer");

/// The datasets a data stage can produce: (output name, artifact type, file).
/// `poker-data` and `jsonl-data` both use these names, so `data.sft`,
/// `data.pairs`, `data.prompts` (and the held-out `data.test_*`) mean the
/// same whichever kind made them.
pub const DATASETS: [(&str, ArtifactType, &str); 6] = [
    ("sft", SFT_DATASET, "sft.jsonl"),
    ("pairs", PAIRS_DATASET, "pairs.jsonl"),
    ("prompts", PROMPT_SET, "prompts.jsonl"),
    ("test_sft", SFT_DATASET, "test_sft.jsonl"),
    ("test_pairs", PAIRS_DATASET, "test_pairs.jsonl"),
    ("test_prompts", PROMPT_SET, "test_prompts.jsonl"),
];

/// The output declaration of dataset `name` (one of [`DATASETS`]).
pub fn dataset_output(name: &str) -> Option<OutputDecl> {
    DATASETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(n, artifact, file)| OutputDecl::new(n, *artifact, file))
}

/// A training kind's params as they go into its hash: everything but
/// `checkpoint_every`, which only decides where a run can resume, so
/// changing it never invalidates a finished stage.
pub fn training_config(params: &impl serde::Serialize) -> serde_json::Value {
    let mut value = serde_json::to_value(params).unwrap_or(serde_json::Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.remove("checkpoint_every");
    }
    value
}

/// The default of the `chat_template` switch of sft, reward, ppo and eval:
/// prompts are rendered in the model's chat template when it has one.
pub fn chat_template_on() -> bool {
    true
}

/// Whether the `chat_template` switch is at its default. It is serialized
/// only when off: turning it off changes a stage's hash, and pipelines
/// written before the switch existed keep theirs.
pub fn is_chat_template_on(on: &bool) -> bool {
    *on
}

/// The kinds this build knows.
pub fn builtin() -> Registry {
    Registry::new()
        .with(jsonl_data::JsonlData)
        .with(poker_data::PokerData)
        .with(tokenizer::TokenizerKind)
        .with(sft::Sft)
        .with(reward::Reward)
        .with(dpo::Dpo)
        .with(ppo::Ppo)
        .with(grpo::Grpo)
        .with(eval::Eval)
}

static INSTALLED: OnceLock<Registry> = OnceLock::new();

/// Replace the registry the CLI uses for this process (before `cli::main`).
/// Test binaries use it to add kinds of their own. Returns false if a
/// registry was already installed.
pub fn install(registry: Registry) -> bool {
    INSTALLED.set(registry).is_ok()
}

/// The registry the CLI uses: the installed one, or [`builtin`].
pub fn registry() -> Registry {
    INSTALLED.get().cloned().unwrap_or_else(builtin)
}
