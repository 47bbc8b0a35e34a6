//! `tokenizer`: trains a byte-level BPE tokenizer on the text of its
//! datasets, for models that start from random weights (a pretrained base
//! brings its own). Byte-level means every string encodes, so prompts the
//! data never showed still work; the special tokens are LLaMA 3's names.
//!
//! Writes `tokenizer.json` and `special_tokens.json` (the ids and vocabulary
//! size a model config needs).

use std::collections::HashSet;
use std::io::BufRead;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::Split;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::{PAIRS_DATASET, PROMPT_SET, SFT_DATASET, TOKENIZER};
use crate::graph::{
    Cancel, InputDecl, Outcome, OutputDecl, StageContext, StageError, StageKind, StageResult,
};

/// Beginning of every sequence (added by the post-processor).
pub const BOS: &str = "<|begin_of_text|>";
/// End of a response: generation stops here.
pub const EOS: &str = "<|end_of_text|>";
/// Left padding in batches; never trained on, never attended to.
pub const PAD: &str = "<|pad|>";

/// The file with the ids a model config needs.
pub const SPECIAL_TOKENS_FILE: &str = "special_tokens.json";

/// Parameters of a `tokenizer` stage.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenizerParams {
    /// Datasets whose text (prompts, responses, chosen and rejected
    /// answers) the tokenizer learns from: `data.sft`, `data.pairs`, ...
    #[schemars(length(min = 1))]
    pub data: Vec<String>,
    /// Vocabulary size including the 256 byte tokens and 3 special tokens.
    #[serde(default = "TokenizerParams::vocab_size")]
    #[schemars(range(min = 260, max = 262144))]
    pub vocab_size: usize,
    /// A merge must occur at least this often.
    #[serde(default = "TokenizerParams::min_frequency")]
    #[schemars(range(min = 1))]
    pub min_frequency: u64,
}

impl TokenizerParams {
    fn vocab_size() -> usize {
        8000
    }
    fn min_frequency() -> u64 {
        2
    }
}

/// The ids of the special tokens, written beside tokenizer.json.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialTokens {
    pub bos_token_id: u32,
    pub eos_token_id: u32,
    pub pad_token_id: u32,
    pub vocab_size: usize,
}

impl SpecialTokens {
    /// Reads `special_tokens.json` of a tokenizer stage's folder.
    pub fn load(dir: &Path) -> Result<Self, StageError> {
        let path = dir.join(SPECIAL_TOKENS_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            StageError::runtime(miette::miette!("cannot read {}: {e}", path.display()))
        })?;
        serde_json::from_str(&text).map_err(|e| {
            StageError::runtime(miette::miette!(
                help = "re-run the tokenizer stage (`poker-pipe cache` can remove the entry)",
                "{} is not valid: {e}",
                path.display()
            ))
        })
    }
}

/// The `tokenizer` stage kind.
pub struct TokenizerKind;

impl StageKind for TokenizerKind {
    type Params = TokenizerParams;
    const NAME: &'static str = "tokenizer";
    const VERSION: u32 = 2;
    const DESCRIPTION: &'static str = "Trains a byte-level BPE tokenizer on the text of datasets, for models started from random weights.";

    fn outputs(&self, _: &TokenizerParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("tokenizer", TOKENIZER, "")]
    }

    fn inputs(&self, params: &TokenizerParams) -> Vec<InputDecl> {
        params
            .data
            .iter()
            .enumerate()
            .map(|(i, r)| {
                InputDecl::stage(
                    format!("data.{i}"),
                    r,
                    &[SFT_DATASET, PAIRS_DATASET, PROMPT_SET],
                )
            })
            .collect()
    }

    /// BPE training stops at `vocab_size` tokens (special tokens included).
    fn vocabulary(&self, params: &TokenizerParams) -> Option<usize> {
        Some(params.vocab_size)
    }

    fn run(&self, params: &TokenizerParams, ctx: &mut StageContext) -> StageResult {
        let result = run_tokenizer(params, ctx);
        StageError::or_interrupted(result, ctx)
    }
}

