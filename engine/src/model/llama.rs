//! The LLaMA decoder over any [`Backend`]: loading from a Hugging Face
//! directory, the forward pass (training, prefill and KV-cache decoding)
//! and the backward pass, with optional activation checkpointing.

use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::backend::{AttnShape, Backend, Gemm, RowCopy, WeightGrad};

use super::batch::{Batch, SeqRows};
use super::config::LlamaConfig;
use super::error::Result;
use super::linear::{DropoutSeed, Linear};
use super::param::Param;
use super::weights::{self, HostTensor, TensorMap};

/// One decoder block.
#[derive(Debug)]
pub struct Layer<B: Backend> {
    pub input_norm: Param<B>,
    pub q: Linear<B>,
    pub k: Linear<B>,
    pub v: Linear<B>,
    pub o: Linear<B>,
    pub post_norm: Param<B>,
    pub gate: Linear<B>,
    pub up: Linear<B>,
    pub down: Linear<B>,
}

/// The projections of a block in PEFT's target-module names.
pub const PROJECTIONS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

impl<B: Backend> Layer<B> {
    pub fn projections_mut(&mut self) -> [(&'static str, &mut Linear<B>); 7] {
        [
            ("q_proj", &mut self.q),
            ("k_proj", &mut self.k),
            ("v_proj", &mut self.v),
            ("o_proj", &mut self.o),
            ("gate_proj", &mut self.gate),
            ("up_proj", &mut self.up),
            ("down_proj", &mut self.down),
        ]
    }
}

/// A LLaMA model: `LlamaForCausalLM`, plus `score` for
/// `LlamaForSequenceClassification`.
#[derive(Debug)]
pub struct Llama<B: Backend> {
    pub cfg: LlamaConfig,
    pub embed: Param<B>,
    pub layers: Vec<Layer<B>>,
    pub norm: Param<B>,
    /// `None` when the head is tied to the embedding.
    pub lm_head: Option<Param<B>>,
    /// The reward head `[num_labels, hidden]`, when loaded as a reward model.
    pub score: Option<Param<B>>,
    inv_freq: Vec<f32>,
    /// Whether a step of several micro-batches is open
    /// ([`Llama::begin_step`]).
    in_step: bool,
    /// During a step, for a model whose embedding is also its head and
    /// trains: the head's share of the embedding's gradient, summed apart
    /// from the share of the embedding lookups so that each adds the step's
    /// sequences in the same order whatever the micro-batches. Made by the
    /// step's first [`Llama::loss_backward`] (a reward model's steps never
    /// need it); [`Llama::end_step`] adds it in.
    tied_head_grad: Option<B::Buf>,
}

/// How much of the forward pass to keep for the backward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keep {
    /// Nothing: inference.
    Nothing,
    /// Every activation.
    All,
    /// Only each block's input; blocks are recomputed in backward.
    LayerInputs,
}

/// Options of a training forward/backward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrainPass {
    /// Seed of this step's LoRA dropout masks.
    pub seed: u64,
    /// Activation checkpointing: recompute each block in backward.
    pub checkpoint: bool,
}

/// Activations of one block kept for its backward pass.
#[derive(Debug)]
struct Saved<B: Backend> {
    x: B::Buf,
    h1: B::Buf,
    inv1: B::Buf,
    q: B::Buf,
    k: B::Buf,
    v: B::Buf,
    attn: B::Buf,
    lse: B::Buf,
    x2: B::Buf,
    h2: B::Buf,
    inv2: B::Buf,
    gate: B::Buf,
    up: B::Buf,
    act: B::Buf,
    /// LoRA intermediates of the 7 projections, in [`PROJECTIONS`] order.
    xa: [Option<B::Buf>; 7],
}

#[derive(Debug)]
enum Kept<B: Backend> {
    All(Box<Saved<B>>),
    Input(B::Buf),
}

