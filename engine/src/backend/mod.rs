//! The Backend trait: the fixed set of ops a LLaMA forward/backward, LoRA,
//! AdamW, reward head, PPO and sampling need, over device buffers.
//!
//! This is deliberately not a tensor library. Every op is one fused kernel on
//! a GPU (or one rayon loop on the CPU), with shapes passed explicitly and all
//! buffers dense and row-major. Buffers hold `f32` values as far as the model
//! code is concerned, and carry a storage [`Dtype`]: frozen weights are
//! stored in the backend's [`Backend::weight_dtype`] (bf16 under mixed
//! precision), trainable parameters, gradients, optimizer state and
//! activations in f32. The CPU backend in [`cpu`] is the reference: every op
//! there is written plainly in f32, and a second backend must agree with it
//! on random inputs (see the tests in `cpu/tests.rs`). [`CpuBf16`] is the
//! same CPU code with bf16 storage and rounding where the CUDA kernels
//! round, so mixed precision runs and is tested on any machine.
//!
//! Conventions shared by all ops:
//! - Token activations are `[rows, features]` with `rows = batch * seq`,
//!   batch-major. Attention inputs are `[batch, seq, heads, head_dim]`, which
//!   is what a projection `[rows, heads * head_dim]` already is.
//! - Linear weights are in the HF layout `[out, in]`, so a projection is
//!   `y = x W^T`.
//! - Integer inputs (token ids, positions, pad offsets) are small host slices;
//!   a device backend uploads them per call.
//! - Ops that compute parameter gradients *accumulate* into the gradient
//!   buffer, so micro-batches and tied weights sum naturally.

use std::fmt::Debug;
use std::ops::Range;

pub mod cpu;
pub mod cuda;
mod device;
mod dtype;
pub mod meter;

pub use cpu::{Cpu, CpuBf16};
pub use cuda::{CudaBackend, CudaError};
pub use device::{Device, UnknownDevice};
pub use dtype::{Dtype, round_all, round_bf16};

/// Work that runs on whichever backend a [`Device`] names. Model code is
/// generic over [`Backend`], and a closure cannot be generic, so a command
/// or stage puts its work in a type implementing this and calls
/// [`with_backend`].
pub trait OnBackend {
    type Output;
    fn run<B: Backend>(self, backend: &B) -> Self::Output;
}

/// Open the backend for `device` storing frozen weights as `dtype`, and run
/// `work` on it. `cuda:N` on a machine without a driver or GPU is an error
/// with a hint, never a panic.
pub fn with_backend<W: OnBackend>(
    device: Device,
    dtype: Dtype,
    work: W,
) -> Result<W::Output, CudaError> {
    if device == Device::Cpu {
        cpu::warm_up();
    }
    match (device, dtype) {
        (Device::Cpu, Dtype::F32) => Ok(work.run(&Cpu)),
        (Device::Cpu, Dtype::Bf16) => Ok(work.run(&CpuBf16)),
        (Device::Cuda(ordinal), _) => Ok(work.run(&CudaBackend::open(ordinal, dtype)?)),
    }
}

/// `c = alpha * op(a) @ op(b) + beta * c` for row-major `a`, `b`, `c`, with
/// `op(x)` the transpose when the flag is set. `op(a)` is `[m, k]`, `op(b)` is
/// `[k, n]`, `c` is `[m, n]`. With `beta == 0` the old contents of `c` are
/// ignored (even NaN), as in BLAS.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
    pub beta: f32,
}

impl Gemm {
    /// `y[m, n] = x[m, k] W^T` with `W` stored `[n, k]`: a linear layer.
    pub fn linear(m: usize, n: usize, k: usize) -> Self {
        Gemm {
            m,
            n,
            k,
            trans_a: false,
            trans_b: true,
            alpha: 1.0,
            beta: 0.0,
        }
    }

