//! The memory planner: the peak device memory of a training stage, part by
//! part, before anything runs, so `plan` can say whether a stage fits a
//! memory preset and `validate` can warn when it does not.
//!
//! The model of memory follows what the backends store (bytes per element
//! in brackets; `w` is the weight dtype, 2 for bf16, 4 for f32):
//!
//! - **weights** `[w]`: every frozen base tensor once (PPO's actor,
//!   reference, critic and reward share one base: ARCHITECTURE.md); a fully
//!   trained model is its own f32 master `[4]`.
//! - **adapters** `[4]`: LoRA A and B of every targeted projection, and the
//!   one-row heads (reward score, PPO value head), always f32.
//! - **gradients** `[4]`: one f32 gradient per trainable parameter, so that
//!   micro-batches accumulate without bf16 rounding (PPO: the actor's or
//!   the critic's, never both at once); a fully trained model with a tied
//!   head sums the head's share of the embedding's gradient in a second one.
//! - **optimizer** `[4 x 2]`: AdamW's m and v (the trained values are their
//!   own f32 masters); nothing when the preset offloads it to host memory
//!   (`offload_optimizer`). PPO's EMA of the actor is an f32 copy of its
//!   adapter, counted with the adapters; with the optimizer offloaded it
//!   lives in host memory too (`train::ema`).
//! - **activations** `[4]`, per token row: without checkpointing each block
//!   keeps what `Saved` in `llama.rs` keeps (x, h1, q, k, v, attn, x2, h2,
//!   gate, up, act, the LoRA intermediates, and in f32 the two RMSNorm
//!   inverses and the attention logsumexp per head); with checkpointing only
//!   each block's input, plus one block's `Saved` while it is recomputed. On
//!   top: the final norm's input and output, the f32 gradient of the final
//!   hidden state, and the backward's working set of one block (the MLP
//!   branch is the widest: three `[rows, intermediate]` and three `[rows,
//!   hidden]` gradients).
//!   Under bf16 the ops also hold narrowed copies of their inputs while
//!   they run: on CUDA bf16 scratch, on the CPU ([`crate::backend::CpuBf16`])
//!   rounded f32 copies and the widest frozen projection widened to f32;
//!   the MLP's backward, the widest op, is added.
//! - **logits**: one chunk of the fused cross-entropy, `[chunk rows,
//!   vocab]` (bf16 `[2]` on CUDA, f32 `[4]` on the CPU), turned into its
//!   gradient in place; never `B x T x V`. CUDA's chunk is up to 2^27 values,
//!   the CPU's 128 rows; the CPU in bf16 also widens the whole LM head to
//!   f32 while it runs. PPO's entropy metric goes through the same chunks.
//! - **kv_cache** `[4]` and **generation**: PPO's roll-out; generation is
//!   the prefill's working set and f32 logits of the last token of each
//!   sequence for sampling. The cache lives only while a micro-batch
//!   generates, and the update's tape only while it trains, so PPO's peak
//!   is the larger of the two phases: the breakdown shows that phase's
//!   parts (`kv_cache` and `generation`, or `activations` and `logits`)
//!   and zeros for the other's.
//! - **checkpoint** (CPU only): a checkpoint copies every trained tensor
//!   and its AdamW moments (and PPO's moving average) out of the backend,
//!   `[4 x 3]`, between steps, and writes them through safetensors' 1 MiB
//!   buffer. On CUDA those copies are host memory, not
//!   the device's; on the CPU they share the one heap, so the peak is the
//!   larger of a step (activations, logits, roll-out) and a checkpoint, and
//!   the breakdown shows the larger one's parts.
//! - **workspace**: the CUDA context and cuBLAS(Lt) workspace; nothing on the
//!   CPU (the GEMM library's per-thread packing slabs are allocated when the
//!   backend opens, before any model: [`crate::backend::cpu::warm_up`]).
//!
//! The peak is the sum: the planner errs on the side of "does not fit".

use serde::{Deserialize, Serialize};

use super::{MIB, gib_text};
use crate::backend::Dtype;
use crate::model::config::LlamaConfig;
use crate::model::llama::PROJECTIONS;

