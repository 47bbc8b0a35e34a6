//! The memory planner: the peak device memory of a training stage, part by
//! part, before anything runs, so `plan` can say whether a stage fits a
//! memory preset and `validate` can warn when it does not.
//!
//! The model of memory follows what the code keeps alive (bytes per element
//! in brackets; `act` is the activation/weight format, 2 for bf16 on CUDA, 4
//! for f32 on the CPU):
//!
//! - **weights** `[act]`: every frozen base tensor once (PPO's actor,
//!   reference, critic and reward share one base: ARCHITECTURE.md).
//! - **adapters** `[act]`: LoRA A and B of every targeted projection, and
//!   the one-row heads (reward score, PPO value head).
//! - **gradients** `[4]`: one f32 gradient per trainable parameter, so that
//!   micro-batches accumulate without bf16 rounding.
//! - **optimizer** `[4 x 3]` on bf16 (f32 master copy, AdamW's m and v), `[4
//!   x 2]` on f32 where the weight is its own master; nothing when the
//!   preset offloads it to host memory (`offload_optimizer`). PPO's EMA of the
//!   actor lives in host memory (the stage keeps it as host vectors), so it
//!   costs the device nothing.
//! - **activations** `[act]`, per token row: without checkpointing each block
//!   keeps what `Saved` in `llama.rs` keeps (x, h1, q, k, v, attn, x2, h2,
//!   gate, up, act, the LoRA intermediates, and in f32 the two RMSNorm
//!   inverses and the attention logsumexp per head); with checkpointing only
//!   each block's input, plus one block's `Saved` while it is recomputed. On
//!   top: the final norm's input and output, the f32 gradient of the final
//!   hidden state, and the backward's working set of one block (the MLP
//!   branch is the widest: three `[rows, intermediate]` and three `[rows,
//!   hidden]` gradients).
//! - **logits** `[act]`: one chunk of the fused cross-entropy, `[chunk rows,
//!   vocab]`, turned into its gradient in place; never `B x T x V`. PPO
//!   also takes the entropy of each roll-out micro-batch from its full
//!   logits, `[micro-batch x T, vocab]` in f32, which is the larger.
//! - **kv_cache** `[act]` and **generation**: PPO's roll-out, kept allocated
//!   through the update (allocated once, reused every step, so the allocator
//!   never fragments); generation is the prefill's working set and f32
//!   logits of the last token of each sequence for sampling.
//! - **workspace**: the CUDA context and cuBLAS(Lt) workspace; nothing on the
//!   CPU.
//!
//! The peak is the sum: the planner errs on the side of "does not fit".

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use miette::Diagnostic;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::config::LlamaConfig;
use super::llama::PROJECTIONS;
use super::source::{self, ModelSource, ResolveOptions};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MIB: u64 = 1024 * 1024;

/// Rows of token logits the fused cross-entropy handles at once. The CUDA
/// backend computes logits chunk by chunk with this many rows, so their
/// memory does not grow with the batch.
pub const LOGITS_CHUNK_ROWS: usize = 1024;

/// What the driver takes for a CUDA context on current GPUs, measured as the
/// difference in used memory before and after `cuCtxCreate` on an H100.
pub const CUDA_CONTEXT_BYTES: u64 = 512 * MIB;

/// cuBLASLt's recommended workspace on Hopper (32 MiB).
pub const CUBLAS_WORKSPACE_BYTES: u64 = 32 * MIB;

/// The share of a card's memory a stage may plan to use: the rest covers
/// allocator rounding and fragmentation and what other processes (a
/// desktop, a monitor) hold.
pub const USABLE_FRACTION: f64 = 0.95;

/// Which parameters a model trains.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "trains")]
pub enum Trains {
    /// Nothing: inference only.
    Nothing,
    /// LoRA adapters of rank `rank` on the named projections (PEFT names,
    /// see [`PROJECTIONS`]); the base stays frozen.
    Lora { rank: usize, targets: Vec<String> },
    /// Every base weight.
    Full,
}

impl Trains {
    /// LoRA on all seven projections, the recipe's choice.
    pub fn lora_all(rank: usize) -> Self {
        Trains::Lora {
            rank,
            targets: PROJECTIONS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// A PPO roll-out: how many sequences are generated at once and how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Rollout {
    /// Sequences generated at once (the recipe: 1 per device).
    pub generation_batch: usize,
    pub prompt_len: usize,
    pub new_tokens: usize,
}

/// The stage being planned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "task")]
pub enum Task {
    /// Next-token cross-entropy on prompt + response.
    Sft,
    /// Pairwise reward training: chosen and rejected go through together,
    /// so a micro-batch of `n` pairs is `2n` sequences; a one-row score head
    /// replaces the LM head.
    Reward,
    /// PPO: the actor trains as `trains` says, the critic as `critic`;
    /// the reference is the shared base with `reference`'s frozen adapter
    /// (the SFT adapter the actor starts from, or `Nothing`), the reward
    /// model the base with a frozen adapter of the critic's shape and the
    /// score head.
    Ppo {
        critic: Trains,
        reference: Trains,
        rollout: Rollout,
    },
}

/// Everything the estimate depends on.
#[derive(Clone, Debug)]
pub struct Workload<'a> {
    pub config: &'a LlamaConfig,
    pub task: Task,
    /// What the (actor) model trains.
    pub trains: Trains,
    /// Sequences (pairs for reward) per forward/backward pass.
    pub micro_batch: usize,
    /// Tokens per training sequence (PPO: prompt + new tokens).
    pub seq_len: usize,
    pub checkpointing: bool,
    /// AdamW's state (and master copies) in host memory: none on the device.
    pub optimizer_offload: bool,
    /// 2 for bf16 (CUDA), 4 for f32 (CPU).
    pub dtype_bytes: usize,
    /// Count the CUDA context and cuBLAS workspace.
    pub cuda: bool,
}

/// Peak device memory of a stage, in bytes, part by part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Breakdown {
    pub weights: u64,
    pub adapters: u64,
    pub gradients: u64,
    pub optimizer: u64,
    pub activations: u64,
    pub logits: u64,
    pub kv_cache: u64,
    pub generation: u64,
    pub workspace: u64,
}

