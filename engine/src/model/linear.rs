//! A projection `y = x W^T`, optionally with a LoRA pair:
//! `y += scale * dropout(x) A^T B^T` with `A: [rank, in]`, `B: [out, rank]`.

use crate::backend::{Backend, Gemm};

use super::batch::SeqRows;
use super::param::Param;

/// A LoRA adapter on one projection.
#[derive(Debug)]
pub struct Lora<B: Backend> {
    pub a: Param<B>,
    pub b: Param<B>,
    pub rank: usize,
    /// `alpha / rank`.
    pub scale: f32,
    pub dropout: f32,
    /// Whether `scale * B A` is currently folded into the base weight.
    pub merged: bool,
}

#[derive(Debug)]
pub struct Linear<B: Backend> {
    pub weight: Param<B>,
    pub lora: Option<Lora<B>>,
    pub in_dim: usize,
    pub out_dim: usize,
}

/// Dropout is applied only in training, with a seed per call site so a
/// recomputed forward (activation checkpointing) draws the same mask; each
/// row's own key comes from [`SeqRows::dropout_keys`].
pub type DropoutSeed = Option<u64>;

impl<B: Backend> Linear<B> {
    pub fn new(weight: Param<B>) -> Self {
        let (out_dim, in_dim) = (weight.shape[0], weight.shape[1]);
        Linear {
            weight,
            lora: None,
            in_dim,
            out_dim,
        }
    }

    /// The LoRA adapter if it is active (attached and not merged).
    fn live_lora(&self) -> Option<&Lora<B>> {
        self.lora.as_ref().filter(|l| !l.merged)
    }

    /// Returns `y` and, with an active LoRA, `dropout(x) A^T` for backward.
    pub fn forward(
        &self,
        be: &B,
        x: &B::Buf,
        seq_rows: &SeqRows,
        seed: DropoutSeed,
    ) -> (B::Buf, Option<B::Buf>) {
        let rows = seq_rows.count;
        let mut y = be.zeros(rows * self.out_dim);
        be.matmul(
            x,
            &self.weight.value,
            &mut y,
            Gemm::linear(rows, self.out_dim, self.in_dim),
        );
        let Some(lora) = self.live_lora() else {
            return (y, None);
        };
        let dropped = dropped_input(be, x, lora, seq_rows, seed);
        let xd = dropped.as_ref().unwrap_or(x);
        let mut xa = be.zeros(rows * lora.rank);
        be.matmul(
            xd,
            &lora.a.value,
            &mut xa,
            Gemm::linear(rows, lora.rank, self.in_dim),
        );
        let g = Gemm::linear(rows, self.out_dim, lora.rank)
            .scaled(lora.scale)
            .accumulate();
        be.matmul(&xa, &lora.b.value, &mut y, g);
        (y, Some(xa))
    }

    /// Returns `dx`; accumulates gradients of trainable parameters.
    pub fn backward(
        &mut self,
        be: &B,
        x: &B::Buf,
        xa: Option<&B::Buf>,
        dy: &B::Buf,
        seq_rows: &SeqRows,
        seed: DropoutSeed,
    ) -> B::Buf {
        let (out_dim, in_dim, rows) = (self.out_dim, self.in_dim, seq_rows.count);
        let segments = &seq_rows.segments;
        if let Some(dw) = self.weight.grad.as_mut() {
            let g = Gemm::weight_grad(out_dim, in_dim, rows);
            be.weight_grad(dy, x, dw, g, segments);
        }
        let mut dx = be.zeros(rows * in_dim);
        be.matmul(
            dy,
            &self.weight.value,
            &mut dx,
            Gemm::plain(rows, in_dim, out_dim),
        );
        let (Some(lora), Some(xa)) = (self.lora.as_mut().filter(|l| !l.merged), xa) else {
            return dx;
        };
        let r = lora.rank;
        if let Some(db) = lora.b.grad.as_mut() {
            let g = Gemm::weight_grad(out_dim, r, rows).scaled(lora.scale);
            be.weight_grad(dy, xa, db, g, segments);
        }
        let mut dxa = be.zeros(rows * r);
        be.matmul(
            dy,
            &lora.b.value,
            &mut dxa,
            Gemm::plain(rows, r, out_dim).scaled(lora.scale),
        );
        let dropped = dropped_input(be, x, lora, seq_rows, seed);
        if let Some(da) = lora.a.grad.as_mut() {
            let xd = dropped.as_ref().unwrap_or(x);
            be.weight_grad(&dxa, xd, da, Gemm::weight_grad(r, in_dim, rows), segments);
        }
        match (seed, lora.dropout > 0.0) {
            (Some(seed), true) => {
                let mut dxd = be.zeros(rows * in_dim);
                be.matmul(&dxa, &lora.a.value, &mut dxd, Gemm::plain(rows, in_dim, r));
                let keys = &seq_rows.dropout_keys;
                be.axpy(&mut dx, 1.0, &be.dropout(&dxd, lora.dropout, seed, keys));
            }
            _ => be.matmul(
                &dxa,
                &lora.a.value,
                &mut dx,
                Gemm::plain(rows, in_dim, r).accumulate(),
            ),
        }
        dx
    }

    /// Folds `scale * B A` into the base weight (`sign` 1) or takes it back
    /// out (`sign` -1).
    pub fn fold_lora(&mut self, be: &B, merge: bool) {
        let Some(lora) = self.lora.as_mut() else {
            return;
        };
        if lora.merged == merge {
            return;
        }
        let sign = if merge { 1.0 } else { -1.0 };
        let g = Gemm::plain(self.out_dim, self.in_dim, lora.rank)
            .scaled(sign * lora.scale)
            .accumulate();
        be.matmul(&lora.b.value, &lora.a.value, &mut self.weight.value, g);
        lora.merged = merge;
    }
}

fn dropped_input<B: Backend>(
    be: &B,
    x: &B::Buf,
    lora: &Lora<B>,
    seq_rows: &SeqRows,
    seed: DropoutSeed,
) -> Option<B::Buf> {
    match seed {
        Some(seed) if lora.dropout > 0.0 => {
            Some(be.dropout(x, lora.dropout, seed, &seq_rows.dropout_keys))
        }
        _ => None,
    }
}