fn run_tokenizer(params: &TokenizerParams, ctx: &mut StageContext) -> StageResult {
    let mut texts = Vec::new();
    let cancel = ctx.cancel_flag();
    for i in 0..params.data.len() {
        let path = ctx.input(&format!("data.{i}"))?.path.clone();
        read_texts(&path, &mut texts, &cancel)?;
    }
    ctx.log(format!(
        "training a {}-token byte-level BPE on {} texts",
        params.vocab_size,
        texts.len()
    ));
    let (tok, special) = train_until(texts, params.vocab_size, params.min_frequency, &cancel)?;
    let out = ctx.out_dir().to_path_buf();
    tok.save(out.join("tokenizer.json"), true)
        .map_err(|e| StageError::runtime(miette::miette!("cannot write tokenizer.json: {e}")))?;
    let text = serde_json::to_string_pretty(&special)
        .map_err(|e| StageError::runtime(miette::miette!("cannot encode ids: {e}")))?;
    std::fs::write(out.join(SPECIAL_TOKENS_FILE), text).map_err(|e| {
        StageError::runtime(miette::miette!("cannot write {SPECIAL_TOKENS_FILE}: {e}"))
    })?;
    ctx.log(format!("vocabulary of {} tokens", special.vocab_size));
    Ok(Outcome::Done)
}

/// [`train`] on a thread of its own, so that Ctrl-C is answered within
/// moments even though the trainer cannot be stopped: the stage returns
/// and the process ends with the thread.
fn train_until(
    texts: Vec<String>,
    vocab_size: usize,
    min_frequency: u64,
    cancel: &Cancel,
) -> Result<(Tokenizer, SpecialTokens), StageError> {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(train(&texts, vocab_size, min_frequency));
    });
    loop {
        match result.recv_timeout(std::time::Duration::from_millis(50)) {
            Ok(trained) => return trained,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !cancel.is_cancelled() => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                return Err(StageError::interrupted());
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(StageError::runtime(miette::miette!(
                    "BPE training stopped without a result"
                )));
            }
        }
    }
}

/// Every string field of every line of a JSONL dataset that a model reads
/// or writes.
fn read_texts(path: &Path, out: &mut Vec<String>, cancel: &Cancel) -> Result<(), StageError> {
    let file = std::fs::File::open(path)
        .map_err(|e| StageError::runtime(miette::miette!("cannot read {}: {e}", path.display())))?;
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        if n % 4096 == 0 && cancel.is_cancelled() {
            return Err(StageError::interrupted());
        }
        let line = line.map_err(|e| {
            StageError::runtime(miette::miette!("{}:{}: {e}", path.display(), n + 1))
        })?;
        let value: serde_json::Value = serde_json::from_str(&line).map_err(|e| {
            StageError::user(miette::miette!(
                help = "each line must be a JSON object",
                "{}:{}: {e}",
                path.display(),
                n + 1
            ))
        })?;
        for field in ["prompt", "response", "chosen", "rejected"] {
            if let Some(text) = value.get(field).and_then(|v| v.as_str()) {
                out.push(text.to_string());
            }
        }
    }
    Ok(())
}

