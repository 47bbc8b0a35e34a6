//! A batch of token sequences, left-padded to one length.

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

    /// RoPE position of each token: its index after the padding, as
    /// transformers' `generate` computes them (padding gets 0, never used).
    pub fn positions(&self, offset: usize, len: usize) -> Vec<u32> {
        (0..self.batch)
            .flat_map(|b| {
                (offset..offset + len).map(move |j| (j as u32).saturating_sub(self.pad[b]))
            })
            .collect()
    }
}