impl Breakdown {
    /// The parts in display order, with their names.
    pub fn parts(&self) -> [(&'static str, u64); 9] {
        [
            ("weights", self.weights),
            ("adapters", self.adapters),
            ("gradients", self.gradients),
            ("optimizer", self.optimizer),
            ("activations", self.activations),
            ("logits", self.logits),
            ("kv_cache", self.kv_cache),
            ("generation", self.generation),
            ("workspace", self.workspace),
        ]
    }

    pub fn total(&self) -> u64 {
        self.parts().iter().map(|(_, b)| b).sum()
    }

    /// One line: the non-zero parts and the total.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .parts()
            .iter()
            .filter(|(_, b)| *b > 0)
            .map(|(name, b)| format!("{name} {}", gib_text(*b)))
            .collect();
        format!("{} = {}", parts.join(" + "), gib_text(self.total()))
    }
}

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
            StageMemory::Unknown(note) => Some(note),
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

/// Parameter counts of one model shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamCounts {
    /// Every tensor of `LlamaForCausalLM`.
    pub causal_lm: u64,
    /// The LM head alone (0 when tied to the embedding).
    pub lm_head: u64,
}

/// Parameters of a model shape, counted from the config.
pub fn param_counts(c: &LlamaConfig) -> ParamCounts {
    let (d, i, v) = (
        c.hidden_size as u64,
        c.intermediate_size as u64,
        c.vocab_size as u64,
    );
    let (qd, kvd) = (
        (c.num_heads * c.head_dim) as u64,
        (c.num_kv_heads * c.head_dim) as u64,
    );
    let per_layer = 2 * d + 2 * qd * d + 2 * kvd * d + 3 * i * d;
    let lm_head = if c.tie_word_embeddings { 0 } else { v * d };
    ParamCounts {
        causal_lm: v * d + c.num_layers as u64 * per_layer + d + lm_head,
        lm_head,
    }
}

/// (input, output) widths of a projection by its PEFT name.
fn projection_dims(c: &LlamaConfig, name: &str) -> Option<(u64, u64)> {
    let (d, i) = (c.hidden_size as u64, c.intermediate_size as u64);
    let qd = (c.num_heads * c.head_dim) as u64;
    let kvd = (c.num_kv_heads * c.head_dim) as u64;
    match name {
        "q_proj" => Some((d, qd)),
        "k_proj" | "v_proj" => Some((d, kvd)),
        "o_proj" => Some((qd, d)),
        "gate_proj" | "up_proj" => Some((d, i)),
        "down_proj" => Some((i, d)),
        _ => None,
    }
}

/// LoRA parameters (A and B of every targeted projection of every layer).
pub fn lora_params(c: &LlamaConfig, rank: usize, targets: &[String]) -> u64 {
    let per_layer: u64 = targets
        .iter()
        .filter_map(|t| projection_dims(c, t))
        .map(|(input, output)| rank as u64 * (input + output))
        .sum();
    per_layer * c.num_layers as u64
}

/// Parameters `trains` adds to the device beyond the base, and the number
/// that train.
fn trained_params(c: &LlamaConfig, trains: &Trains, base: u64) -> (u64, u64) {
    match trains {
        Trains::Nothing => (0, 0),
        Trains::Lora { rank, targets } => {
            let n = lora_params(c, *rank, targets);
            (n, n)
        }
        Trains::Full => (0, base),
    }
}

/// LoRA intermediates (`x A`, `[rows, rank]`) the tape keeps per block row.
fn lora_row_elems(trains: &Trains) -> u64 {
    match trains {
        Trains::Lora { rank, targets } => (*rank * targets.len()) as u64,
        _ => 0,
    }
}