/// Everything the backward pass needs from a forward pass.
#[derive(Debug)]
pub struct Tape<B: Backend> {
    layers: Vec<Kept<B>>,
    final_x: B::Buf,
    final_inv: B::Buf,
    /// The pass's rows, made once for the forward and reused by the
    /// backward and the loss.
    rows: SeqRows,
    seed: Option<u64>,
}

/// Keys and values of past tokens, per layer `[batch, cap, kv_heads,
/// head_dim]`, for decoding one token at a time.
#[derive(Debug)]
pub struct KvCache<B: Backend> {
    k: Vec<B::Buf>,
    v: Vec<B::Buf>,
    pub cap: usize,
    pub len: usize,
    /// Values per sequence per layer: `cap * kv_heads * head_dim`.
    seq_width: usize,
}

impl<B: Backend> KvCache<B> {
    /// Keeps, for every `rows[i]`, a copy of that sequence's keys and
    /// values as sequence `i`: the cache of a batch's distinct prompts
    /// spread to every sequence that asked one of them.
    pub fn select(&mut self, be: &B, rows: &[u32]) {
        for buf in self.k.iter_mut().chain(self.v.iter_mut()) {
            *buf = be.gather_rows(buf, rows, self.seq_width);
        }
    }
}

/// Where a block's attention reads keys and values from.
struct Step<'a> {
    batch: &'a Batch,
    /// Absolute index of the first of this call's tokens.
    offset: usize,
    len: usize,
    positions: Vec<u32>,
    rows: SeqRows,
    seed: Option<u64>,
}

impl Step<'_> {
    /// The square causal attention of this call's tokens (training and
    /// prefill, without a KV cache).
    fn causal_shape(&self, c: &LlamaConfig) -> AttnShape {
        AttnShape::causal(
            self.batch.batch,
            self.len,
            c.num_heads,
            c.num_kv_heads,
            c.head_dim,
        )
    }
}

