//! Log-likelihood of texts under a model: what `eval --mode score` prints.

use crate::backend::Backend;

use super::batch::Batch;
use super::error::{ModelError, Result};
use super::llama::Llama;
use super::tokenizer::Tokenizer;

/// The score of one text.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// Token ids, special tokens (e.g. BOS) included.
    pub tokens: usize,
    /// `sum_{i >= 1} log p(token_i | tokens before it)`.
    pub logprob: f64,
}

/// Scores one text: tokenized with special tokens, every token after the
/// first predicted from those before it.
pub fn score_text<B: Backend>(
    be: &B,
    model: &Llama<B>,
    tok: &Tokenizer,
    text: &str,
) -> Result<Scored> {
    let ids = tok.encode(text, true)?;
    let vocab = model.cfg.vocab_size;
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(ModelError::TokenOutOfRange { id, vocab });
    }
    if ids.len() < 2 {
        return Ok(Scored {
            tokens: ids.len(),
            logprob: 0.0,
        });
    }
    let n = ids.len();
    let mut targets = vec![0; n];
    targets[..n - 1].copy_from_slice(&ids[1..]);
    let mut weights = vec![1.0; n];
    weights[n - 1] = 0.0;
    let nll = model.token_nll(be, &Batch::dense(ids, 1), &targets, &weights, None);
    Ok(Scored {
        tokens: n,
        logprob: -nll.iter().map(|&x| x as f64).sum::<f64>(),
    })
}