    /// `y[m, n] = x[m, k] W` with `W` stored `[k, n]`: the input gradient
    /// of a linear layer (`dx = dy W`).
    pub fn plain(m: usize, n: usize, k: usize) -> Self {
        Gemm {
            trans_b: false,
            ..Self::linear(m, n, k)
        }
    }

    /// `dW[m, n] += dy[k, m]^T x[k, n]`: the weight gradient of a linear
    /// layer, accumulated.
    pub fn weight_grad(m: usize, n: usize, k: usize) -> Self {
        Gemm {
            m,
            n,
            k,
            trans_a: true,
            trans_b: false,
            alpha: 1.0,
            beta: 1.0,
        }
    }

    /// The same product with a different scale on the result.
    pub fn scaled(self, alpha: f32) -> Self {
        Gemm { alpha, ..self }
    }

    /// The same product, added to what `c` holds.
    pub fn accumulate(self) -> Self {
        Gemm { beta: 1.0, ..self }
    }
}

/// splitmix64's output function: the 64-bit mix behind the dropout masks
/// (the CUDA kernels' `splitmix64`, bit for bit).
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A weight gradient to add into, with the segments of rows it sums one at
/// a time (see [`Backend::weight_grad`]).
#[derive(Debug)]
pub struct WeightGrad<'a, Buf> {
    pub dw: &'a mut Buf,
    pub segments: &'a [Range<usize>],
}

/// Where [`Backend::token_nll`] writes gradients: `dh`, and the head's
/// weight gradient when the head trains.
pub type NllGrads<'a, Buf> = (&'a mut Buf, Option<WeightGrad<'a, Buf>>);

/// Shapes of one causal attention call, for training (`q_len == kv_len`,
/// `q_offset == 0`) and for decoding against a KV cache (`q_len` new tokens
/// at absolute positions `q_offset..q_offset + q_len`).
///
/// `q` and the output are `[batch, q_len, heads, head_dim]`; `k` and `v` are
/// `[batch, kv_cap, kv_heads, head_dim]` of which the first `kv_len`
/// positions are used. `heads` must be a multiple of `kv_heads` (GQA: query
/// head `h` reads key/value head `h / (heads / kv_heads)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    pub batch: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub kv_cap: usize,
    pub q_offset: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl AttnShape {
    /// The square causal shape of a training or prefill batch.
    pub fn causal(
        batch: usize,
        seq: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Self {
        AttnShape {
            batch,
            q_len: seq,
            kv_len: seq,
            kv_cap: seq,
            q_offset: 0,
            heads,
            kv_heads,
            head_dim,
        }
    }

    /// Whether the CUDA flash kernels take this call: square causal
    /// batches (left-padded or not: the kernels mask each sequence's
    /// padding), head dims 64 or 128. They read bf16 inputs and write bf16
    /// outputs; every other call (decoding against a KV cache, other head
    /// dims) runs the f32 kernel, which rounds nothing.
    pub fn is_flash(&self) -> bool {
        self.q_offset == 0
            && self.q_len == self.kv_len
            && self.kv_len == self.kv_cap
            && matches!(self.head_dim, 64 | 128)
    }
}

/// Hyper-parameters of one AdamW step (decoupled weight decay, bias
/// correction), as torch.optim.AdamW defines them. `step` counts from 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub step: u32,
}

/// How the next token is drawn from a row of logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0 means greedy (argmax); otherwise logits are divided by it.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0: no limit).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose mass reaches
    /// `top_p` (1.0: no limit).
    pub top_p: f32,
}

impl Sampling {
    pub const GREEDY: Sampling = Sampling {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
    };
}

/// Bytes a backend holds on its device, outside the host heap that
/// [`meter`] counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceBytes {
    pub current: u64,
    /// The most held at once since the last [`Backend::reset_device_peak`].
    pub peak: u64,
}

