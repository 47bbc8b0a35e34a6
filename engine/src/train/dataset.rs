//! Training examples from the JSONL datasets, tokenised once: SFT examples
//! (prompt + response, with the prompt masked from the loss) and preference
//! pairs (prompt + chosen, prompt + rejected) for reward models.
//!
//! Without a chat template, the text a model is trained on is `prompt +
//! RESPONSE_SEPARATOR + response`, encoded as the prompt with the
//! tokenizer's special tokens (BOS), then the separator and response
//! without them, then EOS. With one (see `model::chat`), it is the prompt
//! rendered as a user turn with the generation prompt, then what the whole
//! exchange adds to it (the answer and the template's end of turn), both
//! encoded without added special tokens (the template writes its own), and
//! EOS if the template did not end the turn with it. Encoding the two
//! halves separately keeps the prompt's tokens exactly what generation will
//! see at inference, so the mask boundary is a token boundary and a
//! generated answer is the trained one.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use miette::Diagnostic;
use serde::Deserialize;
use thiserror::Error;

use crate::model::Tokenizer;
use crate::model::batch::Batch;

/// Put between a prompt and its response.
pub const RESPONSE_SEPARATOR: &str = " ";

/// A dataset that cannot be used for training.
#[derive(Debug, Error, Diagnostic)]
pub enum DatasetError {
    #[error("cannot read {}: {source}", path.display())]
    #[diagnostic(code(train::dataset_io))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {reason}", path.display())]
    #[diagnostic(
        code(train::dataset_line),
        help("each line must be a JSON object with the fields of this dataset type")
    )]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{} has no examples", path.display())]
    #[diagnostic(code(train::dataset_empty), help("check the data stage's output"))]
    Empty { path: PathBuf },
}

/// One SFT example: `ids` is prompt then response; the first `prompt_len`
/// tokens are not trained on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub ids: Vec<u32>,
    pub prompt_len: usize,
}

/// A preference pair, both sequences complete (prompt + answer + EOS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    pub chosen: Vec<u32>,
    pub rejected: Vec<u32>,
}

#[derive(Deserialize)]
struct SftLine {
    prompt: String,
    response: String,
}

#[derive(Deserialize)]
struct PairLine {
    prompt: String,
    chosen: String,
    rejected: String,
}

/// The token ids of a prompt, as generation must feed it.
pub fn encode_prompt(tok: &Tokenizer, prompt: &str) -> Result<Vec<u32>, String> {
    let ids = match tok.chat_template() {
        Some(chat) => {
            let text = chat.prompt(prompt).map_err(|e| e.to_string())?;
            tok.encode(&text, false)
        }
        None => tok.encode(prompt, true),
    };
    ids.map_err(|e| e.to_string())
}

/// The token ids of `prompt`'s response: the separator and the response,
/// or the template's answer turn, then EOS (when given and the template did
/// not already write it).
pub fn encode_response(
    tok: &Tokenizer,
    prompt: &str,
    response: &str,
    eos: Option<u32>,
) -> Result<Vec<u32>, String> {
    let text = match tok.chat_template() {
        Some(chat) => chat.answer(prompt, response).map_err(|e| e.to_string())?,
        None => format!("{RESPONSE_SEPARATOR}{response}"),
    };
    let mut ids = tok.encode(&text, false).map_err(|e| e.to_string())?;
    if let Some(eos) = eos
        && !ids.contains(&eos)
    {
        ids.push(eos);
    }
    Ok(ids)
}

