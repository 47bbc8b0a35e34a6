//! The reward head of `LlamaForSequenceClassification`: `score.weight`
//! `[num_labels, hidden]` applied to the final hidden state of each
//! sequence's last non-pad token, as transformers pools it.

use crate::backend::{Backend, Gemm};

use super::batch::{Batch, one_row_each};
use super::error::{ModelError, Result};
use super::llama::{Llama, TrainPass};
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

impl<B: Backend> Llama<B> {
    /// Adds a fresh reward head (zero, so every score starts at 0), as a
    /// reward stage initialised from a causal LM does.
    pub fn add_score_head(&mut self, be: &B, num_labels: usize) {
        let shape = vec![num_labels, self.cfg.hidden_size];
        let zeros = HostTensor::new(shape.clone(), vec![0.0; num_labels * self.cfg.hidden_size]);
        self.score = Some(super::param::Param::new(be, "score.weight", &zeros));
    }

    fn score_head(&self) -> Result<&super::param::Param<B>> {
        self.score
            .as_ref()
            .ok_or_else(|| ModelError::MissingTensor {
                name: "score.weight".into(),
                dir: "<reward model>".into(),
            })
    }

    /// Scores `[batch, num_labels]` (host), pooled at the last non-pad
    /// token of each row.
    pub fn scores(&self, be: &B, batch: &Batch) -> Result<Vec<f32>> {
        let head = self.score_head()?;
        let h = self.forward(be, batch, None);
        Ok(be.download(&self.pool_and_score(be, &h, batch, head)))
    }

    fn pool_and_score(
        &self,
        be: &B,
        h: &B::Buf,
        batch: &Batch,
        head: &super::param::Param<B>,
    ) -> B::Buf {
        let d = self.cfg.hidden_size;
        let labels = head.shape[0];
        let rows = last_token_rows(batch, self.cfg.pad_token_id);
        let pooled = be.gather_rows(h, &rows, d);
        let mut out = be.zeros(batch.batch * labels);
        be.matmul(
            &pooled,
            &head.value,
            &mut out,
            Gemm::linear(batch.batch, labels, d),
        );
        out
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
        let d = self.cfg.hidden_size;
        let rows = last_token_rows(batch, self.cfg.pad_token_id);
        let pooled = be.gather_rows(&h, &rows, d);
        let head = self.score_head()?;
        let labels = head.shape[0];
        let mut out = be.zeros(batch.batch * labels);
        be.matmul(
            &pooled,
            &head.value,
            &mut out,
            Gemm::linear(batch.batch, labels, d),
        );
        let ds = be.upload(dscores);
        let mut dpooled = be.zeros(batch.batch * d);
        be.matmul(
            &ds,
            &head.value,
            &mut dpooled,
            Gemm::plain(batch.batch, d, labels),
        );
        if let Some(score) = self.score.as_mut()
            && let Some(g) = score.grad.as_mut()
        {
            let per_sequence = one_row_each(batch.batch);
            let gemm = Gemm::weight_grad(labels, d, batch.batch);
            be.weight_grad(&ds, &pooled, g, gemm, &per_sequence);
        }
        let mut dh = be.zeros(batch.rows() * d);
        be.scatter_add_rows(&dpooled, &rows, d, &mut dh);
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