/// The bytes `be` holds now: its device's where it has them, else the host
/// heap's (the CPU backend's buffers are heap memory).
pub fn held_bytes<B: Backend>(be: &B) -> u64 {
    be.device_bytes().map_or_else(meter::current, |d| d.current)
}

/// The most bytes `be` held at once since [`reset_held_peak`].
pub fn held_peak<B: Backend>(be: &B) -> u64 {
    be.device_bytes().map_or_else(meter::peak, |d| d.peak)
}

/// Starts a new high-water mark of what `be` holds at what it holds now.
pub fn reset_held_peak<B: Backend>(be: &B) {
    match be.device_bytes() {
        Some(_) => be.reset_device_peak(),
        None => meter::reset_peak(),
    }
}

/// The ops. See the module docs for layouts; each method documents its own
/// shapes. Methods never fail on valid shapes: shape errors are programming
/// errors and may panic (the model code checks user-facing shapes first).
pub trait Backend: Send + Sync + Debug {
    /// A dense buffer of values on the device, stored as one [`Dtype`].
    /// Ops take f32 buffers; a bf16 one (a frozen weight) is accepted where
    /// an op reads a weight: `matmul`'s `b` and `c` (a bf16 `c` is rounded
    /// on store), `embedding`'s table, `rms_norm`'s and `token_nll`'s `w`,
    /// and by `download`, `duplicate`, `len` and `to_dtype`.
    type Buf: Send + Sync + Debug;

    fn device(&self) -> Device;

    // ---- memory ----------------------------------------------------------

    /// What the backend holds on its device (a GPU's memory), for the
    /// memory the planner promises to be checked against what it holds;
    /// `None` where every buffer is host memory, which [`meter`] counts.
    fn device_bytes(&self) -> Option<DeviceBytes> {
        None
    }
    /// Starts a new high-water mark of [`Backend::device_bytes`] at what is
    /// held now.
    fn reset_device_peak(&self) {}

    /// The format frozen weights are stored in.
    fn weight_dtype(&self) -> Dtype;
    /// The format `buf` is stored in.
    fn dtype(&self, buf: &Self::Buf) -> Dtype;
    /// `buf` stored as `dtype`: narrowing rounds to nearest even, widening
    /// is exact, and a buffer already in `dtype` comes back as it is. A
    /// backend converts only to f32 and its `weight_dtype`.
    fn to_dtype(&self, buf: Self::Buf, dtype: Dtype) -> Self::Buf;
    /// A frozen weight: `data` stored as [`Backend::weight_dtype`].
    fn upload_weight(&self, data: &[f32]) -> Self::Buf {
        self.to_dtype(self.upload(data), self.weight_dtype())
    }

    fn upload(&self, data: &[f32]) -> Self::Buf;
    fn download(&self, buf: &Self::Buf) -> Vec<f32>;
    fn zeros(&self, len: usize) -> Self::Buf;
    fn len(&self, buf: &Self::Buf) -> usize;
    fn set_zero(&self, buf: &mut Self::Buf);
    fn duplicate(&self, buf: &Self::Buf) -> Self::Buf;
    /// Strided row copy, see [`RowCopy`]. Writes new keys and values into a
    /// KV cache: one block per sequence, `rows` new tokens each.
    fn copy_rows(&self, src: &Self::Buf, dst: &mut Self::Buf, copy: RowCopy);

    // ---- dense algebra ---------------------------------------------------

