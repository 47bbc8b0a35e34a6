//! Launch wrappers for flash attention (training, causal, GQA) and decode
//! attention over a KV cache. Layouts are documented in kernels/cuda/
//! attention.cu and decode.cu; in short q/o are [B, T, Hq, D], k/v are
//! [B, T, Hkv, D], lse is [B, Hq, T] f32, and `kv_start` ([B] i32) is each
//! sequence's left padding: its first `kv_start[b]` positions are neither
//! attended nor attend (their output and gradients are 0, their lse -inf).

use cudarc::driver::{DevicePtr, DevicePtrMut, PushKernelArg};
use half::bf16;

use super::check::{grid_yz, int, len_is, need};
use super::{CudaDevice, CudaError};

/// Threads per attention block and rows per tile, as in attention.cu.
const ATT_THREADS: u32 = 128;
const ATT_TILE: usize = 32;
/// As in decode.cu.
const DEC_THREADS: u32 = 128;
const DEC_MAX_GROUP: usize = 8;

/// Sizes of one causal self-attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub seq: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    /// 64 or 128.
    pub head_dim: usize,
}

impl AttentionShape {
    /// Elements of q, o, dq, d_o.
    pub fn q_len(&self) -> usize {
        self.batch * self.seq * self.q_heads * self.head_dim
    }

    /// Elements of k, v, dk, dv.
    pub fn kv_len(&self) -> usize {
        self.batch * self.seq * self.kv_heads * self.head_dim
    }

    /// Elements of lse (and of backward's delta).
    pub fn lse_len(&self) -> usize {
        self.batch * self.q_heads * self.seq
    }

    /// 1 / sqrt(head_dim), the LLaMA softmax scale.
    pub fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }

    fn check(&self, kernel: &'static str) -> Result<(u32, u32, u32), CudaError> {
        need(kernel, matches!(self.head_dim, 64 | 128), || {
            format!("head_dim {} is not 64 or 128", self.head_dim)
        })?;
        need(
            kernel,
            self.kv_heads > 0 && self.q_heads.is_multiple_of(self.kv_heads),
            || {
                format!(
                    "{} query heads are not a multiple of {} kv heads",
                    self.q_heads, self.kv_heads
                )
            },
        )?;
        need(kernel, self.seq > 0, || "seq is 0".into())?;
        int(kernel, "q elements", self.q_len())?;
        let tiles = super::check::grid(kernel, self.seq.div_ceil(ATT_TILE), u32::MAX)?;
        let heads = grid_yz(kernel, "q_heads", self.q_heads)?;
        let batch = grid_yz(kernel, "batch", self.batch)?;
        Ok((tiles, heads, batch))
    }
}

/// Sizes of one decode step: one new query token per sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeShape {
    pub batch: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    /// 64 or 128.
    pub head_dim: usize,
    /// Positions the cache buffers hold per sequence: k/v are
    /// [batch, capacity, kv_heads, head_dim].
    pub capacity: usize,
    /// An upper bound on every entry of `lengths`; keys past it are not read.
    pub max_len: usize,
}

/// How decode splits the cache: (number of splits, keys per split). Enough
/// splits for about two blocks per multiprocessor, each split at least 64 keys
/// long so the combine pass stays cheap; the splits cover 0..max_len exactly.
fn decode_splits(shape: DecodeShape, sm_count: usize) -> (usize, usize) {
    let blocks_per_split = (shape.batch * shape.kv_heads).max(1);
    let want = (2 * sm_count).div_ceil(blocks_per_split);
    let splits = want.clamp(1, shape.max_len.div_ceil(64).max(1));
    let split_len = shape.max_len.div_ceil(splits);
    (shape.max_len.div_ceil(split_len), split_len)
}

