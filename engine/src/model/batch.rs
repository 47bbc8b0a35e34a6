//! A batch of token sequences, left-padded to one length.

use std::ops::Range;

use crate::backend::splitmix64;

/// `batch` rows of `seq` token ids, batch-major. Row `b` holds padding in
/// positions `0..pad[b]`; real tokens follow. Padding is left so that the
/// last position of every row is a real token (generation appends there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub ids: Vec<u32>,
    pub batch: usize,
    pub seq: usize,
    pub pad: Vec<u32>,
}

impl Batch {
    /// Sequences of equal length, no padding.
    pub fn dense(ids: Vec<u32>, batch: usize) -> Self {
        let seq = ids.len().checked_div(batch).unwrap_or(0);
        Batch {
            ids,
            batch,
            seq,
            pad: vec![0; batch],
        }
    }

    /// Left-pads sequences of any lengths with `pad_id` to the longest.
    pub fn left_padded(seqs: &[Vec<u32>], pad_id: u32) -> Self {
        let seq = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(seqs.len() * seq);
        let mut pad = Vec::with_capacity(seqs.len());
        for s in seqs {
            pad.push((seq - s.len()) as u32);
            ids.extend(std::iter::repeat_n(pad_id, seq - s.len()));
            ids.extend_from_slice(s);
        }
        Batch {
            ids,
            batch: seqs.len(),
            seq,
            pad,
        }
    }

    /// Sequences `range` on their own, with the same length and padding,
    /// so a forward pass can take a few sequences of a batch at a time.
    pub fn sequences(&self, range: std::ops::Range<usize>) -> Batch {
        Batch {
            ids: self.ids[range.start * self.seq..range.end * self.seq].to_vec(),
            batch: range.len(),
            seq: self.seq,
            pad: self.pad[range].to_vec(),
        }
    }

    pub fn rows(&self) -> usize {
        self.batch * self.seq
    }

    /// Rows that hold a real token (not padding), for tokens/s.
    pub fn real_tokens(&self) -> u64 {
        self.rows() as u64 - self.pad.iter().map(|&p| u64::from(p)).sum::<u64>()
    }

    /// RoPE position of each token: its index after the padding, as
    /// transformers' `generate` computes them (padding gets 0, never used).
    pub fn positions(&self, offset: usize, len: usize) -> Vec<u32> {
        (0..self.batch)
            .flat_map(|b| {
                (offset..offset + len).map(move |j| (j as u32).saturating_sub(self.pad[b]))
            })
            .collect()
    }

    /// The rows of the tokens `offset..offset + len` of every sequence, as
    /// one pass over them (`[batch, len]`) lays them out.
    pub fn seq_rows(&self, offset: usize, len: usize) -> SeqRows {
        let mut segments = Vec::with_capacity(self.batch);
        let mut dropout_keys = Vec::with_capacity(self.batch * len);
        for b in 0..self.batch {
            let pad = self.pad[b] as usize;
            let first = b * len + pad.saturating_sub(offset).min(len);
            segments.push(first..(b + 1) * len);
            let real = &self.ids[b * self.seq + pad.min(self.seq)..(b + 1) * self.seq];
            let key = real.iter().fold(splitmix64(real.len() as u64), |h, &id| {
                splitmix64(h ^ u64::from(id))
            });
            dropout_keys.extend((offset..offset + len).map(|j| match j.checked_sub(pad) {
                Some(at) => splitmix64(key ^ at as u64),
                None => 0,
            }));
        }
        SeqRows {
            count: self.batch * len,
            segments,
            dropout_keys,
        }
    }
}

/// Segments of one row each: a head's gradient from one pooled row per
/// sequence, summed a sequence at a time.
pub fn one_row_each(rows: usize) -> Vec<Range<usize>> {
    (0..rows).map(|r| r..r + 1).collect()
}

/// The rows of one pass over a batch and the sequence each belongs to. A
/// training step's sums over rows follow it, so that a sequence adds the
/// same bits to the gradients in whichever micro-batch it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeqRows {
    pub count: usize,
    /// The rows of each sequence's real tokens, in batch order: weight
    /// gradients are summed one segment at a time.
    pub segments: Vec<Range<usize>>,
    /// Per row, the key of its LoRA dropout mask: a hash of its sequence's
    /// tokens and its position among them (0 on padding, where every
    /// gradient is zero anyway). Dropout runs only in training, on a whole
    /// pass (`offset` 0), where the tokens are all in the batch.
    pub dropout_keys: Vec<u64>,
}