/// Parsed lines of a JSONL file, with their 1-based line numbers.
fn read_lines<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<(usize, T)>, DatasetError> {
    let io = |source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str(&line).map_err(|e| DatasetError::Line {
            path: path.to_path_buf(),
            line: n + 1,
            reason: e.to_string(),
        })?;
        out.push((n + 1, parsed));
    }
    if out.is_empty() {
        return Err(DatasetError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

/// Keeps at most `max_len` tokens, cutting the prompt's start (the answer
/// and the end of the prompt, where the question is, matter most).
fn fit(mut prompt: Vec<u32>, response: Vec<u32>, max_len: usize) -> Example {
    let over = (prompt.len() + response.len()).saturating_sub(max_len);
    prompt.drain(..over.min(prompt.len()));
    let prompt_len = prompt.len();
    prompt.extend(response);
    prompt.truncate(max_len);
    Example {
        ids: prompt,
        prompt_len,
    }
}

/// Tokenises `{"prompt", "response"}` lines.
pub fn load_sft(
    path: &Path,
    tok: &Tokenizer,
    eos: Option<u32>,
    max_len: usize,
) -> Result<Vec<Example>, DatasetError> {
    let bad = |line, reason| DatasetError::Line {
        path: path.to_path_buf(),
        line,
        reason,
    };
    read_lines::<SftLine>(path)?
        .into_iter()
        .map(|(n, l)| {
            let prompt = encode_prompt(tok, &l.prompt).map_err(|e| bad(n, e))?;
            let response =
                encode_response(tok, &l.prompt, &l.response, eos).map_err(|e| bad(n, e))?;
            Ok(fit(prompt, response, max_len))
        })
        .collect()
}

/// Tokenises `{"prompt", "chosen", "rejected"}` lines into whole sequences.
pub fn load_pairs(
    path: &Path,
    tok: &Tokenizer,
    eos: Option<u32>,
    max_len: usize,
) -> Result<Vec<Pair>, DatasetError> {
    Ok(load_preferences(path, tok, eos, max_len)?
        .into_iter()
        .map(|[chosen, rejected]| Pair {
            chosen: chosen.ids,
            rejected: rejected.ids,
        })
        .collect())
}

/// The same lines as `[chosen, rejected]` examples that know where their
/// prompt ends (DPO scores the answer tokens only).
pub fn load_preferences(
    path: &Path,
    tok: &Tokenizer,
    eos: Option<u32>,
    max_len: usize,
) -> Result<Vec<[Example; 2]>, DatasetError> {
    let bad = |line, reason| DatasetError::Line {
        path: path.to_path_buf(),
        line,
        reason,
    };
    read_lines::<PairLine>(path)?
        .into_iter()
        .map(|(n, l)| {
            let prompt = encode_prompt(tok, &l.prompt).map_err(|e| bad(n, e))?;
            let full = |answer: &str| {
                let response =
                    encode_response(tok, &l.prompt, answer, eos).map_err(|e| bad(n, e))?;
                Ok::<_, DatasetError>(fit(prompt.clone(), response, max_len))
            };
            Ok([full(&l.chosen)?, full(&l.rejected)?])
        })
        .collect()
}

/// A left-padded batch of SFT examples with next-token targets and loss
/// weights: `weight` on every position whose next token is a response
/// token, 0 elsewhere (prompt, padding, the last position).
pub fn sft_batch(examples: &[&Example], pad_id: u32, weight: f32) -> (Batch, Vec<u32>, Vec<f32>) {
    let seqs: Vec<Vec<u32>> = examples.iter().map(|e| e.ids.clone()).collect();
    let batch = Batch::left_padded(&seqs, pad_id);
    let mut targets = vec![0u32; batch.rows()];
    let mut weights = vec![0f32; batch.rows()];
    for (b, ex) in examples.iter().enumerate() {
        let pad = batch.pad[b] as usize;
        // Position j predicts token j + 1; train where that token is in
        // the response.
        for j in pad..batch.seq.saturating_sub(1) {
            let next = j + 1 - pad;
            if next >= ex.prompt_len {
                let row = b * batch.seq + j;
                targets[row] = ex.ids[next];
                weights[row] = weight;
            }
        }
    }
    (batch, targets, weights)
}

/// Number of trained (response) tokens of an example.
pub fn trained_tokens(example: &Example) -> usize {
    example.ids.len().saturating_sub(example.prompt_len.max(1))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn prompt_tokens_and_padding_are_masked() {
        let a = Example {
            ids: vec![1, 10, 11, 20, 21, 2],
            prompt_len: 3,
        };
        let b = Example {
            ids: vec![1, 12, 22, 2],
            prompt_len: 2,
        };
        let (batch, targets, weights) = sft_batch(&[&a, &b], 0, 0.5);
        assert_eq!(batch.seq, 6);
        assert_eq!(batch.pad, vec![0, 2]);
        // Row a: positions 2, 3, 4 predict 20, 21, 2.
        assert_eq!(&targets[..6], &[0, 0, 20, 21, 2, 0]);
        assert_eq!(&weights[..6], &[0.0, 0.0, 0.5, 0.5, 0.5, 0.0]);
        // Row b: padding at 0, 1; its position 3 (token 12) predicts 22.
        assert_eq!(&targets[6..], &[0, 0, 0, 22, 2, 0]);
        assert_eq!(&weights[6..], &[0.0, 0.0, 0.0, 0.5, 0.5, 0.0]);
        assert_eq!(trained_tokens(&a), 3);
        assert_eq!(trained_tokens(&b), 2);
    }

    /// With a chat template, the prompt is the rendered user turn without
    /// added special tokens, and the response is what the exchange adds,
    /// then EOS; without one, BOS + prompt and separator + response + EOS.
    #[test]
    fn prompts_and_responses_follow_the_chat_template() {
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/llama/mha");
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            golden.join("tokenizer.json"),
            dir.path().join("tokenizer.json"),
        )
        .unwrap();
        let plain = Tokenizer::load(&dir.path().join("tokenizer.json")).unwrap();
        let config = serde_json::json!({"chat_template":
            "{% for m in messages %}{% if m.role == 'user' %}your hand {{ m.content }} action{% else %} {{ m.content }}{% endif %}{% endfor %}"});
        std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
        let chat = Tokenizer::load(&dir.path().join("tokenizer.json")).unwrap();
        let ids = |t: &Tokenizer, text: &str, special| t.encode(text, special).unwrap();

        assert_eq!(
            encode_prompt(&chat, "ace king").unwrap(),
            ids(&chat, "your hand ace king action", false)
        );
        assert_eq!(
            encode_response(&chat, "ace king", "raise", Some(2)).unwrap(),
            [ids(&chat, " raise", false), vec![2]].concat()
        );
        assert_eq!(
            encode_prompt(&plain, "ace king").unwrap(),
            ids(&plain, "ace king", true)
        );
        assert_eq!(
            encode_response(&plain, "ace king", "raise", Some(2)).unwrap(),
            [ids(&plain, " raise", false), vec![2]].concat()
        );
        assert_ne!(
            encode_prompt(&chat, "ace king"),
            encode_prompt(&plain, "ace king")
        );

        let mut off = chat;
        off.keep_chat_template(false);
        assert_eq!(
            encode_prompt(&off, "ace king"),
            encode_prompt(&plain, "ace king")
        );
    }

    #[test]
    fn long_examples_lose_the_start_of_the_prompt() {
        let ex = fit(vec![1, 2, 3, 4, 5], vec![6, 7], 4);
        assert_eq!(ex.ids, vec![4, 5, 6, 7]);
        assert_eq!(ex.prompt_len, 2);
    }
}