/// Logit values the CUDA backend's fused cross-entropy holds at once, so
/// their memory does not grow with the batch.
pub use crate::backend::cuda::CE_CHUNK_VALUES as CUDA_LOGITS_CHUNK_VALUES;

/// Rows of token logits the CPU backend's fused cross-entropy handles at
/// once.
pub use crate::backend::cpu::LOGITS_CHUNK_ROWS as CPU_LOGITS_CHUNK_ROWS;

/// What the driver takes for a CUDA context on current GPUs, measured as the
/// difference in used memory before and after `cuCtxCreate` on an H100.
pub const CUDA_CONTEXT_BYTES: u64 = 512 * MIB;

/// The buffer safetensors writes a checkpoint file through.
const CHECKPOINT_WRITE_BUFFER: u64 = MIB;

/// cuBLASLt's recommended workspace on Hopper (32 MiB).
pub const CUBLAS_WORKSPACE_BYTES: u64 = 32 * MIB;

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
    /// DPO: next-token log-probabilities of the chosen and the rejected
    /// answer together, so a micro-batch of `n` pairs is `2n` sequences
    /// through the LM head; the reference's figures are computed before
    /// training, so no second model is held.
    Dpo,
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
        /// What the reward model's weights are.
        reward: RewardWeights,
        rollout: Rollout,
        /// PPO keeps a moving average of the actor (`ema` above 0).
        ema: bool,
    },
    /// GRPO: the actor and its reference as for PPO, no critic, and a
    /// reward model only when the stage mixes one's score in (where its
    /// weights are, and its adapter's shape).
    Grpo {
        reference: Trains,
        reward: Option<(RewardWeights, Trains)>,
        rollout: Rollout,
    },
}

/// The reward model PPO scores with (and its critic starts from).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardWeights {
    /// A LoRA adapter, of the critic's shape, on the policy's base.
    Adapter,
    /// Full weights: a second frozen base (without an LM head) beside the
    /// policy's, shared by the reward model and the critic's fresh LoRA.
    /// (Full weights that turn out equal to the policy's are dropped once
    /// compared, but both are loaded for the comparison.)
    OwnBase,
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
    /// How frozen base weights are stored (the stage's `dtype`).
    pub weights: Dtype,
    /// Planned for the CUDA backend (its context, cuBLAS workspace and
    /// logits chunk); otherwise for the CPU backend.
    pub cuda: bool,
}

/// Peak device memory of a stage, in bytes, part by part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breakdown {
    pub weights: u64,
    pub adapters: u64,
    pub gradients: u64,
    pub optimizer: u64,
    pub activations: u64,
    pub logits: u64,
    pub kv_cache: u64,
    pub generation: u64,
    #[serde(default)]
    pub checkpoint: u64,
    pub workspace: u64,
}