fn site_seed(seed: Option<u64>, layer: usize, site: usize) -> DropoutSeed {
    seed.map(|s| s ^ ((layer as u64) << 32 | site as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

impl<B: Backend> Llama<B> {
    /// Loads `config.json` and the weights of an HF-layout directory. A
    /// `score.weight` in the weights becomes the reward head.
    pub fn load(be: &B, dir: &Path) -> Result<Self> {
        let cfg = LlamaConfig::load(&dir.join("config.json"))?;
        let mut tensors = weights::open_dir(dir)?;
        Self::from_tensors(be, cfg, &mut tensors, dir)
    }

    /// Builds the model from `t`, taking its tensors one at a time in
    /// [`Llama::tensor_shapes`] order (then `score.weight`), each uploaded
    /// before the next is taken.
    pub fn from_tensors(
        be: &B,
        cfg: LlamaConfig,
        t: &mut impl TensorSource,
        dir: &Path,
    ) -> Result<Self> {
        let (d, i) = (cfg.hidden_size, cfg.intermediate_size);
        let (qd, kvd) = (
            cfg.num_heads * cfg.head_dim,
            cfg.num_kv_heads * cfg.head_dim,
        );
        let mut ld = Loader { be, t, dir };
        let embed = ld.param("model.embed_tokens.weight", &[cfg.vocab_size, d])?;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let p = format!("model.layers.{l}");
            layers.push(Layer {
                input_norm: ld.param(&format!("{p}.input_layernorm.weight"), &[d])?,
                q: ld.linear(&format!("{p}.self_attn.q_proj.weight"), &[qd, d])?,
                k: ld.linear(&format!("{p}.self_attn.k_proj.weight"), &[kvd, d])?,
                v: ld.linear(&format!("{p}.self_attn.v_proj.weight"), &[kvd, d])?,
                o: ld.linear(&format!("{p}.self_attn.o_proj.weight"), &[d, qd])?,
                post_norm: ld.param(&format!("{p}.post_attention_layernorm.weight"), &[d])?,
                gate: ld.linear(&format!("{p}.mlp.gate_proj.weight"), &[i, d])?,
                up: ld.linear(&format!("{p}.mlp.up_proj.weight"), &[i, d])?,
                down: ld.linear(&format!("{p}.mlp.down_proj.weight"), &[d, i])?,
            });
        }
        let norm = ld.param("model.norm.weight", &[d])?;
        let lm_head = if cfg.tie_word_embeddings || ld.t.rows("lm_head.weight").is_none() {
            None
        } else {
            Some(ld.param("lm_head.weight", &[cfg.vocab_size, d])?)
        };
        let labels = ld.t.rows("score.weight");
        let score = match labels {
            Some(n) => Some(ld.param("score.weight", &[n, d])?),
            None => None,
        };
        if lm_head.is_none() && !cfg.tie_word_embeddings && score.is_none() {
            return Err(super::error::ModelError::MissingTensor {
                name: "lm_head.weight".into(),
                dir: dir.to_path_buf(),
            });
        }
        let inv_freq = cfg.inv_freq();
        Ok(Llama {
            cfg,
            embed,
            layers,
            norm,
            lm_head,
            score,
            inv_freq,
            in_step: false,
            tied_head_grad: None,
        })
    }

    /// A model with random weights (normal, std 0.02; norms 1), for
    /// benchmarks and tests. Each tensor is drawn when the model takes it,
    /// so the host never holds more than one in f32.
    pub fn random(be: &B, cfg: LlamaConfig, seed: u64) -> Result<Self> {
        let mut t = RandomTensors {
            rng: ChaCha8Rng::seed_from_u64(seed),
            shapes: Self::tensor_shapes(&cfg),
            next: 0,
        };
        Self::from_tensors(be, cfg, &mut t, Path::new("<random>"))
    }

    /// Every tensor of a `LlamaForCausalLM` with this config.
    pub fn tensor_shapes(cfg: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
        let (d, i) = (cfg.hidden_size, cfg.intermediate_size);
        let (qd, kvd) = (
            cfg.num_heads * cfg.head_dim,
            cfg.num_kv_heads * cfg.head_dim,
        );
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            vec![cfg.vocab_size, d],
        )];
        for l in 0..cfg.num_layers {
            let p = format!("model.layers.{l}");
            out.extend([
                (format!("{p}.input_layernorm.weight"), vec![d]),
                (format!("{p}.self_attn.q_proj.weight"), vec![qd, d]),
                (format!("{p}.self_attn.k_proj.weight"), vec![kvd, d]),
                (format!("{p}.self_attn.v_proj.weight"), vec![kvd, d]),
                (format!("{p}.self_attn.o_proj.weight"), vec![d, qd]),
                (format!("{p}.post_attention_layernorm.weight"), vec![d]),
                (format!("{p}.mlp.gate_proj.weight"), vec![i, d]),
                (format!("{p}.mlp.up_proj.weight"), vec![i, d]),
                (format!("{p}.mlp.down_proj.weight"), vec![d, i]),
            ]);
        }
        out.push(("model.norm.weight".into(), vec![d]));
        if !cfg.tie_word_embeddings {
            out.push(("lm_head.weight".into(), vec![cfg.vocab_size, d]));
        }
        out
    }

    /// Every parameter, base and LoRA, in a fixed order.
    pub fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        let mut out = vec![&mut self.embed];
        for layer in &mut self.layers {
            let Layer {
                input_norm,
                q,
                k,
                v,
                o,
                post_norm,
                gate,
                up,
                down,
            } = layer;
            out.push(input_norm);
            for lin in [q, k, v, o] {
                push_linear(&mut out, lin);
            }
            out.push(post_norm);
            for lin in [gate, up, down] {
                push_linear(&mut out, lin);
            }
        }
        out.push(&mut self.norm);
        out.extend(self.lm_head.as_mut());
        out.extend(self.score.as_mut());
        out
    }

    /// The base weights (LoRA excluded).
    pub fn base_params_mut(&mut self) -> impl Iterator<Item = &mut Param<B>> {
        self.params_mut()
            .into_iter()
            .filter(|p| !p.name.contains(".lora_"))
    }

    /// Base weights as HF tensors (LoRA excluded), for saving.
    pub fn base_tensors(&mut self, be: &B) -> TensorMap {
        self.base_params_mut()
            .map(|p| (p.name.clone(), p.to_host(be)))
            .collect()
    }

    /// Writes the base weights as `model.safetensors` into `dir`.
    pub fn save_weights(&mut self, be: &B, dir: &Path) -> Result<()> {
        let t = self.base_tensors(be);
        weights::save_file(&dir.join("model.safetensors"), &t, weights::pt_metadata())
    }

    /// Zeroes every gradient.
    pub fn zero_grads(&mut self, be: &B) {
        for p in self.params_mut() {
            if let Some(g) = p.grad.as_mut() {
                be.set_zero(g);
            }
        }
    }

    /// Starts an optimizer step of several micro-batches: zeroes every
    /// gradient, and sums a tied head's share of the embedding's gradient
    /// apart until [`Llama::end_step`].
    pub fn begin_step(&mut self, be: &B) {
        self.zero_grads(be);
        self.tied_head_grad = None;
        self.in_step = true;
    }

    /// Ends the micro-batches of a step: every gradient is complete.
    pub fn end_step(&mut self, be: &B) {
        if let (Some(head), Some(g)) = (self.tied_head_grad.take(), self.embed.grad.as_mut()) {
            be.axpy(g, 1.0, &head);
        }
        self.in_step = false;
    }

    fn head(&self) -> &Param<B> {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Final hidden states `[rows, hidden]` (after the last norm), for
    /// inference; `seed` turns LoRA dropout on as in a training step.
    pub fn forward(&self, be: &B, batch: &Batch, seed: Option<u64>) -> B::Buf {
        self.run(be, batch, seed, Keep::Nothing).0
    }

    /// Final hidden states and the tape for [`Llama::backward_from_hidden`].
    pub fn forward_train(&self, be: &B, batch: &Batch, pass: TrainPass) -> (B::Buf, Tape<B>) {
        let keep = if pass.checkpoint {
            Keep::LayerInputs
        } else {
            Keep::All
        };
        self.run(be, batch, Some(pass.seed), keep)
    }

    fn run(&self, be: &B, batch: &Batch, seed: Option<u64>, keep: Keep) -> (B::Buf, Tape<B>) {
        let mut x = be.embedding(&self.embed.value, &batch.ids, self.cfg.hidden_size);
        let step = Step {
            batch,
            offset: 0,
            len: batch.seq,
            positions: batch.positions(0, batch.seq),
            rows: batch.seq_rows(0, batch.seq),
            seed,
        };
        let mut kept = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            let (out, saved) = self.block(be, layer, l, x, &step, None);
            match keep {
                Keep::All => kept.push(Kept::All(Box::new(saved))),
                Keep::LayerInputs => kept.push(Kept::Input(saved.x)),
                Keep::Nothing => {}
            }
            x = out;
        }
        let (h, inv) = be.rms_norm(
            &x,
            &self.norm.value,
            self.cfg.hidden_size,
            self.cfg.rms_norm_eps,
        );
        let tape = Tape {
            layers: kept,
            final_x: x,
            final_inv: inv,
            rows: step.rows,
            seed,
        };
        (h, tape)
    }

    /// One block. Returns its output and its activations (which inference
    /// simply drops).
    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        be: &B,
        layer: &Layer<B>,
        l: usize,
        x: B::Buf,
        step: &Step<'_>,
        cache: Option<(&mut B::Buf, &mut B::Buf, usize)>,
    ) -> (B::Buf, Saved<B>) {
        let c = &self.cfg;
        let (d, rows) = (c.hidden_size, &step.rows);
        let seed = |site| site_seed(step.seed, l, site);
        let (h1, inv1) = be.rms_norm(&x, &layer.input_norm.value, d, c.rms_norm_eps);
        let (mut q, xa_q) = layer.q.forward(be, &h1, rows, seed(0));
        let (mut k, xa_k) = layer.k.forward(be, &h1, rows, seed(1));
        let (v, xa_v) = layer.v.forward(be, &h1, rows, seed(2));
        be.rope(&mut q, &step.positions, c.num_heads, &self.inv_freq, false);
        be.rope(
            &mut k,
            &step.positions,
            c.num_kv_heads,
            &self.inv_freq,
            false,
        );
        let (attn, lse) = match cache {
            None => {
                let shape = step.causal_shape(c);
                be.attention(&q, &k, &v, shape, &step.batch.pad)
            }
            Some((kc, vc, cap)) => {
                let copy = RowCopy {
                    count: step.batch.batch,
                    rows: step.len,
                    width: c.num_kv_heads * c.head_dim,
                    src_block: step.len,
                    src_row: 0,
                    dst_block: cap,
                    dst_row: step.offset,
                };
                be.copy_rows(&k, kc, copy);
                be.copy_rows(&v, vc, copy);
                let shape = AttnShape {
                    batch: step.batch.batch,
                    q_len: step.len,
                    kv_len: step.offset + step.len,
                    kv_cap: cap,
                    q_offset: step.offset,
                    heads: c.num_heads,
                    kv_heads: c.num_kv_heads,
                    head_dim: c.head_dim,
                };
                be.attention(&q, kc, vc, shape, &step.batch.pad)
            }
        };
        let (o, xa_o) = layer.o.forward(be, &attn, rows, seed(3));
        let mut x2 = be.duplicate(&x);
        be.axpy(&mut x2, 1.0, &o);
        let (h2, inv2) = be.rms_norm(&x2, &layer.post_norm.value, d, c.rms_norm_eps);
        let (gate, xa_g) = layer.gate.forward(be, &h2, rows, seed(4));
        let (up, xa_u) = layer.up.forward(be, &h2, rows, seed(5));
        let act = be.swiglu(&gate, &up);
        let (down, xa_d) = layer.down.forward(be, &act, rows, seed(6));
        let mut out = be.duplicate(&x2);
        be.axpy(&mut out, 1.0, &down);
        let saved = Saved {
            x,
            h1,
            inv1,
            q,
            k,
            v,
            attn,
            lse,
            x2,
            h2,
            inv2,
            gate,
            up,
            act,
            xa: [xa_q, xa_k, xa_v, xa_o, xa_g, xa_u, xa_d],
        };
        (out, saved)
    }

    /// The backward pass of [`Llama::forward`] from `dh`, the gradient of
    /// the final hidden states. Accumulates into every trainable gradient.
    pub fn backward_from_hidden(&mut self, be: &B, batch: &Batch, tape: Tape<B>, dh: &B::Buf) {
        let c = self.cfg.clone();
        let d = c.hidden_size;
        let mut dx = be.rms_norm_backward(
            dh,
            &tape.final_x,
            &self.norm.value,
            &tape.final_inv,
            d,
            self.norm.grad.as_mut(),
        );
        let step = Step {
            batch,
            offset: 0,
            len: batch.seq,
            positions: batch.positions(0, batch.seq),
            rows: tape.rows,
            seed: tape.seed,
        };
        for (l, kept) in tape.layers.into_iter().enumerate().rev() {
            let saved = match kept {
                Kept::All(s) => *s,
                Kept::Input(x) => self.block(be, &self.layers[l], l, x, &step, None).1,
            };
            dx = self.block_backward(be, l, saved, dx, &step);
        }
        if let Some(g) = self.embed.grad.as_mut() {
            be.embedding_backward(&dx, &batch.ids, d, g);
        }
    }

    fn block_backward(
        &mut self,
        be: &B,
        l: usize,
        s: Saved<B>,
        dy: B::Buf,
        step: &Step<'_>,
    ) -> B::Buf {
        let rows = &step.rows;
        let c = self.cfg.clone();
        let inv_freq = self.inv_freq.clone();
        let seed = |site| site_seed(step.seed, l, site);
        let layer = &mut self.layers[l];
        let [xa_q, xa_k, xa_v, xa_o, xa_g, xa_u, xa_d] = &s.xa;
        // Each gradient is dropped as soon as it has been used, so the
        // block's working set is its widest phase (the MLP's: three
        // `[rows, intermediate]` and three `[rows, hidden]`), as the memory
        // planner counts it, not the sum of all phases.
        let dh2 = {
            let d_act = layer
                .down
                .backward(be, &s.act, xa_d.as_ref(), &dy, rows, seed(6));
            let (dg, du) = be.swiglu_backward(&s.gate, &s.up, &d_act);
            drop(d_act);
            let mut dh2 = layer
                .gate
                .backward(be, &s.h2, xa_g.as_ref(), &dg, rows, seed(4));
            drop(dg);
            let dh2_up = layer
                .up
                .backward(be, &s.h2, xa_u.as_ref(), &du, rows, seed(5));
            drop(du);
            be.axpy(&mut dh2, 1.0, &dh2_up);
            dh2
        };
        let mut dx2 = be.rms_norm_backward(
            &dh2,
            &s.x2,
            &layer.post_norm.value,
            &s.inv2,
            c.hidden_size,
            layer.post_norm.grad.as_mut(),
        );
        drop(dh2);
        be.axpy(&mut dx2, 1.0, &dy);
        drop(dy);
        let (mut dq, mut dk, dv) = {
            let dattn = layer
                .o
                .backward(be, &s.attn, xa_o.as_ref(), &dx2, rows, seed(3));
            let shape = step.causal_shape(&c);
            be.attention_backward(
                &s.q,
                &s.k,
                &s.v,
                &s.attn,
                &s.lse,
                &dattn,
                shape,
                &step.batch.pad,
            )
        };
        be.rope(&mut dq, &step.positions, c.num_heads, &inv_freq, true);
        be.rope(&mut dk, &step.positions, c.num_kv_heads, &inv_freq, true);
        let mut dh1 = layer
            .q
            .backward(be, &s.h1, xa_q.as_ref(), &dq, rows, seed(0));
        drop(dq);
        let dh1_k = layer
            .k
            .backward(be, &s.h1, xa_k.as_ref(), &dk, rows, seed(1));
        drop(dk);
        be.axpy(&mut dh1, 1.0, &dh1_k);
        drop(dh1_k);
        let dh1_v = layer
            .v
            .backward(be, &s.h1, xa_v.as_ref(), &dv, rows, seed(2));
        drop(dv);
        be.axpy(&mut dh1, 1.0, &dh1_v);
        drop(dh1_v);
        let mut dx = be.rms_norm_backward(
            &dh1,
            &s.x,
            &layer.input_norm.value,
            &s.inv1,
            c.hidden_size,
            layer.input_norm.grad.as_mut(),
        );
        be.axpy(&mut dx, 1.0, &dx2);
        dx
    }

    /// Logits `[rows, vocab]` of the given hidden states.
    pub fn logits_of(&self, be: &B, h: &B::Buf, rows: usize) -> B::Buf {
        let c = &self.cfg;
        let mut out = be.zeros(rows * c.vocab_size);
        be.matmul(
            h,
            &self.head().value,
            &mut out,
            Gemm::linear(rows, c.vocab_size, c.hidden_size),
        );
        out
    }

    /// Logits of every position of the batch, on the host.
    pub fn logits(&self, be: &B, batch: &Batch) -> Vec<f32> {
        let h = self.forward(be, batch, None);
        be.download(&self.logits_of(be, &h, batch.rows()))
    }

    /// At each of `rows` of the batch: the log-probability of the token
    /// `targets[i]` and, when `entropy` is asked for, the entropy of the
    /// next-token distribution (empty otherwise). One forward, and the head
    /// only on those rows: an RL roll-out reads a few response tokens after
    /// a long prompt. Each row's numbers are the same bits as over the
    /// whole batch, since the head's product and softmax are per row.
    pub fn row_logp(
        &self,
        be: &B,
        batch: &Batch,
        rows: &[u32],
        targets: &[u32],
        entropy: bool,
    ) -> (Vec<f32>, Vec<f32>) {
        if rows.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let d = self.cfg.hidden_size;
        let h = self.forward(be, batch, None);
        let picked = be.gather_rows(&h, rows, d);
        let head = &self.head().value;
        let nll = be.token_nll(&picked, head, d, targets, &vec![1.0; rows.len()], None);
        let entropy = if entropy {
            be.token_entropy(&picked, head, d)
        } else {
            Vec::new()
        };
        (nll.into_iter().map(|x| -x).collect(), entropy)
    }

    /// Per-row `weights[r] * -log p(targets[r])` over the batch, without
    /// gradients; `seed` turns LoRA dropout on as in a training step.
    pub fn token_nll(
        &self,
        be: &B,
        batch: &Batch,
        targets: &[u32],
        weights: &[f32],
        seed: Option<u64>,
    ) -> Vec<f32> {
        let h = self.forward(be, batch, seed);
        be.token_nll(
            &h,
            &self.head().value,
            self.cfg.hidden_size,
            targets,
            weights,
            None,
        )
    }

    /// Forward and backward of `sum_r weights[r] * -log p(targets[r] |
    /// row r)`; returns each row's term of that sum. Gradients accumulate
    /// into trainable parameters, so micro-batches add up.
    pub fn loss_backward(
        &mut self,
        be: &B,
        batch: &Batch,
        targets: &[u32],
        weights: &[f32],
        pass: TrainPass,
    ) -> Vec<f32> {
        let (h, tape) = self.forward_train(be, batch, pass);
        let d = self.cfg.hidden_size;
        let mut dh = be.zeros(0);
        let segments = &tape.rows.segments;
        let (head, head_grad) = match self.lm_head.as_mut() {
            Some(head) => (&head.value, head.grad.as_mut()),
            None => {
                let embed = &mut self.embed;
                let grad = match (self.in_step, embed.grad.as_mut()) {
                    (true, Some(g)) => {
                        let len = be.len(g);
                        Some(self.tied_head_grad.get_or_insert_with(|| be.zeros(len)))
                    }
                    (_, g) => g,
                };
                (&embed.value, grad)
            }
        };
        let dw = head_grad.map(|dw| WeightGrad { dw, segments });
        let nll = be.token_nll(&h, head, d, targets, weights, Some((&mut dh, dw)));
        self.backward_from_hidden(be, batch, tape, &dh);
        nll
    }

    /// A fresh KV cache for `batch` sequences of up to `cap` tokens.
    pub fn new_cache(&self, be: &B, batch: usize, cap: usize) -> KvCache<B> {
        let seq_width = cap * self.cfg.num_kv_heads * self.cfg.head_dim;
        let n = batch * seq_width;
        KvCache {
            k: (0..self.cfg.num_layers).map(|_| be.zeros(n)).collect(),
            v: (0..self.cfg.num_layers).map(|_| be.zeros(n)).collect(),
            cap,
            len: 0,
            seq_width,
        }
    }

    /// Runs `len` new tokens per sequence (`ids` `[batch, len]`) through the
    /// model against the cache, appends their keys and values, and returns
    /// the final hidden state of each sequence's last new token,
    /// `[batch, hidden]`. `batch.pad` gives each sequence's left padding.
    pub fn decode(&self, be: &B, batch: &Batch, cache: &mut KvCache<B>) -> B::Buf {
        let (len, offset) = (batch.seq, cache.len);
        let mut x = be.embedding(&self.embed.value, &batch.ids, self.cfg.hidden_size);
        let step = Step {
            batch,
            offset,
            len,
            positions: batch.positions(offset, len),
            rows: batch.seq_rows(offset, len),
            seed: None,
        };
        for (l, layer) in self.layers.iter().enumerate() {
            let cached = Some((&mut cache.k[l], &mut cache.v[l], cache.cap));
            x = self.block(be, layer, l, x, &step, cached).0;
        }
        cache.len += len;
        let last: Vec<u32> = (0..batch.batch)
            .map(|b| (b * len + len - 1) as u32)
            .collect();
        let x = be.gather_rows(&x, &last, self.cfg.hidden_size);
        be.rms_norm(
            &x,
            &self.norm.value,
            self.cfg.hidden_size,
            self.cfg.rms_norm_eps,
        )
        .0
    }
}

