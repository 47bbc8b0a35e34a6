//! The order examples are trained in: a seeded shuffle per epoch, cut into
//! global batches (one optimizer step each), each cut into micro-batches for
//! gradient accumulation.
//!
//! The order depends only on the data size, the global batch size and the
//! seed, never on the micro-batch size: memory presets split the same global
//! batch differently, and a preset swap must not change what is learned.
//! A `Cursor` records where training stands; it serialises into checkpoints
//! so a resumed run continues with exactly the batches it would have seen.

use miette::Diagnostic;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Position in the training order: the epoch, and the index into that
/// epoch's permutation of the first example of the next batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    pub position: usize,
}

/// One optimizer step's examples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Epoch the batch belongs to.
    pub epoch: u64,
    /// Example indices, in training order.
    pub indices: Vec<usize>,
}

impl Batch {
    /// The batch as micro-batches of at most `micro_batch` examples (the
    /// last may be smaller); the gradients of all of them make one step.
    pub fn micro_batches(&self, micro_batch: usize) -> impl Iterator<Item = &[usize]> {
        self.indices.chunks(micro_batch.max(1))
    }
}

/// Settings that cannot produce a training order.
#[derive(Debug, Error, Diagnostic)]
pub enum DataOrderError {
    #[error("there are no training examples")]
    #[diagnostic(
        code(train::data_order::empty),
        help("check the stage's data input: it produced or pointed at an empty file")
    )]
    Empty,
    #[error("the batch size must be at least 1")]
    #[diagnostic(
        code(train::data_order::batch),
        help("set `batch_size` to a positive number")
    )]
    ZeroBatch,
    #[error("checkpoint cursor (epoch {}, position {}) lies outside {len} examples", cursor.epoch, cursor.position)]
    #[diagnostic(
        code(train::data_order::cursor),
        help(
            "the data changed since the checkpoint was written; remove the stage's work directory to restart it"
        )
    )]
    CursorOutOfRange { cursor: Cursor, len: usize },
}

/// The training order of `len` examples in global batches of `batch_size`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataOrder {
    len: usize,
    batch_size: usize,
    seed: u64,
}

impl DataOrder {
    pub fn new(len: usize, batch_size: usize, seed: u64) -> Result<Self, DataOrderError> {
        if len == 0 {
            return Err(DataOrderError::Empty);
        }
        if batch_size == 0 {
            return Err(DataOrderError::ZeroBatch);
        }
        Ok(DataOrder {
            len,
            batch_size,
            seed,
        })
    }

    /// Optimizer steps in one epoch; the last batch of an epoch may be
    /// short (transformers' default, `dataloader_drop_last=False`).
    pub fn steps_per_epoch(&self) -> u64 {
        self.len.div_ceil(self.batch_size) as u64
    }

    /// Optimizer steps in `epochs` epochs, for schedules and progress.
    pub fn total_steps(&self, epochs: u64) -> u64 {
        self.steps_per_epoch() * epochs
    }

    /// The example order of one epoch: a Fisher-Yates shuffle driven by
    /// ChaCha8 with the run's seed and the epoch as its stream, so any epoch
    /// can be recomputed on its own after a resume.
    pub fn permutation(&self, epoch: u64) -> Vec<usize> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(epoch);
        let mut order: Vec<usize> = (0..self.len).collect();
        for i in (1..self.len).rev() {
            let j = rng.random_range(0..=i);
            order.swap(i, j);
        }
        order
    }

    /// Check that a cursor read from a checkpoint fits this data.
    pub fn check_cursor(&self, cursor: Cursor) -> Result<(), DataOrderError> {
        if cursor.position > self.len {
            return Err(DataOrderError::CursorOutOfRange {
                cursor,
                len: self.len,
            });
        }
        Ok(())
    }

    /// The batches from `cursor` to the end of epoch `epochs - 1`, one per
    /// optimizer step; each epoch's permutation is computed once.
    pub fn batches(&self, cursor: Cursor, epochs: u64) -> Batches<'_> {
        Batches {
            order: self,
            cursor,
            epochs,
            permutation: None,
        }
    }
}

/// The remaining batches; `cursor()` after each item is what a checkpoint
/// written after that step must store. A cursor at the end of an epoch
/// moves on to the next epoch.
pub struct Batches<'a> {
    order: &'a DataOrder,
    cursor: Cursor,
    epochs: u64,
    permutation: Option<(u64, Vec<usize>)>,
}