impl CudaDevice {
    /// Causal flash attention forward: o = softmax(q k^T * scale) v per head
    /// over the keys past each sequence's padding, and the per-row
    /// logsumexp that backward needs.
    #[allow(clippy::too_many_arguments)]
    pub fn flash_attn_fwd(
        &self,
        shape: AttentionShape,
        q: &impl DevicePtr<bf16>,
        k: &impl DevicePtr<bf16>,
        v: &impl DevicePtr<bf16>,
        kv_start: &impl DevicePtr<i32>,
        o: &mut impl DevicePtrMut<bf16>,
        lse: &mut impl DevicePtrMut<f32>,
    ) -> Result<(), CudaError> {
        let kernel = if shape.head_dim == 64 {
            "flash_attn_fwd_d64"
        } else {
            "flash_attn_fwd_d128"
        };
        let grid = shape.check(kernel)?;
        len_is(kernel, "q", q.len(), shape.q_len())?;
        len_is(kernel, "k", k.len(), shape.kv_len())?;
        len_is(kernel, "v", v.len(), shape.kv_len())?;
        len_is(kernel, "o", o.len(), shape.q_len())?;
        len_is(kernel, "lse", lse.len(), shape.lse_len())?;
        len_is(kernel, "kv_start", kv_start.len(), shape.batch)?;
        let (t, hq, hkv) = (
            int(kernel, "seq", shape.seq)?,
            int(kernel, "q_heads", shape.q_heads)?,
            int(kernel, "kv_heads", shape.kv_heads)?,
        );
        let scale = shape.scale();
        let s = &self.stream;
        let (q, _q) = q.device_ptr(s);
        let (k, _k) = k.device_ptr(s);
        let (v, _v) = v.device_ptr(s);
        let (starts, _starts) = kv_start.device_ptr(s);
        let (o, _o) = o.device_ptr_mut(s);
        let (lse, _lse) = lse.device_ptr_mut(s);
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&q).arg(&k).arg(&v).arg(&o).arg(&lse).arg(&starts);
        args.arg(&t).arg(&hq).arg(&hkv).arg(&scale);
        self.launch(kernel, args, grid, ATT_THREADS)
    }

    /// Causal flash attention backward from the forward's o and lse: writes
    /// dq, dk and dv (for GQA, dk and dv sum over each kv head's query group).
    #[allow(clippy::too_many_arguments)]
    pub fn flash_attn_bwd(
        &self,
        shape: AttentionShape,
        q: &impl DevicePtr<bf16>,
        k: &impl DevicePtr<bf16>,
        v: &impl DevicePtr<bf16>,
        o: &impl DevicePtr<bf16>,
        d_o: &impl DevicePtr<bf16>,
        lse: &impl DevicePtr<f32>,
        kv_start: &impl DevicePtr<i32>,
        dq: &mut impl DevicePtrMut<bf16>,
        dk: &mut impl DevicePtrMut<bf16>,
        dv: &mut impl DevicePtrMut<bf16>,
    ) -> Result<(), CudaError> {
        let (dkdv, dqk) = if shape.head_dim == 64 {
            ("flash_attn_bwd_dkdv_d64", "flash_attn_bwd_dq_d64")
        } else {
            ("flash_attn_bwd_dkdv_d128", "flash_attn_bwd_dq_d128")
        };
        let (tiles, heads, batch) = shape.check(dqk)?;
        for (name, len, want) in [
            ("q", q.len(), shape.q_len()),
            ("k", k.len(), shape.kv_len()),
            ("v", v.len(), shape.kv_len()),
            ("o", o.len(), shape.q_len()),
            ("d_o", d_o.len(), shape.q_len()),
            ("lse", lse.len(), shape.lse_len()),
            ("dq", dq.len(), shape.q_len()),
            ("dk", dk.len(), shape.kv_len()),
            ("dv", dv.len(), shape.kv_len()),
        ] {
            len_is(dqk, name, len, want)?;
        }
        len_is(dqk, "kv_start", kv_start.len(), shape.batch)?;
        let kernel = "flash_attn_bwd_delta";
        let (b, t, hq, hkv, d) = (
            int(kernel, "batch", shape.batch)?,
            int(kernel, "seq", shape.seq)?,
            int(kernel, "q_heads", shape.q_heads)?,
            int(kernel, "kv_heads", shape.kv_heads)?,
            int(kernel, "head_dim", shape.head_dim)?,
        );
        let scale = shape.scale();
        let mut delta = self.scratch::<f32>(shape.lse_len())?;
        let s = &self.stream;
        let (q, _q) = q.device_ptr(s);
        let (k, _k) = k.device_ptr(s);
        let (v, _v) = v.device_ptr(s);
        let (o, _o) = o.device_ptr(s);
        let (d_o, _do) = d_o.device_ptr(s);
        let (lse, _lse) = lse.device_ptr(s);
        let (starts, _starts) = kv_start.device_ptr(s);
        let (dq, _dq) = dq.device_ptr_mut(s);
        let (dk, _dk) = dk.device_ptr_mut(s);
        let (dv, _dv) = dv.device_ptr_mut(s);
        let (delta_ptr, _delta) = delta.device_ptr_mut(s);

        let rows = shape.lse_len();
        let warps = (ATT_THREADS / 32) as usize;
        let blocks = super::check::grid(kernel, rows.div_ceil(warps), u32::MAX)?;
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&o).arg(&d_o).arg(&delta_ptr);
        args.arg(&b).arg(&t).arg(&hq).arg(&d);
        self.launch(kernel, args, (blocks, 1, 1), ATT_THREADS)?;

        let kv_heads = grid_yz(dkdv, "kv_heads", shape.kv_heads)?;
        let mut args = s.launch_builder(self.function(dkdv)?);
        args.arg(&q)
            .arg(&k)
            .arg(&v)
            .arg(&d_o)
            .arg(&lse)
            .arg(&delta_ptr);
        args.arg(&dk).arg(&dv).arg(&starts);
        args.arg(&t).arg(&hq).arg(&hkv).arg(&scale);
        self.launch(dkdv, args, (tiles, kv_heads, batch), ATT_THREADS)?;

        let mut args = s.launch_builder(self.function(dqk)?);
        args.arg(&q)
            .arg(&k)
            .arg(&v)
            .arg(&d_o)
            .arg(&lse)
            .arg(&delta_ptr);
        args.arg(&dq).arg(&starts);
        args.arg(&t).arg(&hq).arg(&hkv).arg(&scale);
        self.launch(dqk, args, (tiles, heads, batch), ATT_THREADS)
    }

    /// Attention of one new token per sequence over its KV cache, split over
    /// the cache length so that even batch 1 fills the GPU. `lengths[b]`
    /// (>= 1, <= max_len) positions of sequence b are attended.
    #[allow(clippy::too_many_arguments)]
    pub fn decode_attn(
        &self,
        shape: DecodeShape,
        q: &impl DevicePtr<bf16>,
        k_cache: &impl DevicePtr<bf16>,
        v_cache: &impl DevicePtr<bf16>,
        lengths: &impl DevicePtr<i32>,
        out: &mut impl DevicePtrMut<bf16>,
    ) -> Result<(), CudaError> {
        let kernel = if shape.head_dim == 64 {
            "decode_attn_partial_d64"
        } else {
            "decode_attn_partial_d128"
        };
        need(kernel, matches!(shape.head_dim, 64 | 128), || {
            format!("head_dim {} is not 64 or 128", shape.head_dim)
        })?;
        need(
            kernel,
            shape.kv_heads > 0
                && shape.q_heads.is_multiple_of(shape.kv_heads)
                && shape.q_heads / shape.kv_heads <= DEC_MAX_GROUP,
            || {
                format!(
                    "{} query heads over {} kv heads: need a whole group of at most {DEC_MAX_GROUP}",
                    shape.q_heads, shape.kv_heads
                )
            },
        )?;
        need(
            kernel,
            (1..=shape.capacity).contains(&shape.max_len),
            || {
                format!(
                    "max_len {} must be in 1..={}",
                    shape.max_len, shape.capacity
                )
            },
        )?;
        let q_len = shape.batch * shape.q_heads * shape.head_dim;
        let cache_len = shape.batch * shape.capacity * shape.kv_heads * shape.head_dim;
        len_is(kernel, "q", q.len(), q_len)?;
        len_is(kernel, "k_cache", k_cache.len(), cache_len)?;
        len_is(kernel, "v_cache", v_cache.len(), cache_len)?;
        len_is(kernel, "lengths", lengths.len(), shape.batch)?;
        len_is(kernel, "out", out.len(), q_len)?;
        int(kernel, "cache elements", cache_len)?;

        let (splits, split_len) = decode_splits(shape, self.sm_count() as usize);

        let (cap, hq, hkv, split_len_i) = (
            int(kernel, "capacity", shape.capacity)?,
            int(kernel, "q_heads", shape.q_heads)?,
            int(kernel, "kv_heads", shape.kv_heads)?,
            int(kernel, "split_len", split_len)?,
        );
        let splits_i = int(kernel, "splits", splits)?;
        let scale = 1.0 / (shape.head_dim as f32).sqrt();
        let mut part_o =
            self.scratch::<f32>(shape.batch * shape.q_heads * splits * shape.head_dim)?;
        let mut part_ml = self.scratch::<f32>(shape.batch * shape.q_heads * splits * 2)?;
        let grid = (
            super::check::grid(kernel, splits, u32::MAX)?,
            grid_yz(kernel, "kv_heads", shape.kv_heads)?,
            grid_yz(kernel, "batch", shape.batch)?,
        );
        let s = &self.stream;
        let (q, _q) = q.device_ptr(s);
        let (k, _k) = k_cache.device_ptr(s);
        let (v, _v) = v_cache.device_ptr(s);
        let (len, _len) = lengths.device_ptr(s);
        let (out, _out) = out.device_ptr_mut(s);
        let (po, _po) = part_o.device_ptr_mut(s);
        let (pml, _pml) = part_ml.device_ptr_mut(s);
        let mut args = s.launch_builder(self.function(kernel)?);
        args.arg(&q).arg(&k).arg(&v).arg(&len).arg(&po).arg(&pml);
        args.arg(&cap)
            .arg(&hq)
            .arg(&hkv)
            .arg(&split_len_i)
            .arg(&scale);
        self.launch(kernel, args, grid, DEC_THREADS)?;

        let combine = "decode_attn_combine";
        let mut args = s.launch_builder(self.function(combine)?);
        args.arg(&po).arg(&pml).arg(&out).arg(&hq).arg(&splits_i);
        let grid = (
            grid_yz(combine, "q_heads", shape.q_heads)?,
            grid_yz(combine, "batch", shape.batch)?,
            1,
        );
        self.launch(combine, args, grid, shape.head_dim as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_splits_cover_the_cache_and_fill_the_gpu() {
        for max_len in [1, 2, 63, 64, 65, 500, 4096, 131_072] {
            for (batch, kv_heads) in [(1, 8), (4, 8), (64, 8), (1, 1)] {
                let shape = DecodeShape {
                    batch,
                    q_heads: kv_heads * 4,
                    kv_heads,
                    head_dim: 128,
                    capacity: max_len,
                    max_len,
                };
                let (splits, split_len) = decode_splits(shape, 132);
                assert!(splits >= 1 && split_len >= 1);
                assert!(splits * split_len >= max_len, "{shape:?}: keys left out");
                assert!(
                    (splits - 1) * split_len < max_len,
                    "{shape:?}: an empty split"
                );
                // Where the cache is long enough for 64-key splits, about 264
                // blocks (two per SM of an H100) are launched.
                let want = 264usize.div_ceil(batch * kv_heads);
                if max_len >= 64 * want {
                    assert!(
                        splits * batch * kv_heads >= 250,
                        "{shape:?}: GPU not filled"
                    );
                }
            }
        }
    }
}