impl Breakdown {
    /// The parts in display order, with their names.
    pub fn parts(&self) -> [(&'static str, u64); 10] {
        [
            ("weights", self.weights),
            ("adapters", self.adapters),
            ("gradients", self.gradients),
            ("optimizer", self.optimizer),
            ("activations", self.activations),
            ("logits", self.logits),
            ("kv_cache", self.kv_cache),
            ("generation", self.generation),
            ("checkpoint", self.checkpoint),
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

/// Bytes one token row of one block keeps for the backward (`Saved`), all
/// f32.
fn saved_row_bytes(c: &LlamaConfig, trains: &Trains) -> u64 {
    let (d, i) = (c.hidden_size as u64, c.intermediate_size as u64);
    let qd = (c.num_heads * c.head_dim) as u64;
    let kvd = (c.num_kv_heads * c.head_dim) as u64;
    // x, h1, x2, h2 | q, attn | k, v | gate, up, act | LoRA x A
    let elems = 4 * d + 2 * qd + 2 * kvd + 3 * i + lora_row_elems(trains);
    // inv1, inv2, logsumexp per head
    let per_row = 2 + c.num_heads as u64;
    (elems + per_row) * 4
}

/// Bytes bf16 compute holds beyond f32 storage while the widest op of a
/// block's backward runs (the MLP's, over `[rows, intermediate]`). CUDA
/// narrows into bf16 scratch: SwiGLU's backward holds five such copies, a
/// projection the narrowed input and, for an f32 weight, the weight. The
/// CPU in bf16 rounds into f32 copies: three for SwiGLU's backward, or the
/// input and the widened bf16 weight for a projection. The f32 CPU
/// reference copies nothing.
fn narrowing_scratch(c: &LlamaConfig, rows: u64, weights: Dtype, cuda: bool) -> u64 {
    let (d, i) = (c.hidden_size as u64, c.intermediate_size as u64);
    match (cuda, weights) {
        (false, Dtype::F32) => 0,
        (false, Dtype::Bf16) => (3 * rows * i * 4).max(rows * i * 4 + i * d * 4),
        (true, Dtype::Bf16) => 5 * rows * i * 2,
        (true, Dtype::F32) => (5 * rows * i * 2).max(rows * i * 2 + i * d * 2),
    }
}

/// Activation memory of one training forward/backward over `rows` tokens.
fn training_activations(w: &Workload<'_>, trains: &Trains, rows: u64) -> u64 {
    let c = w.config;
    let (d, i, layers) = (
        c.hidden_size as u64,
        c.intermediate_size as u64,
        c.num_layers as u64,
    );
    let block = rows * saved_row_bytes(c, trains);
    let kept = if w.checkpointing {
        layers * rows * d * 4 + block
    } else {
        layers * block
    };
    // final_x, the final norm's output and the gradient of the hidden
    // state, and the norm's inverse
    let head = rows * (3 * d * 4 + 4);
    let backward = rows * (3 * i + 3 * d) * 4;
    kept + head + backward + narrowing_scratch(c, rows, w.weights, w.cuda)
}

/// The fused cross-entropy's working set over `rows` rows: one chunk of
/// logits with its rows of hidden state, the per-row results, and what the
/// backend narrows or widens for it (the head, when it is not already in
/// the format the kernel reads).
fn logits_chunk(w: &Workload<'_>, rows: u64) -> u64 {
    let c = w.config;
    let (d, vocab) = (c.hidden_size as u64, c.vocab_size as u64);
    let head_f32 = w.weights == Dtype::F32 || w.trains == Trains::Full;
    if w.cuda {
        let chunk = rows.min((CUDA_LOGITS_CHUNK_VALUES as u64 / vocab).max(1));
        let head_copy = if head_f32 { vocab * d * 2 } else { 0 };
        chunk * vocab * 2 + rows * d * 2 + head_copy + rows * 2 * 4
    } else {
        let chunk = rows.min(CPU_LOGITS_CHUNK_ROWS as u64);
        let rounded = match w.weights {
            Dtype::F32 => 0,
            Dtype::Bf16 => rows * d * 4 + vocab * d * 4,
        };
        chunk * vocab * 4 + 2 * chunk * d * 4 + rounded + rows * 2 * 4
    }
}

/// Gradient and device optimizer bytes of `n` trained parameters: an f32
/// gradient, and AdamW's m and v unless they live in host memory.
fn grads_and_optimizer(n: u64, offload: bool) -> (u64, u64) {
    (n * 4, if offload { 0 } else { n * 8 })
}

/// A fully trained model whose embedding is its head sums the head's share
/// of that gradient apart during a step (`Llama::begin_step`): a second f32
/// `[vocab, hidden]`.
fn tied_head_share(c: &LlamaConfig, trains: &Trains) -> u64 {
    match trains {
        Trains::Full if c.tie_word_embeddings => (c.vocab_size * c.hidden_size * 4) as u64,
        _ => 0,
    }
}

/// Bytes of `n` base parameters: frozen in the weight dtype, or their own
/// f32 masters when they train.
fn base_bytes(n: u64, trains: &Trains, weights: Dtype) -> u64 {
    match trains {
        Trains::Full => n * 4,
        _ => n * weights.bytes() as u64,
    }
}

/// The peak of a stage's steps alone: [`estimate`] for a run that wrote no
/// checkpoint.
pub fn estimate_steps(w: &Workload<'_>) -> Breakdown {
    estimate_step(w).0
}

/// The peak device memory of a stage.
pub fn estimate(w: &Workload<'_>) -> Breakdown {
    let (mut b, copies) = estimate_step(w);
    let checkpoint = copies + CHECKPOINT_WRITE_BUFFER;
    let step = b.activations + b.logits + b.kv_cache + b.generation;
    if !w.cuda && checkpoint > step {
        b = Breakdown {
            activations: 0,
            logits: 0,
            kv_cache: 0,
            generation: 0,
            checkpoint,
            ..b
        };
    }
    b
}

/// The peak of a stage's steps, and the bytes a checkpoint copies out of
/// the backend: every trained parameter with its two AdamW moments in f32,
/// and PPO's moving average of the actor.
fn estimate_step(w: &Workload<'_>) -> (Breakdown, u64) {
    let c = w.config;
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
        Task::Sft | Task::Dpo => {
            let (extra, trained) = trained_params(c, &w.trains, counts.causal_lm);
            let (gradients, optimizer) = grads_and_optimizer(trained, w.optimizer_offload);
            let gradients = gradients + tied_head_share(c, &w.trains);
            let sequences = if w.task == Task::Dpo { 2 } else { 1 };
            let rows = sequences * micro * seq;
            let b = Breakdown {
                weights: base_bytes(counts.causal_lm, &w.trains, w.weights),
                adapters: extra * 4,
                gradients,
                optimizer,
                activations: training_activations(w, &w.trains, rows),
                logits: logits_chunk(w, rows),
                workspace,
                ..Breakdown::default()
            };
            (b, trained * 12)
        }
        Task::Reward => {
            let base = counts.causal_lm - counts.lm_head;
            let (extra, trained) = trained_params(c, &w.trains, base);
            let (gradients, optimizer) = grads_and_optimizer(trained + d, w.optimizer_offload);
            let rows = 2 * micro * seq;
            let b = Breakdown {
                weights: base_bytes(base, &w.trains, w.weights),
                adapters: (extra + d) * 4,
                gradients,
                optimizer,
                activations: training_activations(w, &w.trains, rows),
                // one score per row, f32
                logits: rows * 4,
                workspace,
                ..Breakdown::default()
            };
            (b, (trained + d) * 12)
        }
        Task::Ppo {
            critic,
            reference,
            reward,
            rollout,
            ema,
        } => rl_step(
            w,
            RlModels {
                critic: Some(critic),
                reference,
                reward: Some((*reward, critic)),
                rollout,
                ema: *ema,
            },
        ),
        Task::Grpo {
            reference,
            reward,
            rollout,
        } => rl_step(
            w,
            RlModels {
                critic: None,
                reference,
                reward: reward
                    .as_ref()
                    .map(|(weights, adapter)| (*weights, adapter)),
                rollout,
                ema: false,
            },
        ),
    }
}

/// The models an RL stage holds beside its actor (`Workload::trains`).
struct RlModels<'a> {
    /// PPO's critic; GRPO has none.
    critic: Option<&'a Trains>,
    reference: &'a Trains,
    /// The reward model: where its weights are, and its adapter's shape.
    reward: Option<(RewardWeights, &'a Trains)>,
    rollout: &'a Rollout,
    ema: bool,
}

/// The peak of a PPO or GRPO step and its checkpoint's copies: the policy
/// base under the actor's and the reference's adapters, the critic and the
/// reward model on it (or on the reward model's own base), and the larger
/// of the roll-out's generation and one training micro-batch.
fn rl_step(w: &Workload<'_>, m: RlModels<'_>) -> (Breakdown, u64) {
    let c = w.config;
    let counts = param_counts(c);
    let workspace = if w.cuda {
        CUDA_CONTEXT_BYTES + CUBLAS_WORKSPACE_BYTES
    } else {
        0
    };
    let (micro, seq, d) = (w.micro_batch as u64, w.seq_len as u64, c.hidden_size as u64);
    let base = counts.causal_lm;
    let (actor_extra, actor_trained) = trained_params(c, &w.trains, base);
    let (critic_extra, critic_trained) = match m.critic {
        Some(critic) => trained_params(c, critic, base),
        None => (0, 0),
    };
    let (reference_extra, _) = trained_params(c, m.reference, base);
    // A LoRA reward model's adapter trains nothing here; full reward
    // weights have none but are a second frozen base (without an LM head).
    let (reward_extra, second_base) = match m.reward {
        Some((RewardWeights::Adapter, shape)) => (trained_params(c, shape, base).0, 0),
        Some((RewardWeights::OwnBase, _)) => (0, base - counts.lm_head),
        None => (0, 0),
    };
    // A fully trained actor cannot share the base with its frozen
    // reference, nor a fully trained critic with the reward model: each is
    // an f32 copy beside the frozen base.
    let trained_copies =
        u64::from(w.trains == Trains::Full) + u64::from(m.critic == Some(&Trains::Full));
    let heads = d * (u64::from(m.critic.is_some()) + u64::from(m.reward.is_some()));
    let ema_extra = if m.ema && !w.optimizer_offload {
        actor_extra
    } else {
        0
    };
    // The actor's gradients are freed before the critic's are made.
    let critic_head = if m.critic.is_some() { d } else { 0 };
    let (actor_grads, actor_opt) = grads_and_optimizer(actor_trained, w.optimizer_offload);
    let (critic_grads, critic_opt) =
        grads_and_optimizer(critic_trained + critic_head, w.optimizer_offload);
    let (gradients, optimizer) = (actor_grads.max(critic_grads), actor_opt + critic_opt);
    let rows = micro * seq;
    let critic_activations = m
        .critic
        .map_or(0, |critic| training_activations(w, critic, rows));
    let activations = training_activations(w, &w.trains, rows).max(critic_activations);
    let rollout = m.rollout;
    let gen_tokens = (rollout.prompt_len + rollout.new_tokens) as u64;
    let gen_batch = rollout.generation_batch as u64;
    let kv =
        gen_batch * gen_tokens * c.num_layers as u64 * 2 * (c.num_kv_heads * c.head_dim) as u64 * 4;
    // Prefill: one block's working set over the prompts, the hidden state
    // in and out, and f32 logits of each sequence's last token.
    let prefill_rows = gen_batch * rollout.prompt_len as u64;
    let generation = prefill_rows * (saved_row_bytes(c, &Trains::Nothing) + 2 * d * 4)
        + gen_batch * c.vocab_size as u64 * 4;
    let logits = logits_chunk(w, rows);
    let ((activations, logits), (kv, generation)) = if kv + generation > activations + logits {
        ((0, 0), (kv, generation))
    } else {
        ((activations, logits), (0, 0))
    };
    let checkpoint =
        (actor_trained + critic_trained + critic_head) * 12 + u64::from(m.ema) * actor_trained * 4;
    let b = Breakdown {
        weights: (base + second_base) * w.weights.bytes() as u64 + trained_copies * base * 4,
        // The reference and reward adapters are frozen: stored as the
        // weight dtype; the trained ones and the heads in f32.
        adapters: (actor_extra + critic_extra + heads + ema_extra) * 4
            + (reference_extra + reward_extra) * w.weights.bytes() as u64,
        gradients,
        optimizer,
        activations,
        logits,
        kv_cache: kv,
        generation,
        workspace,
        checkpoint: 0,
    };
    (b, checkpoint)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::backend::Dtype;
    use crate::backend::cpu::Cpu;
    use crate::model::config::RopeScaling;
    use crate::model::llama::Llama;
    use crate::model::lora::{self, LoraConfig};
    use crate::model::memory::fits;

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
            weights: Dtype::Bf16,
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
    /// checkpointing), bf16 weights on CUDA, by hand:
    /// - weights 8,030,261,248 x 2 = 16,060,522,496
    /// - adapters (f32) 335,544,320 x 4 = 1,342,177,280; gradients the
    ///   same; optimizer (m, v) x 8 = 2,684,354,560
    /// - a block's saved row, f32: (4*4096 + 2*4096 + 2*1024 + 3*14336 +
    ///   7*128) = 70,528 elements + (2 + 32) = 70,562 x 4 = 282,248 B;
    ///   kept: 32 x 512 x 4096 x 4 = 268,435,456 inputs + 512 x 282,248 =
    ///   144,510,976 one recomputed block; final norm 512 x (3 x 16,384 + 4)
    ///   = 25,167,872; backward 512 x 55,296 x 4 = 113,246,208; bf16 scratch
    ///   of SwiGLU's backward 5 x 512 x 14,336 x 2 = 73,400,320:
    ///   activations 624,760,832
    /// - logits one chunk of all 512 rows (up to 2^27 / 128,256 = 1,046)
    ///   512 x 128,256 x 2 = 131,334,144, the hidden rows narrowed 512 x
    ///   4096 x 2 = 4,194,304, 512 x 8 per-row results: 135,532,544 (the
    ///   bf16 head is read in place)
    /// - workspace 544 MiB = 570,425,344
    ///
    /// Total 22,759,950,336 B = 21.2 GiB: fits a 24 GB card (23.9 GiB).
    #[test]
    fn llama8b_lora_sft_on_24gb_by_hand() {
        let c = llama8b();
        let b = estimate(&sft(&c, Trains::lora_all(128), 1, true));
        assert_eq!(
            b,
            Breakdown {
                weights: 16_060_522_496,
                adapters: 1_342_177_280,
                gradients: 1_342_177_280,
                optimizer: 2_684_354_560,
                activations: 624_760_832,
                logits: 135_532_544,
                kv_cache: 0,
                generation: 0,
                checkpoint: 0,
                workspace: 570_425_344,
            }
        );
        assert_eq!(b.total(), 22_759_950_336);
        assert!(fits(b.total(), 23.9));
    }

    /// Micro-batch 8 without checkpointing (the 80 GB preset): every block
    /// keeps 4096 x 282,248 B, x 32 = 36,994,809,856; final norm 4096 x
    /// 49,156 = 201,342,976; backward 4096 x 221,184 = 905,969,664; bf16
    /// scratch 5 x 4096 x 14,336 x 2 = 587,202,560; logits one 1,046-row
    /// chunk 1,046 x 128,256 x 2 + 4096 x 4096 x 2 + 4096 x 8 =
    /// 301,898,752. Total 60,990,880,768 B = 56.8 GiB.
    #[test]
    fn llama8b_lora_sft_on_80gb_by_hand() {
        let c = llama8b();
        let b = estimate(&sft(&c, Trains::lora_all(128), 8, false));
        assert_eq!(b.activations, 38_689_325_056);
        assert_eq!(b.logits, 301_898_752);
        assert_eq!(b.total(), 60_990_880_768);
        assert!(fits(b.total(), 79.6));
    }

    /// Full fine-tuning of 8B needs 4 + 4 + 8 = 16 bytes a parameter (f32
    /// master, gradient, m and v) before any activation: 128.5 GB; no
    /// single card of the preset table holds it.
    #[test]
    fn llama8b_full_sft_does_not_fit_80gb() {
        let c = llama8b();
        let b = estimate(&sft(&c, Trains::Full, 2, true));
        assert_eq!(b.weights, 8_030_261_248 * 4);
        assert_eq!(b.gradients, 8_030_261_248 * 4);
        assert_eq!(b.optimizer, 8_030_261_248 * 8);
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
    /// - logits 32 x 96 x 4 + the chunk's hidden rows and their gradient 2
    ///   x 32 x 32 x 4 + 32 x 8 = 20,736; no workspace on the CPU.
    ///
    /// Total 656,768 B for the steps. A checkpoint copies the 28,832
    /// trained values and both moments, 28,832 x 12 = 345,984, through a
    /// 1 MiB buffer: 1,394,560 B, more than a step's 195,456, so the
    /// stage's peak is 115,328 x 2 + 230,656 + 1,394,560 = 1,855,872 B.
    #[test]
    fn tiny_full_sft_on_cpu_by_hand() {
        let c = tiny();
        let w = Workload {
            config: &c,
            task: Task::Sft,
            trains: Trains::Full,
            micro_batch: 2,
            seq_len: 16,
            checkpointing: false,
            optimizer_offload: false,
            weights: Dtype::F32,
            cuda: false,
        };
        let b = estimate_steps(&w);
        assert_eq!(b.weights, 115_328);
        assert_eq!(b.gradients, 115_328);
        assert_eq!(b.optimizer, 230_656);
        assert_eq!(b.activations, 174_720);
        assert_eq!(b.logits, 20_736);
        assert_eq!(b.total(), 656_768);
        let stage = estimate(&w);
        assert_eq!((stage.activations, stage.logits), (0, 0));
        assert_eq!(stage.checkpoint, 1_394_560);
        assert_eq!(stage.total(), 1_855_872);
        // On CUDA the checkpoint's copies are host memory.
        let cuda = estimate(&Workload { cuda: true, ..w });
        assert_eq!(cuda.checkpoint, 0);
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
    /// score head trains. PPO: one base, four adapters (actor and critic in
    /// f32, the frozen reference and reward in bf16); the update (512
    /// rows' activations) outweighs the roll-out (a KV cache of 1 x (256 +
    /// 256) tokens x 32 layers x 2 x 1024 x 4 B = 134,217,728), so only
    /// the update's parts are counted. Offloading the optimizer takes its 5.4 GB
    /// (2 x 335,548,416 x 8 B) off the device, and the actor's moving
    /// average with it.
    #[test]
    fn reward_and_ppo_share_the_base() {
        let c = llama8b();
        let lora = Trains::lora_all(128);
        let reward = estimate(&Workload {
            task: Task::Reward,
            ..sft(&c, lora.clone(), 1, true)
        });
        assert_eq!(reward.weights, (8_030_261_248 - 525_336_576) * 2);
        assert_eq!(reward.adapters, (335_544_320 + 4096) * 4);
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
                reward: RewardWeights::Adapter,
                rollout,
                ema: true,
            },
            ..sft(&c, lora.clone(), 1, true)
        });
        assert_eq!(ppo.weights, 8_030_261_248 * 2);
        // Actor, critic, heads and the actor's moving average in f32.
        assert_eq!(
            ppo.adapters,
            (3 * 335_544_320 + 2 * 4096) * 4 + 2 * 335_544_320 * 2
        );
        assert_eq!(ppo.gradients, (335_544_320 + 4096) * 4);
        assert_eq!(ppo.optimizer, (2 * 335_544_320 + 4096) * 8);
        assert_eq!((ppo.kv_cache, ppo.generation), (0, 0));
        assert_eq!(
            ppo.activations,
            estimate(&sft(&c, lora.clone(), 1, true)).activations
        );
        assert!(fits(ppo.total(), 39.5));
        assert!(!fits(ppo.total(), 23.9));
        let offloaded = estimate(&Workload {
            optimizer_offload: true,
            ..ppo_workload(&c, &lora, rollout)
        });
        assert_eq!(offloaded.optimizer, 0);
        // The moving average goes to the host with the optimizer.
        assert_eq!(
            ppo.total() - offloaded.total(),
            ppo.optimizer + 335_544_320 * 4
        );
        assert!(fits(offloaded.total(), 23.9));
    }

    fn ppo_workload<'a>(c: &'a LlamaConfig, lora: &Trains, rollout: Rollout) -> Workload<'a> {
        Workload {
            task: Task::Ppo {
                critic: lora.clone(),
                reference: lora.clone(),
                reward: RewardWeights::Adapter,
                rollout,
                ema: true,
            },
            ..sft(c, lora.clone(), 1, true)
        }
    }

    /// Checkpointing saves memory, a bigger micro-batch costs it, and the
    /// logits chunk stops growing at [`CUDA_LOGITS_CHUNK_VALUES`].
    #[test]
    fn estimates_move_the_right_way() {
        let c = llama8b();
        let lora = Trains::lora_all(128);
        let on = estimate(&sft(&c, lora.clone(), 4, true));
        let off = estimate(&sft(&c, lora.clone(), 4, false));
        assert!(on.activations < off.activations);
        let two = estimate(&sft(&c, lora.clone(), 2, true));
        assert!(two.activations < on.activations);
        assert_eq!(two.weights, on.weights);
        // Past 1,046 rows only the narrowed hidden rows (2 B each) and the
        // per-row results (8 B) grow, not the chunk of logits.
        let eight = estimate(&sft(&c, lora.clone(), 8, true));
        assert_eq!(eight.logits - on.logits, 2048 * (4096 * 2 + 8));
    }
}