impl Batches<'_> {
    /// Where training stands after the batches yielded so far.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }
}

impl Iterator for Batches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let cursor = &mut self.cursor;
        if cursor.position >= self.order.len {
            cursor.epoch += 1;
            cursor.position = 0;
        }
        if cursor.epoch >= self.epochs {
            return None;
        }
        let epoch = cursor.epoch;
        if self.permutation.as_ref().is_none_or(|(e, _)| *e != epoch) {
            self.permutation = Some((epoch, self.order.permutation(epoch)));
        }
        let permutation = self.permutation.as_ref().map(|(_, p)| p)?;
        let end = (cursor.position + self.order.batch_size).min(self.order.len);
        let indices = permutation[cursor.position..end].to_vec();
        cursor.position = end;
        Some(Batch { epoch, indices })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn each_epoch_is_a_seeded_permutation() {
        let order = DataOrder::new(37, 8, 42).unwrap();
        let first = order.permutation(0);
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..37).collect::<Vec<_>>());
        assert_eq!(first, DataOrder::new(37, 8, 42).unwrap().permutation(0));
        assert_ne!(first, order.permutation(1), "epochs differ");
        assert_ne!(
            first,
            DataOrder::new(37, 8, 43).unwrap().permutation(0),
            "seeds differ"
        );
        assert_ne!(first, (0..37).collect::<Vec<_>>(), "actually shuffled");
    }

    #[test]
    fn batches_cover_every_example_once_per_epoch() {
        let order = DataOrder::new(37, 8, 1).unwrap();
        assert_eq!(order.steps_per_epoch(), 5);
        assert_eq!(order.total_steps(3), 15);
        let batches: Vec<Batch> = order.batches(Cursor::default(), 3).collect();
        assert_eq!(batches.len(), 15);
        for epoch in 0..3 {
            let in_epoch: Vec<&Batch> = batches.iter().filter(|b| b.epoch == epoch).collect();
            let sizes: Vec<usize> = in_epoch.iter().map(|b| b.indices.len()).collect();
            assert_eq!(sizes, [8, 8, 8, 8, 5]);
            let flat: Vec<usize> = in_epoch.iter().flat_map(|b| b.indices.clone()).collect();
            assert_eq!(flat, order.permutation(epoch));
        }
    }

    #[test]
    fn micro_batches_split_the_same_global_batch() {
        let order = DataOrder::new(30, 8, 5).unwrap();
        let batch = order.batches(Cursor::default(), 1).next().unwrap();
        for micro in [1, 2, 3, 4, 8, 20] {
            let joined: Vec<usize> = batch.micro_batches(micro).flatten().copied().collect();
            assert_eq!(joined, batch.indices, "micro {micro}");
            assert!(batch.micro_batches(micro).all(|m| m.len() <= micro));
        }
        assert_eq!(batch.micro_batches(3).count(), 3);
    }

    #[test]
    fn a_resumed_cursor_continues_with_the_same_batches() {
        let order = DataOrder::new(23, 4, 9).unwrap();
        let all: Vec<Batch> = order.batches(Cursor::default(), 2).collect();
        for stop in 0..all.len() {
            let mut it = order.batches(Cursor::default(), 2);
            for _ in 0..stop {
                it.next();
            }
            let saved = serde_json::to_string(&it.cursor()).unwrap();
            let cursor: Cursor = serde_json::from_str(&saved).unwrap();
            order.check_cursor(cursor).unwrap();
            let rest: Vec<Batch> = order.batches(cursor, 2).collect();
            assert_eq!(rest, all[stop..], "resumed after {stop} steps");
        }
    }

    #[test]
    fn bad_settings_and_foreign_cursors_are_refused() {
        assert!(matches!(
            DataOrder::new(0, 4, 1),
            Err(DataOrderError::Empty)
        ));
        assert!(matches!(
            DataOrder::new(4, 0, 1),
            Err(DataOrderError::ZeroBatch)
        ));
        let order = DataOrder::new(10, 4, 1).unwrap();
        let far = Cursor {
            epoch: 0,
            position: 11,
        };
        assert!(order.check_cursor(far).is_err());
    }
}