    /// See [`Gemm`].
    fn matmul(&self, a: &Self::Buf, b: &Self::Buf, c: &mut Self::Buf, g: Gemm);
    /// The weight gradient `dw[m, n] += alpha * dy[rows, m]^T x[rows, n]`
    /// (`g` a [`Gemm::weight_grad`], `k` the rows), summed one segment of
    /// rows at a time, in order. A segment is one sequence's real tokens,
    /// so a sequence adds the same bits whichever sequences share its
    /// micro-batch; rows outside every segment must have a zero `dy`. The
    /// default is one product over all rows: a GPU's sums are not the same
    /// bits across batch shapes anyway.
    fn weight_grad(
        &self,
        dy: &Self::Buf,
        x: &Self::Buf,
        dw: &mut Self::Buf,
        g: Gemm,
        segments: &[Range<usize>],
    ) {
        let _ = segments;
        self.matmul(dy, x, dw, g);
    }
    /// `dst += alpha * src` (residual adds, gradient accumulation).
    fn axpy(&self, dst: &mut Self::Buf, alpha: f32, src: &Self::Buf);
    /// `buf *= alpha` (gradient clipping, averaging).
    fn scale(&self, buf: &mut Self::Buf, alpha: f32);
    /// The sum of squares of all values, accumulated in f64 (global
    /// gradient norm: the caller sums over buffers and takes the root).
    fn sum_squares(&self, buf: &Self::Buf) -> f64;

    // ---- LLaMA layers ----------------------------------------------------

    /// `out[i] = table[ids[i]]`, rows of `dim` values.
    fn embedding(&self, table: &Self::Buf, ids: &[u32], dim: usize) -> Self::Buf;
    /// `dtable[ids[i]] += dout[i]`.
    fn embedding_backward(&self, dout: &Self::Buf, ids: &[u32], dim: usize, dtable: &mut Self::Buf);

    /// RMSNorm over rows of `dim`: `y = x / sqrt(mean(x^2) + eps) * w`.
    /// Returns `y` and the per-row `1 / rms` for the backward pass.
    fn rms_norm(
        &self,
        x: &Self::Buf,
        w: &Self::Buf,
        dim: usize,
        eps: f32,
    ) -> (Self::Buf, Self::Buf);
    /// Returns `dx`; adds the weight gradient into `dw` when given.
    fn rms_norm_backward(
        &self,
        dy: &Self::Buf,
        x: &Self::Buf,
        w: &Self::Buf,
        inv_rms: &Self::Buf,
        dim: usize,
        dw: Option<&mut Self::Buf>,
    ) -> Self::Buf;

    /// Rotary embedding in place, HF rotate-half layout: within each head,
    /// element `i < d/2` pairs with `i + d/2`. `x` is `[rows, heads,
    /// head_dim]`, `positions[row]` the absolute position of each row, and
    /// `inv_freq` the `head_dim / 2` frequencies (llama3 scaling already
    /// applied, see `model::rope`). The angle is `position * inv_freq` in
    /// f32. `inverse` rotates the other way: the backward pass.
    fn rope(
        &self,
        x: &mut Self::Buf,
        positions: &[u32],
        heads: usize,
        inv_freq: &[f32],
        inverse: bool,
    );