/// Trains the tokenizer on `texts`.
pub fn train(
    texts: &[String],
    vocab_size: usize,
    min_frequency: u64,
) -> Result<(Tokenizer, SpecialTokens), StageError> {
    let fail =
        |e: tokenizers::Error| StageError::runtime(miette::miette!("BPE training failed: {e}"));
    let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
    let bpe_trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(min_frequency)
        .show_progress(false)
        .special_tokens(
            [BOS, EOS, PAD]
                .iter()
                .map(|t| AddedToken::from(*t, true))
                .collect(),
        )
        .initial_alphabet(alphabet)
        .build();
    let mut trainer = TrainerWrapper::from(bpe_trainer);
    let mut tok = Tokenizer::new(BPE::default());
    // Words are what lies between spaces, each with the space before it,
    // and BPE merges only within a word. GPT-2's regex would also cut
    // letters from digits, so a card like `8h` would never be one token.
    let words = Split::new(" ", SplitDelimiterBehavior::MergedWithNext, false)
        .map_err(|e| StageError::runtime(miette::miette!("bad pre-tokenizer: {e}")))?;
    let byte_level = ByteLevel::new(false, true, false);
    tok.with_pre_tokenizer(Some(Sequence::new(vec![words.into(), byte_level.into()])));
    tok.with_decoder(Some(byte_level));
    tok.train(&mut trainer, texts.iter()).map_err(fail)?;
    let id = |t: &str| {
        tok.token_to_id(t).ok_or_else(|| {
            StageError::runtime(miette::miette!("special token {t} missing after training"))
        })
    };
    let special = SpecialTokens {
        bos_token_id: id(BOS)?,
        eos_token_id: id(EOS)?,
        pad_token_id: id(PAD)?,
        vocab_size: tok.get_vocab_size(true),
    };
    let template = TemplateProcessing::builder()
        .try_single(format!("{BOS} $A"))
        .map_err(|e| StageError::runtime(miette::miette!("bad template: {e}")))?
        .special_tokens(vec![(BOS, special.bos_token_id)])
        .build()
        .map_err(|e| StageError::runtime(miette::miette!("bad template: {e}")))?;
    tok.with_post_processor(Some(template));
    Ok((tok, special))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn trained_tokenizer_round_trips_and_adds_bos() {
        let texts: Vec<String> = (0..200)
            .map(|i| {
                format!(
                    "6max BTN AhK{} | pot {} call 2 | fold, call, raise ->",
                    i % 7,
                    i
                )
            })
            .chain(["fold".into(), "call".into(), "raise 7.5".into()])
            .collect();
        let (tok, special) = train(&texts, 300, 2).unwrap();
        assert_eq!(special.vocab_size, tok.get_vocab_size(true));
        assert!(special.vocab_size > 259 && special.vocab_size <= 300);
        let text = "6max BTN AhK3 | pot 12 call 2 | fold ->";
        let enc = tok.encode(text, true).unwrap();
        assert_eq!(enc.get_ids()[0], special.bos_token_id);
        // Merges were learned: fewer tokens than bytes.
        assert!(enc.get_ids().len() < text.len());
        assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), text);
        // Unseen characters still encode (byte level).
        let odd = "é ♠ 漢";
        let enc = tok.encode(odd, false).unwrap();
        assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), odd);
    }

    #[test]
    fn every_card_of_a_compact_prompt_is_one_token() {
        use crate::poker::scenario::{SpotMix, indexed_spot};
        use crate::poker::spot::{PromptStyle, render};
        let mix = SpotMix {
            preflop: 0.3,
            heads_up: 0.5,
        };
        let prompts: Vec<(String, Vec<String>)> = (0..3000)
            .map(|i| {
                let (spot, _) = indexed_spot(5, i, &mix);
                let cards = spot
                    .hole
                    .iter()
                    .chain(&spot.board)
                    .map(|c| format!(" {c}"))
                    .collect();
                (render(&spot, PromptStyle::Compact), cards)
            })
            .collect();
        let texts: Vec<String> = prompts.iter().map(|(p, _)| p.clone()).collect();
        let (tok, _) = train(&texts, 512, 2).unwrap();
        for (prompt, cards) in prompts.iter().take(200) {
            let enc = tok.encode(prompt.as_str(), true).unwrap();
            let pieces: Vec<String> = enc
                .get_ids()
                .iter()
                .map(|&id| tok.decode(&[id], false).unwrap())
                .collect();
            for card in cards {
                assert!(pieces.contains(card), "`{card}` split in {pieces:?}");
            }
        }
    }
}
