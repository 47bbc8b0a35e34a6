//! The reward head of `LlamaForSequenceClassification`: `score.weight`
//! `[num_labels, hidden]` applied to the final hidden state of each
//! sequence's last non-pad token, as transformers pools it.

use crate::backend::{Backend, Gemm};

use super::batch::{Batch, one_row_each};
use super::error::{ModelError, Result};
use super::llama::{Llama, TrainPass};
use super::param::Param;
use super::weights::HostTensor;

/// Row index (into `[batch * seq]`) of each sequence's last token that is
/// not `pad_id`: transformers' `argmax(index * (ids != pad))`, so a row of
/// only padding pools position 0. Without a pad id, the last position.
pub fn last_token_rows(batch: &Batch, pad_id: Option<u32>) -> Vec<u32> {
    (0..batch.batch)
        .map(|b| {
            let row = &batch.ids[b * batch.seq..(b + 1) * batch.seq];
            let last = match pad_id {
                Some(pad) => row.iter().rposition(|&t| t != pad).unwrap_or(0),
                None => batch.seq.saturating_sub(1),
            };
            (b * batch.seq + last) as u32
        })
        .collect()
}

fn missing_score_head() -> ModelError {
    ModelError::MissingTensor {
        name: "score.weight".into(),
        dir: "<reward model>".into(),
    }
}

/// A head `[labels, d]` applied to the hidden states at `rows` of
/// `hidden`, on the device: the gathered rows `[rows.len(), d]` (which the
/// backward needs) and the head's outputs `[rows.len(), labels]`. Reward
/// heads and PPO's value head share it, as they share
/// [`pooled_head_backward`].
pub fn pooled_head<B: Backend>(
    be: &B,
    hidden: &B::Buf,
    rows: &[u32],
    head: &Param<B>,
) -> (B::Buf, B::Buf) {
    let (labels, d) = (head.shape[0], head.shape[1]);
    let pooled = be.gather_rows(hidden, rows, d);
    let mut out = be.zeros(rows.len() * labels);
    be.matmul(
        &pooled,
        &head.value,
        &mut out,
        Gemm::linear(rows.len(), labels, d),
    );
    (pooled, out)
}

/// The backward of a head `[labels, d]` applied to the hidden states at
/// `rows` (`pooled`, gathered from them): `ds` is the gradient of the
/// head's outputs, `[rows.len(), labels]`. Adds the head's weight gradient
/// when it trains (one segment per pooled row, so micro-batches sum the
/// same) and returns the gradient of all `hidden_rows` hidden states, zero
/// off `rows`. Reward heads and PPO's value head share it.
pub fn pooled_head_backward<B: Backend>(
    be: &B,
    head: &mut Param<B>,
    pooled: &B::Buf,
    rows: &[u32],
    ds: &[f32],
    hidden_rows: usize,
) -> B::Buf {
    let (labels, d) = (head.shape[0], head.shape[1]);
    let n = rows.len();
    let ds = be.upload(ds);
    let mut dpooled = be.zeros(n * d);
    be.matmul(&ds, &head.value, &mut dpooled, Gemm::plain(n, d, labels));
    if let Some(dw) = head.grad.as_mut() {
        let gemm = Gemm::weight_grad(labels, d, n);
        be.weight_grad(&ds, pooled, dw, gemm, &one_row_each(n));
    }
    let mut dh = be.zeros(hidden_rows * d);
    be.scatter_add_rows(&dpooled, rows, d, &mut dh);
    dh
}

impl<B: Backend> Llama<B> {
    /// Adds a fresh reward head (zero, so every score starts at 0), as a
    /// reward stage initialised from a causal LM does.
    pub fn add_score_head(&mut self, be: &B, num_labels: usize) {
        let shape = vec![num_labels, self.cfg.hidden_size];
        let zeros = HostTensor::new(shape.clone(), vec![0.0; num_labels * self.cfg.hidden_size]);
        self.score = Some(super::param::Param::new(be, "score.weight", &zeros));
    }

    /// Scores `[batch, num_labels]` (host), pooled at the last non-pad
    /// token of each row.
    pub fn scores(&self, be: &B, batch: &Batch) -> Result<Vec<f32>> {
        let head = self.score.as_ref().ok_or_else(missing_score_head)?;
        let h = self.forward(be, batch, None);
        let rows = last_token_rows(batch, self.cfg.pad_token_id);
        Ok(be.download(&pooled_head(be, &h, &rows, head).1))
    }

    /// Forward and backward of `sum(dscores * scores)`: gradients of any
    /// loss of the scores whose gradient is `dscores` (`[batch,
    /// num_labels]`). Returns the scores.
    pub fn scores_backward(
        &mut self,
        be: &B,
        batch: &Batch,
        dscores: &[f32],
        pass: TrainPass,
    ) -> Result<Vec<f32>> {
        let (h, tape) = self.forward_train(be, batch, pass);
        let rows = last_token_rows(batch, self.cfg.pad_token_id);
        let score = self.score.as_mut().ok_or_else(missing_score_head)?;
        let (pooled, out) = pooled_head(be, &h, &rows, score);
        let dh = pooled_head_backward(be, score, &pooled, &rows, dscores, batch.rows());
        self.backward_from_hidden(be, batch, tape, &dh);
        Ok(be.download(&out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_the_last_non_pad_token_like_transformers() {
        let batch = Batch::dense(vec![5, 6, 7, 0, 5, 0, 0, 0, 0, 0, 0, 0], 3);
        assert_eq!(last_token_rows(&batch, Some(0)), vec![2, 4, 8]);
        assert_eq!(last_token_rows(&batch, None), vec![3, 7, 11]);
    }
}