    /// Causal multi-head attention with GQA, scale `1/sqrt(head_dim)`.
    /// Query `i` of batch `b` sees key `j` iff `kv_start[b] <= j <= q_offset
    /// + i`; `kv_start` masks left padding. Returns the output (zero for a
    /// query that sees no key) and the per-(batch, head, query) logsumexp of
    /// the scaled scores, `[batch, heads, q_len]`, for the backward pass.
    fn attention(
        &self,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        shape: AttnShape,
        kv_start: &[u32],
    ) -> (Self::Buf, Self::Buf);
    /// Gradients `(dq, dk, dv)` of [`Backend::attention`] from `dout`, with
    /// the probabilities recomputed from the saved logsumexp (flash style).
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        out: &Self::Buf,
        lse: &Self::Buf,
        dout: &Self::Buf,
        shape: AttnShape,
        kv_start: &[u32],
    ) -> (Self::Buf, Self::Buf, Self::Buf);

    /// `silu(gate) * up`, elementwise.
    fn swiglu(&self, gate: &Self::Buf, up: &Self::Buf) -> Self::Buf;
    /// `(dgate, dup)` of [`Backend::swiglu`].
    fn swiglu_backward(
        &self,
        gate: &Self::Buf,
        up: &Self::Buf,
        dh: &Self::Buf,
    ) -> (Self::Buf, Self::Buf);

    /// Inverted dropout with a counter-based mask over `row_keys.len()` rows:
    /// element `c` of row `r` is kept iff `uniform(seed ^ row_keys[r], c) >=
    /// p`, kept values are scaled by `1/(1-p)`. The mask depends only on the
    /// seed, the row's key and the column, so the backward pass is this same
    /// op on the gradient, and a row keyed by its sequence and position
    /// draws the same mask in any batch. The uniform of `(s, c)` is
    /// `splitmix64(s ^ c) >> 40` divided by `2^24`.
    fn dropout(&self, x: &Self::Buf, p: f32, seed: u64, row_keys: &[u64]) -> Self::Buf;

    /// Fused LM head + cross-entropy, chunked over rows so the `[rows,
    /// vocab]` logits never exist at once. `h` is `[rows, dim]`, `w` the
    /// head `[vocab, dim]`. Returns per-row `-log softmax(h w^T)[target]`,
    /// times `weights[row]` (0 for masked rows, which cost nothing). With
    /// `grads`, writes `dh` (`[rows, dim]`, overwritten) and adds into `dw`
    /// the gradient of `sum(returned values)`, one segment at a time as
    /// [`Backend::weight_grad`] sums it. A PPO step passes per-token
    /// coefficients as weights; an SFT step passes `mask / count`.
    fn token_nll(
        &self,
        h: &Self::Buf,
        w: &Self::Buf,
        dim: usize,
        targets: &[u32],
        weights: &[f32],
        grads: Option<NllGrads<'_, Self::Buf>>,
    ) -> Vec<f32>;

    /// The entropy of `softmax(h w^T)` for every row of `h` (`[rows, dim]`,
    /// `w` the head `[vocab, dim]`), chunked as [`Backend::token_nll`] so
    /// that only one chunk of logits exists at a time and none leaves the
    /// device. PPO's entropy metric.
    fn token_entropy(&self, h: &Self::Buf, w: &Self::Buf, dim: usize) -> Vec<f32>;

    /// Rows `idx[i]` of `x` (rows of `width`), for the reward head's last
    /// token and the last position of each sequence when decoding.
    fn gather_rows(&self, x: &Self::Buf, idx: &[u32], width: usize) -> Self::Buf;
    /// `dx[idx[i]] += dy[i]`, the backward of [`Backend::gather_rows`].
    fn scatter_add_rows(&self, dy: &Self::Buf, idx: &[u32], width: usize, dx: &mut Self::Buf);

    // ---- optimisation and sampling ---------------------------------------

    /// One fused AdamW update of `param` from `grad`, with moment buffers
    /// `m` and `v`, exactly torch.optim.AdamW's arithmetic.
    fn adamw(
        &self,
        param: &mut Self::Buf,
        grad: &Self::Buf,
        m: &mut Self::Buf,
        v: &mut Self::Buf,
        h: AdamWStep,
    );

    /// Draw one token per row of `logits` (`[rows, vocab]`). `uniforms[row]`
    /// in `[0, 1)` comes from the caller's seeded generator, so every
    /// backend draws the same tokens: after temperature, top-k and top-p
    /// filtering, the token is the first whose cumulative probability (in
    /// descending probability order, ties by lower id) exceeds the uniform.
    fn sample(&self, logits: &Self::Buf, vocab: usize, how: Sampling, uniforms: &[f32])
    -> Vec<u32>;
}

/// Arguments of [`Backend::copy_rows`]: for each block `c < count`, copy
/// `rows` rows of `width` values from `src` row `c * src_block + src_row`
/// to `dst` row `c * dst_block + dst_row`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowCopy {
    pub count: usize,
    pub rows: usize,
    pub width: usize,
    pub src_block: usize,
    pub src_row: usize,
    pub dst_block: usize,
    pub dst_row: usize,
}