/// Bytes one token row of one block keeps for the backward (`Saved`).
fn saved_row_bytes(c: &LlamaConfig, trains: &Trains, act: u64) -> u64 {
    let (d, i) = (c.hidden_size as u64, c.intermediate_size as u64);
    let qd = (c.num_heads * c.head_dim) as u64;
    let kvd = (c.num_kv_heads * c.head_dim) as u64;
    // x, h1, x2, h2 | q, attn | k, v | gate, up, act | LoRA x A
    let act_elems = 4 * d + 2 * qd + 2 * kvd + 3 * i + lora_row_elems(trains);
    // inv1, inv2, logsumexp per head, in f32
    let f32_elems = 2 + c.num_heads as u64;
    act_elems * act + f32_elems * 4
}

/// Activation memory of one training forward/backward over `rows` tokens.
fn training_activations(
    c: &LlamaConfig,
    trains: &Trains,
    rows: u64,
    checkpointing: bool,
    act: u64,
) -> u64 {
    let (d, i, layers) = (
        c.hidden_size as u64,
        c.intermediate_size as u64,
        c.num_layers as u64,
    );
    let block = rows * saved_row_bytes(c, trains, act);
    let kept = if checkpointing {
        layers * rows * d * act + block
    } else {
        layers * block
    };
    // final_x and the final norm's output, its f32 inverse, f32 d(hidden)
    let head = rows * (2 * d * act + 4 + d * 4);
    let backward = rows * (3 * i + 3 * d) * act;
    kept + head + backward
}

/// The fused cross-entropy's chunk of logits over `rows` rows.
fn logits_chunk(c: &LlamaConfig, rows: u64, act: u64) -> u64 {
    let chunk = rows.min(LOGITS_CHUNK_ROWS as u64);
    chunk * c.vocab_size as u64 * act + chunk * 2 * 4
}

/// Gradient and device optimizer bytes of `n` trained parameters.
fn grads_and_optimizer(n: u64, act: u64, offload: bool) -> (u64, u64) {
    let optimizer_per = match (offload, act < 4) {
        (true, _) => 0,
        (false, true) => 12,
        (false, false) => 8,
    };
    (n * 4, n * optimizer_per)
}

/// The peak device memory of a stage.
pub fn estimate(w: &Workload<'_>) -> Breakdown {
    let c = w.config;
    let act = w.dtype_bytes as u64;
    let counts = param_counts(c);
    let workspace = if w.cuda {
        CUDA_CONTEXT_BYTES + CUBLAS_WORKSPACE_BYTES
    } else {
        0
    };
    let micro = w.micro_batch as u64;
    let seq = w.seq_len as u64;
    let d = c.hidden_size as u64;
    match &w.task {
        Task::Sft => {
            let (extra, trained) = trained_params(c, &w.trains, counts.causal_lm);
            let (gradients, optimizer) = grads_and_optimizer(trained, act, w.optimizer_offload);
            let rows = micro * seq;
            Breakdown {
                weights: counts.causal_lm * act,
                adapters: extra * act,
                gradients,
                optimizer,
                activations: training_activations(c, &w.trains, rows, w.checkpointing, act),
                logits: logits_chunk(c, rows, act),
                workspace,
                ..Breakdown::default()
            }
        }
        Task::Reward => {
            let base = counts.causal_lm - counts.lm_head;
            let (extra, trained) = trained_params(c, &w.trains, base);
            let (gradients, optimizer) = grads_and_optimizer(trained + d, act, w.optimizer_offload);
            let rows = 2 * micro * seq;
            Breakdown {
                weights: base * act,
                adapters: (extra + d) * act,
                gradients,
                optimizer,
                activations: training_activations(c, &w.trains, rows, w.checkpointing, act),
                // one score per row, f32
                logits: rows * 4,
                workspace,
                ..Breakdown::default()
            }
        }
        Task::Ppo {
            critic,
            reference,
            rollout,
        } => {
            let base = counts.causal_lm;
            let (actor_extra, actor_trained) = trained_params(c, &w.trains, base);
            let (critic_extra, critic_trained) = trained_params(c, critic, base);
            let (reference_extra, _) = trained_params(c, reference, base);
            // The reward model's adapter has the critic's shape (the critic
            // starts from it) and trains nothing here.
            let reward_extra = critic_extra;
            // A fully trained actor cannot share the base with its frozen
            // reference, nor a fully trained critic with the reward model.
            let copies =
                1 + u64::from(w.trains == Trains::Full) + u64::from(*critic == Trains::Full);
            let heads = 2 * d;
            let trained = actor_trained + critic_trained + d;
            let (gradients, optimizer) = grads_and_optimizer(trained, act, w.optimizer_offload);
            let rows = micro * seq;
            let activations = training_activations(c, &w.trains, rows, w.checkpointing, act)
                .max(training_activations(c, critic, rows, w.checkpointing, act));
            let gen_tokens = (rollout.prompt_len + rollout.new_tokens) as u64;
            let gen_batch = rollout.generation_batch as u64;
            let kv = gen_batch
                * gen_tokens
                * c.num_layers as u64
                * 2
                * (c.num_kv_heads * c.head_dim) as u64
                * act;
            // Prefill: one block's working set over the prompts, the hidden
            // state in and out, and f32 logits of each sequence's last token.
            let prefill_rows = gen_batch * rollout.prompt_len as u64;
            let generation = prefill_rows
                * (saved_row_bytes(c, &Trains::Nothing, act) + 2 * d * act)
                + gen_batch * c.vocab_size as u64 * 4;
            Breakdown {
                weights: copies * base * act,
                adapters: (actor_extra + reference_extra + critic_extra + reward_extra + heads)
                    * act,
                gradients,
                optimizer,
                activations,
                logits: logits_chunk(c, rows, act).max(rows * c.vocab_size as u64 * 4),
                kv_cache: kv,
                generation,
                workspace,
            }
        }
    }
}

