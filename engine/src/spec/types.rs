//! The top level of a pipeline file. Stage bodies are typed by their kind's
//! params (see `graph::kind`), so here `stages` is a map of mappings; the
//! published schema replaces it with one branch per registered kind.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::backend::Dtype;

/// A poker-pipe pipeline: stages that make data, train and evaluate models,
/// run in dependency order and cached by content hash.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// Name of the pipeline; outputs appear under `runs/<name>/<stage>/`.
    /// Letters, digits, `-`, `_` and `.` only.
    #[schemars(length(min = 1, max = 100))]
    pub name: String,
    /// Model defaults for stages that take a model and do not name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelDefaults>,
    /// Execution presets by name: how to fit a GPU of a given size. They
    /// never change results, so they are never part of a stage hash.
    #[serde(default)]
    pub memory_presets: BTreeMap<String, MemoryPreset>,
    /// The preset to run with: a name from `memory_presets`, or `auto` (the
    /// largest preset that fits the device's memory; the smallest on CPU).
    /// `--preset` on the command line overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// The stages by name, in any order: each has a `kind` and that kind's
    /// parameters. References between stages (`data.sft`, `sft`) define the
    /// order they run in.
    #[schemars(schema_with = "stages_placeholder")]
    pub stages: serde_json::Map<String, serde_json::Value>,
}

/// The base model and number format stages use unless they say otherwise.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelDefaults {
    /// Base model: `hf:<org>/<repo>` on the Hugging Face Hub, `gguf:FILE` (a
    /// llama.cpp model file), or a local folder.
    #[schemars(length(min = 1))]
    pub base: String,
    /// Number format of the training and evaluation stages (`f32` when left
    /// out): `bf16` stores frozen weights in bfloat16 and rounds as the CUDA
    /// kernels do, on the GPU and on the CPU alike. A stage's own `dtype`
    /// wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<Dtype>,
}

/// How to execute on a GPU of a given size: the seed's memory table.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MemoryPreset {
    /// GPU memory this preset is made for, in GiB.
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub gpu_memory_gib: f64,
    /// Examples per forward/backward pass; every global batch size must be
    /// a multiple of it (the rest is gradient accumulation).
    #[schemars(range(min = 1, max = 4096))]
    pub micro_batch: u32,
    /// Recompute activations in the backward pass to save memory.
    #[serde(default)]
    pub activation_checkpointing: bool,
    /// Keep the optimizer's state (AdamW's moments) in host memory, as
    /// DeepSpeed's `--offload` does: the GPU holds no optimizer state, each
    /// update goes through the host. The `ppo` stage, which trains actor and
    /// critic at once, honours it.
    #[serde(default)]
    pub offload_optimizer: bool,
}

/// Until the kinds are known, a stage is any mapping with a `kind`.
fn stages_placeholder(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "additionalProperties": {
            "type": "object",
            "required": ["kind"],
            "properties": { "kind": { "type": "string" } }
        }
    })
}