/// Where a model's tensors come from: taken one at a time by name, checked
/// against the shape the model expects.
pub trait TensorSource {
    fn take(&mut self, name: &str, shape: &[usize], dir: &Path) -> Result<HostTensor>;
    /// The first dimension of `name`, if the source has it.
    fn rows(&self, name: &str) -> Option<usize>;
}

impl TensorSource for TensorMap {
    fn take(&mut self, name: &str, shape: &[usize], dir: &Path) -> Result<HostTensor> {
        weights::take(self, name, shape, dir)
    }

    fn rows(&self, name: &str) -> Option<usize> {
        self.get(name).and_then(|t| t.shape.first().copied())
    }
}

impl TensorSource for weights::DirTensors {
    fn take(&mut self, name: &str, shape: &[usize], dir: &Path) -> Result<HostTensor> {
        match self {
            weights::DirTensors::Map(map) => map.take(name, shape, dir),
            weights::DirTensors::Files(files) => {
                weights::has_shape(files.read(name, dir)?, name, shape)
            }
        }
    }

    fn rows(&self, name: &str) -> Option<usize> {
        match self {
            weights::DirTensors::Map(map) => map.rows(name),
            weights::DirTensors::Files(files) => files.shape(name)?.first().copied(),
        }
    }
}

/// Random weights drawn in [`Llama::tensor_shapes`] order from one stream,
/// as the model takes them (the same values as drawing them all first).
struct RandomTensors {
    rng: ChaCha8Rng,
    shapes: Vec<(String, Vec<usize>)>,
    next: usize,
}