/// Config lookups by (source, base folder), for [`model_config`].
type ConfigMemo = HashMap<(String, PathBuf), Result<LlamaConfig, String>>;

/// The model shape of a `model:` source, for planning: a local folder's
/// `config.json`, or a hub repository's from the hub cache, else fetched
/// alone (a few kB), never the weights. `Err` carries a note for `plan`
/// (offline with nothing cached, an unreadable file); it is never fatal.
/// Relative folders are taken from `base_dir` (the pipeline file's folder).
/// Answers are remembered for the process, so planning every preset asks
/// once.
pub fn model_config(source_text: &str, base_dir: &Path) -> Result<LlamaConfig, String> {
    static SEEN: OnceLock<Mutex<ConfigMemo>> = OnceLock::new();
    let key = (source_text.to_string(), base_dir.to_path_buf());
    let seen = SEEN.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(answer) = seen.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return answer;
    }
    let answer = lookup_config(source_text, base_dir, &ResolveOptions::from_env());
    if let Ok(mut map) = seen.lock() {
        map.insert(key, answer.clone());
    }
    answer
}

/// [`model_config`] without the memo, with explicit hub options.
pub fn lookup_config(
    source_text: &str,
    base_dir: &Path,
    options: &ResolveOptions,
) -> Result<LlamaConfig, String> {
    let parsed = source::parse(source_text).map_err(|e| e.to_string())?;
    let path = match parsed {
        ModelSource::Local(dir) => base_dir.join(dir).join("config.json"),
        ModelSource::Hub(repo) => hub_config(&repo, options)?,
        ModelSource::Gguf(file) => {
            source::resolve(&ModelSource::Gguf(base_dir.join(file)), options)
                .map_err(|e| e.to_string())?
                .config
        }
    };
    LlamaConfig::load(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `config.json` of a hub repository: from the cache's snapshot for the
/// revision, else downloaded alone unless offline.
fn hub_config(repo: &source::HubRepo, options: &ResolveOptions) -> Result<PathBuf, String> {
    let folder = options
        .cache_dir
        .join(format!("models--{}--{}", repo.owner, repo.name));
    let revision = repo.revision();
    let commit = std::fs::read_to_string(folder.join("refs").join(revision))
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|_| revision.to_string());
    let cached = folder.join("snapshots").join(&commit).join("config.json");
    if cached.is_file() {
        return Ok(cached);
    }
    if options.offline {
        return Err(format!(
            "{}'s config.json is not in the hub cache {} and HF_HUB_OFFLINE is set: \
             memory not estimated",
            repo.repo_id(),
            options.cache_dir.display()
        ));
    }
    let api =
        hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(options.cache_dir.clone()))
            .with_endpoint(options.endpoint.clone())
            .with_token(options.token.as_ref().map(|t| t.expose().to_string()))
            .with_progress(false)
            .build()
            .map_err(|e| format!("cannot reach the hub for {}: {e}", repo.repo_id()))?;
    api.repo(hf_hub::Repo::with_revision(
        repo.repo_id(),
        hf_hub::RepoType::Model,
        revision.to_string(),
    ))
    .get("config.json")
    .map_err(|e| {
        format!(
            "cannot fetch {}'s config.json ({e}): memory not estimated",
            repo.repo_id()
        )
    })
}

/// Total memory of CUDA device `ordinal` in bytes, asked of the driver after
/// the same probe `--device cuda` runs (so a missing driver is an error, not
/// a panic).
pub fn gpu_total_memory(ordinal: usize) -> Result<u64, crate::backend::cuda::CudaError> {
    use crate::backend::cuda::{CudaError, probe};
    probe(ordinal)?;
    let device = cudarc::driver::result::device::get(i32::try_from(ordinal).unwrap_or(i32::MAX))
        .map_err(|source| CudaError::Driver {
            op: "opening the device to read its memory".into(),
            source,
        })?;
    // SAFETY: the driver is loaded and initialised by `probe`, and `device`
    // is a valid handle it returned.
    let bytes = unsafe { cudarc::driver::result::device::total_mem(device) }.map_err(|source| {
        CudaError::Driver {
            op: "reading the device's total memory".into(),
            source,
        }
    })?;
    Ok(bytes as u64)
}

/// The error the CUDA backend raises when an allocation fails: which
/// allocation, and how much it asked for.
#[derive(Debug, Error, Diagnostic)]
#[error("the GPU ran out of memory while {op} ({} requested)", gib_text(*requested))]
#[diagnostic(code(cuda::out_of_memory))]
pub struct DeviceOutOfMemory {
    pub op: String,
    pub requested: u64,
}

