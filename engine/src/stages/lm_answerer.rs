//! A language model that answers prompts: the model seat of the arena
//! and the eval stage's answers. Answers are greedy by default and come in
//! batches of [`BATCH`] prompts through one prefill and one decode step per
//! token with the KV cache; a prompt's answer does not depend on which
//! prompts share its batch (`tests/tests/arena_batched.rs`), so batching
//! changes the speed of play, never its result.

use std::path::Path;

use crate::backend::{Backend, Sampling};
use crate::graph::{Cancel, StageError};
use crate::model::generate::{GenerateOptions, generate, generate_per_prompt};
use crate::model::llama::Llama;
use crate::model::load::load_dir;
use crate::model::lora;
use crate::model::tokenizer::Tokenizer;
use crate::train::dataset;

/// Prompts generated together: one left-padded batch.
pub const BATCH: usize = 16;

/// Token ids of a prompt and of the model's answer to it.
pub type PromptAndAnswer = (Vec<u32>, Vec<u32>);

/// A language model answering prompts greedily, on the thread that holds
/// it ([`super::model_seats`] seats it at the arena's table).
pub struct LmAnswerer<'a, B: Backend> {
    be: &'a B,
    model: Llama<B>,
    tokenizer: Tokenizer,
    max_new_tokens: usize,
    /// Checked between batches: a stage's Ctrl-C.
    cancel: Cancel,
}

impl<'a, B: Backend> LmAnswerer<'a, B> {
    /// Loads a model folder (adapter merged into the weights for speed),
    /// prompted in its chat template if it has one and `chat_template` is
    /// set.
    pub fn load(
        be: &'a B,
        dir: &Path,
        max_new_tokens: usize,
        chat_template: bool,
    ) -> Result<Self, StageError> {
        let mut loaded =
            load_dir(be, dir).map_err(|e| StageError::runtime(miette::Report::new(e)))?;
        lora::set_merged(be, &mut loaded.model, true);
        loaded.tokenizer.keep_chat_template(chat_template);
        Ok(LmAnswerer {
            be,
            model: loaded.model,
            tokenizer: loaded.tokenizer,
            max_new_tokens,
            cancel: Cancel::new(),
        })
    }

    /// Makes [`LmAnswerer::generate_ids`] and [`LmAnswerer::sample_ids`]
    /// end with [`StageError::interrupted`] between batches once `cancel`
    /// is set.
    pub fn stop_on(&mut self, cancel: Cancel) {
        self.cancel = cancel;
    }

    fn check_cancel(&self) -> Result<(), StageError> {
        if self.cancel.is_cancelled() {
            Err(StageError::interrupted())
        } else {
            Ok(())
        }
    }

    fn options(&self) -> GenerateOptions {
        let cfg = &self.model.cfg;
        GenerateOptions {
            max_new_tokens: self.max_new_tokens,
            sampling: Sampling::GREEDY,
            seed: 0,
            eos: cfg.eos_token_ids.clone(),
            pad_id: cfg
                .pad_token_id
                .or_else(|| cfg.eos_token_ids.first().copied())
                .unwrap_or(0),
        }
    }

    /// Prompt and response token ids of each prompt (greedy answers).
    pub fn generate_ids(&self, prompts: &[String]) -> Result<Vec<PromptAndAnswer>, StageError> {
        let ids = self.encode_all(prompts)?;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH) {
            self.check_cancel()?;
            let resp = generate(self.be, &self.model, chunk, &self.options());
            out.extend(chunk.iter().cloned().zip(resp));
        }
        Ok(out)
    }

    /// `samples` answers to each prompt, sampled at `temperature` (0:
    /// greedy): sample `k` of prompt `i` has its own seeded stream, so the
    /// answers do not depend on how prompts are batched.
    pub fn sample_ids(
        &self,
        prompts: &[String],
        temperature: f64,
        samples: u32,
        seed: u64,
    ) -> Result<Vec<PromptAndAnswer>, StageError> {
        if temperature == 0.0 {
            return self.generate_ids(prompts);
        }
        let ids = self.encode_all(prompts)?;
        let opts = GenerateOptions {
            sampling: Sampling {
                temperature: temperature as f32,
                top_k: 0,
                top_p: 1.0,
            },
            ..self.options()
        };
        let mut out = Vec::with_capacity(ids.len() * samples as usize);
        for k in 0..u64::from(samples) {
            for (first, chunk) in (0u64..).step_by(BATCH).zip(ids.chunks(BATCH)) {
                self.check_cancel()?;
                let seeds: Vec<u64> = (first..first + chunk.len() as u64)
                    .map(|i| seed ^ (k << 32 | i).wrapping_mul(0x9E37_79B9_7F4A_7C15))
                    .collect();
                let resp = generate_per_prompt(self.be, &self.model, chunk, &opts, &seeds);
                out.extend(chunk.iter().cloned().zip(resp));
            }
        }
        Ok(out)
    }

    /// Token ids of each prompt, as generation starts from them (in the
    /// model's chat template when it has one).
    fn encode_all(&self, prompts: &[String]) -> Result<Vec<Vec<u32>>, StageError> {
        prompts
            .iter()
            .map(|p| dataset::encode_prompt(&self.tokenizer, p))
            .collect::<Result<_, _>>()
            .map_err(|e| StageError::runtime(miette::miette!("{e}")))
    }

    /// The answer texts of `prompts`.
    pub fn answer_all(&self, prompts: &[String]) -> Result<Vec<String>, StageError> {
        self.decode_answers(&self.generate_ids(prompts)?)
    }

    /// The answer texts of generated ids.
    pub fn decode_answers(&self, generated: &[PromptAndAnswer]) -> Result<Vec<String>, StageError> {
        generated
            .iter()
            .map(|(_, r)| {
                self.tokenizer
                    .decode(r)
                    .map_err(|e| StageError::runtime(miette::Report::new(e)))
            })
            .collect()
    }

    /// One answer; a tokenizer failure is an empty (illegal) answer, which
    /// the arena counts.
    pub fn answer(&self, prompt: &str) -> String {
        self.answer_all(&[prompt.to_string()])
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_default()
    }

    /// The answers to `prompts`, generated together; a prompt that cannot
    /// be encoded gets an empty (illegal) answer and costs the others
    /// nothing.
    pub fn answer_batch(&self, prompts: &[String]) -> Vec<String> {
        self.answer_all(prompts)
            .unwrap_or_else(|_| prompts.iter().map(|p| self.answer(p)).collect())
    }
}