impl TensorSource for RandomTensors {
    fn take(&mut self, name: &str, shape: &[usize], dir: &Path) -> Result<HostTensor> {
        let Some((expected, have)) = self.shapes.get(self.next) else {
            return Err(super::error::ModelError::MissingTensor {
                name: name.to_string(),
                dir: dir.to_path_buf(),
            });
        };
        assert_eq!(expected, name, "random weights are drawn in load order");
        assert_eq!(have, shape, "random weights have the config's shapes");
        self.next += 1;
        let n = shape.iter().product();
        let data = if name.ends_with("norm.weight") {
            vec![1.0; n]
        } else {
            normal(&mut self.rng, n, 0.02)
        };
        Ok(HostTensor::new(shape.to_vec(), data))
    }

    fn rows(&self, name: &str) -> Option<usize> {
        self.shapes
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, shape)| shape.first().copied())
    }
}

/// Takes checked tensors out of a source onto the device.
struct Loader<'a, B: Backend, T: TensorSource> {
    be: &'a B,
    t: &'a mut T,
    dir: &'a Path,
}

impl<B: Backend, T: TensorSource> Loader<'_, B, T> {
    fn param(&mut self, name: &str, shape: &[usize]) -> Result<Param<B>> {
        let host = self.t.take(name, shape, self.dir)?;
        Ok(Param::frozen(self.be, name, &host))
    }

    fn linear(&mut self, name: &str, shape: &[usize]) -> Result<Linear<B>> {
        self.param(name, shape).map(Linear::new)
    }
}

fn push_linear<'a, B: Backend>(out: &mut Vec<&'a mut Param<B>>, lin: &'a mut Linear<B>) {
    out.push(&mut lin.weight);
    if let Some(lora) = lin.lora.as_mut() {
        out.push(&mut lora.a);
        out.push(&mut lora.b);
    }
}

/// Normal samples by Box-Muller (`rand_distr` is not a dependency).
pub fn normal(rng: &mut ChaCha8Rng, n: usize, std: f32) -> Vec<f32> {
    use rand::Rng;
    (0..n)
        .map(|_| {
            let u1: f32 = rng.random_range(f32::EPSILON..1.0);
            let u2: f32 = rng.random();
            std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
        })
        .collect()
}