/// What a user sees when a stage runs out of device memory: the stage, its
/// preset, the planner's estimate, and the next smaller preset to try.
#[derive(Debug, Error, Diagnostic)]
#[error("stage `{stage}` ran out of GPU memory under preset `{preset}`{}", estimate_text(.estimate, .gpu_memory_gib))]
#[diagnostic(code(run::out_of_memory))]
pub struct OutOfMemory {
    pub stage: String,
    pub preset: String,
    pub estimate: Option<u64>,
    pub gpu_memory_gib: Option<f64>,
    pub next_smaller: Option<String>,
    #[help]
    pub help: String,
    #[source]
    pub cause: Box<dyn std::error::Error + Send + Sync>,
}

fn estimate_text(estimate: &Option<u64>, gib: &Option<f64>) -> String {
    match (estimate, gib) {
        (Some(bytes), Some(gib)) => format!(
            " (the planner estimated {} of the preset's {gib} GiB)",
            gib_text(*bytes)
        ),
        (Some(bytes), None) => format!(" (the planner estimated {})", gib_text(*bytes)),
        _ => String::new(),
    }
}

/// Where a stage ran out of memory, for [`explain_out_of_memory`].
#[derive(Clone, Debug)]
pub struct OomContext<'a> {
    pub stage: &'a str,
    pub preset: Option<&'a str>,
    pub gpu_memory_gib: Option<f64>,
    pub estimate: Option<u64>,
    /// Every preset of the pipeline: (name, GPU memory in GiB).
    pub presets: Vec<(&'a str, f64)>,
}

/// The preset with the most memory below `current`'s.
pub fn next_smaller_preset<'a>(presets: &[(&'a str, f64)], current_gib: f64) -> Option<&'a str> {
    presets
        .iter()
        .filter(|(_, gib)| *gib < current_gib)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(name, _)| *name)
}

/// Whether a stage's failure is the device running out of memory: our typed
/// error, or a CUDA driver call that answered `CUDA_ERROR_OUT_OF_MEMORY`.
pub fn is_out_of_memory(report: &miette::Report) -> bool {
    if report.downcast_ref::<DeviceOutOfMemory>().is_some() {
        return true;
    }
    matches!(
        report.downcast_ref::<crate::backend::cuda::CudaError>(),
        Some(crate::backend::cuda::CudaError::Driver { source, .. })
            if source.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY
    )
}

/// Turn an out-of-memory failure into [`OutOfMemory`]; any other failure
/// comes back unchanged. The executor never moves a failed stage's
/// temporary output into the cache and keeps its resume state, so the
/// message can promise that nothing cached is lost.
pub fn explain_out_of_memory(report: miette::Report, at: &OomContext<'_>) -> miette::Report {
    if !is_out_of_memory(&report) {
        return report;
    }
    let next = at
        .gpu_memory_gib
        .and_then(|gib| next_smaller_preset(&at.presets, gib));
    let preset = at.preset.unwrap_or("(none)");
    let mut help = match next {
        Some(name) => format!(
            "run again with `--preset {name}` (smaller micro-batch, same global batch and results)"
        ),
        None if at.preset.is_some() => "this is already the smallest preset: add one with \
             `micro_batch: 1` and `activation_checkpointing: true`, or use LoRA instead of \
             full fine-tuning"
            .to_string(),
        None => "add `memory_presets` to the pipeline and pick one with `--preset`".to_string(),
    };
    help.push_str(
        "; `poker-pipe plan` shows each stage's estimate per preset. Stages that \
         finished stay cached and this stage resumes from its last checkpoint",
    );
    let cause: Box<dyn std::error::Error + Send + Sync> = Box::new(ReportText(format!("{report}")));
    miette::Report::new(OutOfMemory {
        stage: at.stage.to_string(),
        preset: preset.to_string(),
        estimate: at.estimate,
        gpu_memory_gib: at.gpu_memory_gib,
        next_smaller: next.map(str::to_string),
        help,
        cause,
    })
}

/// The original failure's text as the source of [`OutOfMemory`].
#[derive(Debug)]
struct ReportText(String);

impl fmt::Display for ReportText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReportText {}

