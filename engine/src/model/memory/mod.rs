//! Device memory, planned and diagnosed: the estimator (`estimate`), the
//! model shapes it is planned on (`configs`), the driver's answer for a real
//! card (`driver`), and the message a stage that runs out of memory ends
//! with (`oom`). This file holds what the stage kinds and the CLI call: the
//! per-stage answer ([`plan_stage`]) and the fit rule.

mod configs;
mod driver;
mod estimate;
mod host;
mod oom;

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::LlamaConfig;
use crate::backend::Dtype;
use crate::graph::ExecSettings;

pub use configs::{lookup_config, model_config};
pub use driver::gpu_total_memory;
pub use estimate::{
    Breakdown, CPU_LOGITS_CHUNK_ROWS, CUBLAS_WORKSPACE_BYTES, CUDA_CONTEXT_BYTES,
    CUDA_LOGITS_CHUNK_VALUES, ParamCounts, RewardWeights, Rollout, Task, Trains, Workload,
    estimate, estimate_steps, lora_params, param_counts,
};
pub use host::{HostOutOfMemory, host_lower_bound, host_memory_bytes, refuse_beyond_host};
pub use oom::{
    OomContext, OutOfMemory, explain_out_of_memory, is_out_of_memory, next_smaller_preset,
};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MIB: u64 = 1024 * 1024;

/// The share of a card's memory a stage may plan to use: the rest covers
/// allocator rounding and fragmentation and what other processes (a
/// desktop, a monitor) hold.
pub const USABLE_FRACTION: f64 = 0.95;

/// More memory than any one device a stage could run on holds (the largest
/// GPUs hold under 300 GB, large hosts a few TB): a stage planned beyond
/// it is a mistake in the pipeline (a `hidden_size` with three zeros too
/// many), which `validate` rejects rather than let `run` try.
pub const BEYOND_ANY_DEVICE_BYTES: u64 = 4 << 40;

/// The model a stage's memory is planned on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlannedModel {
    /// A pretrained model: `hf:org/repo` or a folder with `config.json`.
    Source(String),
    /// The `config.json` of random weights, its vocabulary the bound its
    /// tokenizer stage trains to.
    Config(serde_json::Value),
}

/// What the planner can say about one stage.
#[derive(Clone, Debug, PartialEq)]
pub enum StageMemory {
    /// The stage holds nothing on the device (data, evaluation on the CPU).
    NotApplicable,
    Estimated(Breakdown),
    /// The stage trains, but the model's shape is not known here (offline
    /// with nothing cached, an unreadable `config.json`): why.
    Unknown(String),
    /// The stage needs more than [`BEYOND_ANY_DEVICE_BYTES`]: how much.
    BeyondAnyDevice(String),
}

impl StageMemory {
    pub fn total(&self) -> Option<u64> {
        match self {
            StageMemory::Estimated(b) => Some(b.total()),
            _ => None,
        }
    }

    pub fn breakdown(&self) -> Option<&Breakdown> {
        match self {
            StageMemory::Estimated(b) => Some(b),
            _ => None,
        }
    }

    pub fn note(&self) -> Option<&str> {
        match self {
            StageMemory::Unknown(note) | StageMemory::BeyondAnyDevice(note) => Some(note),
            _ => None,
        }
    }
}

/// Whether `bytes` fit a card of `gpu_memory_gib` (at [`USABLE_FRACTION`]).
pub fn fits(bytes: u64, gpu_memory_gib: f64) -> bool {
    bytes as f64 <= gpu_memory_gib * GIB * USABLE_FRACTION
}

/// `16106127360` -> `"15.0 GiB"`, `570425344` -> `"544.0 MiB"`.
pub fn gib_text(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= GIB {
        format!("{:.1} GiB", b / GIB)
    } else if bytes >= MIB {
        format!("{:.1} MiB", b / MIB as f64)
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

/// The one call a training stage kind makes from `StageKind::memory`: its
/// model (`hf:...` or a folder, relative to `base_dir`, or a random model's
/// config), what it does and trains, its sequence length, with frozen
/// weights stored as `weights`, under `exec`'s micro-batch, checkpointing
/// and optimizer offload. Planned for CUDA, what presets are for, unless
/// `exec` describes a finished run on the host (`exec.ran`). The model's
/// shape comes from [`model_config`]; when it cannot be had the answer is
/// [`StageMemory::Unknown`] with the reason, and a stage beyond any device
/// is [`StageMemory::BeyondAnyDevice`].
pub fn plan_stage(
    model: &PlannedModel,
    base_dir: &Path,
    task: Task,
    trains: Trains,
    seq_len: usize,
    exec: &ExecSettings,
    weights: Dtype,
) -> StageMemory {
    let config = match model {
        PlannedModel::Source(source) => model_config(source, base_dir),
        PlannedModel::Config(json) => {
            LlamaConfig::parse(&json.to_string(), Path::new("<random init>"))
                .map_err(|e| e.to_string())
        }
    };
    let config = match config {
        Ok(config) => config,
        Err(note) => return StageMemory::Unknown(note),
    };
    let beyond = |bytes: f64| {
        StageMemory::BeyondAnyDevice(format!(
            "needs at least {bytes:.3e} bytes ({:.1} TiB), more than any device holds",
            bytes / (1u64 << 40) as f64
        ))
    };
    // Checked in floating point first: a shape this large would overflow
    // the estimate's integer arithmetic.
    let lower_bound = bf16_weight_bytes(&config);
    if lower_bound > BEYOND_ANY_DEVICE_BYTES as f64 {
        return beyond(lower_bound);
    }
    let workload = Workload {
        config: &config,
        task,
        trains,
        micro_batch: exec.micro_batch as usize,
        seq_len,
        checkpointing: exec.activation_checkpointing,
        optimizer_offload: exec.offload_optimizer,
        weights,
        cuda: exec.ran.is_none(),
    };
    let breakdown = match exec.ran {
        Some(ran) if !ran.checkpointed => estimate_steps(&workload),
        _ => estimate(&workload),
    };
    if breakdown.total() > BEYOND_ANY_DEVICE_BYTES {
        return beyond(breakdown.total() as f64);
    }
    StageMemory::Estimated(breakdown)
}

/// The bytes of a model's weights in bf16 (the embedding once, no LM head
/// or norms), in floating point so that no shape overflows: a lower bound
/// of what any stage on the model needs.
fn bf16_weight_bytes(c: &LlamaConfig) -> f64 {
    let f = |n: usize| n as f64;
    let attention = f(c.num_heads) * f(c.head_dim) * 2.0 + f(c.num_kv_heads) * f(c.head_dim) * 2.0;
    let per_layer = f(c.hidden_size) * (attention + 3.0 * f(c.intermediate_size));
    let embedding = f(c.vocab_size) * f(c.hidden_size);
    2.0 * (embedding + f(c.num_layers) * per_layer)
}