/// The one call a training stage kind makes from
/// `StageKind::memory`: its model (`hf:...` or a folder, relative to
/// `base_dir`, or a random model's config), what it does and trains, its sequence length and the
/// preset's micro-batch, checkpointing and optimizer offload. Planned for CUDA in bf16, what
/// presets are for. The model's shape comes from [`model_config`]; when it
/// cannot be had the answer is [`StageMemory::Unknown`] with the reason.
#[allow(clippy::too_many_arguments)]
pub fn plan_stage(
    model: &PlannedModel,
    base_dir: &Path,
    task: Task,
    trains: Trains,
    seq_len: usize,
    micro_batch: u32,
    checkpointing: bool,
    optimizer_offload: bool,
) -> StageMemory {
    let config = match model {
        PlannedModel::Source(source) => model_config(source, base_dir),
        PlannedModel::Config(json) => {
            LlamaConfig::parse(&json.to_string(), Path::new("<random init>"))
                .map_err(|e| e.to_string())
        }
    };
    match config {
        Ok(config) => StageMemory::Estimated(estimate(&Workload {
            config: &config,
            task,
            trains,
            micro_batch: micro_batch as usize,
            seq_len,
            checkpointing,
            optimizer_offload,
            dtype_bytes: 2,
            cuda: true,
        })),
        Err(note) => StageMemory::Unknown(note),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::model::config::RopeScaling;
    use crate::model::llama::Llama;
    use crate::model::lora::{self, LoraConfig};

    /// Llama 3.1 8B's `config.json` numbers.
    fn llama8b() -> LlamaConfig {
        LlamaConfig {
            vocab_size: 128_256,
            hidden_size: 4096,
            intermediate_size: 14_336,
            num_layers: 32,
            num_heads: 32,
            num_kv_heads: 8,
            head_dim: 128,
            rms_norm_eps: 1e-5,
            rope_theta: 500_000.0,
            rope_scaling: RopeScaling::None,
            tie_word_embeddings: false,
            bos_token_id: Some(128_000),
            eos_token_ids: vec![128_001],
            pad_token_id: None,
            max_position_embeddings: 131_072,
        }
    }

    /// The golden fixtures' GQA shape: d 32, I 64, 2 layers, 8 heads, 2 KV
    /// heads of 8, vocabulary 96.
    fn tiny() -> LlamaConfig {
        LlamaConfig {
            vocab_size: 96,
            hidden_size: 32,
            intermediate_size: 64,
            num_layers: 2,
            num_heads: 8,
            num_kv_heads: 2,
            head_dim: 8,
            max_position_embeddings: 64,
            ..llama8b()
        }
    }

    fn sft<'a>(config: &'a LlamaConfig, trains: Trains, micro: usize, ckpt: bool) -> Workload<'a> {
        Workload {
            config,
            task: Task::Sft,
            trains,
            micro_batch: micro,
            seq_len: 512,
            checkpointing: ckpt,
            optimizer_offload: false,
            dtype_bytes: 2,
            cuda: true,
        }
    }

    /// Per layer: norms 2*4096 + q,o 2*4096*4096 + k,v 2*1024*4096 + MLP
    /// 3*14336*4096 = 218,112,000; x32 = 6,979,584,000; embedding and LM
    /// head 128256*4096 = 525,336,576 each; final norm 4096:
    /// 8,030,261,248 (the published 8.03 B). LoRA rank 128 on all seven:
    /// per layer 128*(8192*2 + 5120*2 + 18432*3) = 10,485,760; x32.
    #[test]
    fn llama8b_parameter_counts_match_the_published_model() {
        let c = llama8b();
        assert_eq!(param_counts(&c).causal_lm, 8_030_261_248);
        assert_eq!(param_counts(&c).lm_head, 525_336_576);
        let all: Vec<String> = PROJECTIONS.iter().map(|s| s.to_string()).collect();
        assert_eq!(lora_params(&c, 128, &all), 335_544_320);
    }

    /// LoRA SFT on the 24 GB preset (micro-batch 1, 512 tokens,
    /// checkpointing), by hand:
    /// - weights 8,030,261,248 x 2 = 16,060,522,496
    /// - adapters 335,544,320 x 2 = 671,088,640; gradients x 4 =
    ///   1,342,177,280; optimizer x 12 = 4,026,531,840
    /// - a block's saved row: bf16 (4*4096 + 2*4096 + 2*1024 + 3*14336 +
    ///   7*128) = 70,528 elements = 141,056 B, f32 (2 + 32) x 4 = 136 B:
    ///   141,192 B; kept: 32 x 512 x 4096 x 2 = 134,217,728 inputs + 512 x
    ///   141,192 = 72,290,304 one recomputed block; final norm 512 x
    ///   (16,384 + 4 + 16,384) = 16,779,264; backward 512 x 55,296 x 2 =
    ///   56,623,104:
    ///   activations 279,910,400
    /// - logits 512 x 128,256 x 2 + 512 x 8 = 131,338,240
    /// - workspace 544 MiB = 570,425,344
    ///
    /// Total 23,081,994,240 B = 21.50 GiB: fits a 24 GB card (23.9 GiB).
    #[test]
    fn llama8b_lora_sft_on_24gb_by_hand() {
        let c = llama8b();
        let b = estimate(&sft(&c, Trains::lora_all(128), 1, true));
        assert_eq!(
            b,
            Breakdown {
                weights: 16_060_522_496,
                adapters: 671_088_640,
                gradients: 1_342_177_280,
                optimizer: 4_026_531_840,
                activations: 279_910_400,
                logits: 131_338_240,
                kv_cache: 0,
                generation: 0,
                workspace: 570_425_344,
            }
        );
        assert_eq!(b.total(), 23_081_994_240);
        assert!(fits(b.total(), 23.9));
    }

    /// Micro-batch 8 without checkpointing (the 80 GB preset): every block
    /// keeps 4096 x 141,192 B, x 32 = 18,506,170,368; final norm 4096 x
    /// 32,772 = 134,234,112; backward 4096 x 110,592 = 452,984,832;
    /// logits one 1024-row chunk 1024 x 128,256 x 2 + 8192 = 262,676,480.
    /// Total 42,026,958,848 B = 39.1 GiB.
    #[test]
    fn llama8b_lora_sft_on_80gb_by_hand() {
        let c = llama8b();
        let b = estimate(&sft(&c, Trains::lora_all(128), 8, false));
        assert_eq!(b.activations, 19_093_536_768);
        assert_eq!(b.logits, 262_676_480);
        assert_eq!(b.total(), 42_026_958_848);
        assert!(fits(b.total(), 79.6));
    }

    /// Full fine-tuning of 8B needs 2 + 4 + 12 = 18 bytes a parameter before
    /// any activation: 144.5 GB; no single card of the preset table holds it.
    #[test]
    fn llama8b_full_sft_does_not_fit_80gb() {
        let c = llama8b();
        let b = estimate(&sft(&c, Trains::Full, 2, true));
        assert_eq!(b.gradients, 8_030_261_248 * 4);
        assert_eq!(b.optimizer, 8_030_261_248 * 12);
        assert_eq!(b.adapters, 0);
        assert!(!fits(b.total(), 79.6));
    }

    /// The tiny shape, full fine-tuning in f32 on the CPU, micro-batch 2 x
    /// 16 tokens, no checkpointing:
    /// - parameters: per layer 2*32 + 2*64*32 + 2*16*32 + 3*64*32 = 11,328,
    ///   x2 = 22,656, + 2 x 96*32 + 32 = 28,832; weights and gradients
    ///   28,832 x 4 = 115,328 each, optimizer (m, v) x 8 = 230,656
    /// - rows 32; a block's row (4*32 + 2*64 + 2*16 + 3*64) x 4 = 1,920 +
    ///   (2 + 8) x 4 = 1,960; kept 2 x 32 x 1,960 = 125,440; final norm 32 x
    ///   (256 + 4 + 128) = 12,416; backward 32 x 288 x 4 = 36,864:
    ///   activations 174,720
    /// - logits 32 x 96 x 4 + 32 x 8 = 12,544; no workspace on the CPU.
    ///
    /// Total 648,576 B.
    #[test]
    fn tiny_full_sft_on_cpu_by_hand() {
        let c = tiny();
        let b = estimate(&Workload {
            config: &c,
            task: Task::Sft,
            trains: Trains::Full,
            micro_batch: 2,
            seq_len: 16,
            checkpointing: false,
            optimizer_offload: false,
            dtype_bytes: 4,
            cuda: false,
        });
        assert_eq!(b.weights, 115_328);
        assert_eq!(b.gradients, 115_328);
        assert_eq!(b.optimizer, 230_656);
        assert_eq!(b.activations, 174_720);
        assert_eq!(b.logits, 12_544);
        assert_eq!(b.total(), 648_576);
    }

    /// The counts agree with the model code: the tensors `Llama` creates,
    /// and the trainable parameters LoRA attaches.
    #[test]
    fn counts_agree_with_the_model_code() {
        for tied in [false, true] {
            let c = LlamaConfig {
                tie_word_embeddings: tied,
                ..tiny()
            };
            let from_shapes: usize = Llama::<Cpu>::tensor_shapes(&c)
                .iter()
                .map(|(_, s)| s.iter().product::<usize>())
                .sum();
            assert_eq!(param_counts(&c).causal_lm, from_shapes as u64);
        }
        let c = tiny();
        let targets = vec!["q_proj".to_string(), "down_proj".to_string()];
        let mut model = Llama::random(&Cpu, c.clone(), 3).unwrap();
        let cfg = LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout: 0.0,
            targets: targets.clone(),
            rslora: false,
        };
        lora::attach(&Cpu, &mut model, &cfg, 5).unwrap();
        let trainable: usize = model
            .params_mut()
            .iter()
            .filter(|p| p.grad.is_some())
            .map(|p| p.numel())
            .sum();
        assert_eq!(lora_params(&c, 4, &targets), trainable as u64);
    }

    /// Reward: pairs double the rows, the LM head is gone, a 4096-wide
    /// score head trains. PPO: one base, four adapters (actor, reference,
    /// critic, reward), KV cache of 1 x (256 + 256) tokens x 32 layers x 2
    /// x 1024 x 2 B = 67,108,864. Offloading the optimizer takes its 8 GB
    /// (2 x 335,548,416 x 12 B) off the device, and only that.
    #[test]
    fn reward_and_ppo_share_the_base() {
        let c = llama8b();
        let lora = Trains::lora_all(128);
        let reward = estimate(&Workload {
            task: Task::Reward,
            ..sft(&c, lora.clone(), 1, true)
        });
        assert_eq!(reward.weights, (8_030_261_248 - 525_336_576) * 2);
        assert_eq!(reward.adapters, (335_544_320 + 4096) * 2);
        assert_eq!(reward.gradients, (335_544_320 + 4096) * 4);
        assert_eq!(reward.logits, 2 * 512 * 4);
        let single = estimate(&sft(&c, lora.clone(), 2, true));
        assert_eq!(reward.activations, single.activations);

        let rollout = Rollout {
            generation_batch: 1,
            prompt_len: 256,
            new_tokens: 256,
        };
        let ppo = estimate(&Workload {
            task: Task::Ppo {
                critic: lora.clone(),
                reference: lora.clone(),
                rollout,
            },
            ..sft(&c, lora.clone(), 1, true)
        });
        assert_eq!(ppo.weights, 8_030_261_248 * 2);
        assert_eq!(ppo.adapters, (4 * 335_544_320 + 2 * 4096) * 2);
        assert_eq!(ppo.gradients, (2 * 335_544_320 + 4096) * 4);
        assert_eq!(ppo.optimizer, (2 * 335_544_320 + 4096) * 12);
        assert_eq!(ppo.kv_cache, 67_108_864);
        assert!(fits(ppo.total(), 39.5));
        assert!(!fits(ppo.total(), 23.9));
        let offloaded = estimate(&Workload {
            optimizer_offload: true,
            ..ppo_workload(&c, &lora, rollout)
        });
        assert_eq!(offloaded.optimizer, 0);
        assert_eq!(ppo.total() - offloaded.total(), ppo.optimizer);
        assert!(fits(offloaded.total(), 23.9));
    }

    fn ppo_workload<'a>(c: &'a LlamaConfig, lora: &Trains, rollout: Rollout) -> Workload<'a> {
        Workload {
            task: Task::Ppo {
                critic: lora.clone(),
                reference: lora.clone(),
                rollout,
            },
            ..sft(c, lora.clone(), 1, true)
        }
    }

    /// Checkpointing saves memory, a bigger micro-batch costs it, and the
    /// logits chunk stops growing at [`LOGITS_CHUNK_ROWS`].
    #[test]
    fn estimates_move_the_right_way() {
        let c = llama8b();
        let lora = Trains::lora_all(128);
        let on = estimate(&sft(&c, lora.clone(), 4, true));
        let off = estimate(&sft(&c, lora.clone(), 4, false));
        assert!(on.activations < off.activations);
        let two = estimate(&sft(&c, lora.clone(), 2, true));
        assert!(two.activations < on.activations);
        assert_eq!(two.logits, on.logits);
        assert_eq!(two.weights, on.weights);
    }

    #[test]
    fn next_smaller_preset_and_fit_rule() {
        let presets = [("a", 23.9), ("b", 39.5), ("c", 44.9), ("d", 79.6)];
        assert_eq!(next_smaller_preset(&presets, 79.6), Some("c"));
        assert_eq!(next_smaller_preset(&presets, 39.5), Some("a"));
        assert_eq!(next_smaller_preset(&presets, 23.9), None);
        assert!(fits(9 * (1 << 30), 10.0));
        assert!(!fits(10 * (1 << 30), 10.0));
    }

    /// A typed out-of-memory failure becomes the full message; any other
    /// failure passes through untouched.
    #[test]
    fn out_of_memory_names_stage_preset_estimate_and_next_preset() {
        let at = OomContext {
            stage: "sft",
            preset: Some("a40-48g"),
            gpu_memory_gib: Some(44.9),
            estimate: Some(30 * (1 << 30)),
            presets: vec![("rtx4090-24g", 23.9), ("a40-48g", 44.9), ("a100-40g", 39.5)],
        };
        let oom = miette::Report::new(DeviceOutOfMemory {
            op: "allocating activations".into(),
            requested: 1 << 30,
        });
        let explained = explain_out_of_memory(oom, &at);
        let typed = explained.downcast_ref::<OutOfMemory>().unwrap();
        assert_eq!(typed.next_smaller.as_deref(), Some("a100-40g"));
        let text = format!("{explained}");
        assert!(
            text.contains("`sft`") && text.contains("`a40-48g`"),
            "{text}"
        );
        assert!(text.contains("30.0 GiB"), "{text}");
        assert!(typed.help.contains("--preset a100-40g"), "{}", typed.help);
        assert!(typed.help.contains("stay cached"), "{}", typed.help);

        let other = explain_out_of_memory(miette::miette!("disk full"), &at);
        assert!(other.downcast_ref::<OutOfMemory>().is_none());
        assert_eq!(format!("{other}"), "disk full");
    }

    /// A hub model with nothing cached and the hub unreachable gives a note,
    /// never an error; a local folder's config is read.
    #[test]
    fn model_config_offline_is_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let options = ResolveOptions::from_vars(|key| match key {
            "HF_HUB_CACHE" => Some(dir.path().display().to_string()),
            "HF_HUB_OFFLINE" => Some("1".into()),
            _ => None,
        });
        let note = lookup_config("hf:meta-llama/Llama-3.1-8B", dir.path(), &options).unwrap_err();
        assert!(note.contains("HF_HUB_OFFLINE"), "{note}");

        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/llama");
        let config = lookup_config("gqa", &golden, &options).unwrap();
        assert_eq!(config, {
            let mut c = tiny();
            c.rms_norm_eps = config.rms_norm_eps;
            c.rope_theta = config.rope_theta;
            c.rope_scaling = config.rope_scaling.clone();
            c.bos_token_id = config.bos_token_id;
            c.eos_token_ids = config.eos_token_ids.clone();
            c.pad_token_id = config.pad_token_id;
            c
        });
    }
}
