//! Generation with a KV cache: prompts left-padded into one batch, one
//! prefill, then one token per step for every unfinished sequence.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::backend::{Backend, Sampling};

use super::batch::Batch;
use super::llama::Llama;

/// How to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Seeds the uniforms of [`Backend::sample`]: same seed, same tokens.
    pub seed: u64,
    /// A sequence stops after emitting any of these (kept in its output).
    pub eos: Vec<u32>,
    /// Fills the left padding; never attended to.
    pub pad_id: u32,
}

/// The new tokens of each prompt, in prompt order.
pub fn generate<B: Backend>(
    be: &B,
    model: &Llama<B>,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
) -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    sample_steps(be, model, prompts, opts, |n| {
        (0..n).map(|_| rng.random()).collect()
    })
}

/// [`generate`] with one random stream per prompt, seeded by `seeds`
/// (`opts.seed` is unused): a sequence's tokens then do not depend on which
/// other prompts share its batch, so PPO can generate a few prompts at a
/// time, as the memory preset allows, with the same results.
pub fn generate_per_prompt<B: Backend>(
    be: &B,
    model: &Llama<B>,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    seeds: &[u64],
) -> Vec<Vec<u32>> {
    let mut rngs: Vec<ChaCha8Rng> = seeds
        .iter()
        .map(|&s| ChaCha8Rng::seed_from_u64(s))
        .collect();
    sample_steps(be, model, prompts, opts, |_| {
        rngs.iter_mut().map(|rng| rng.random()).collect()
    })
}

/// The generation loop; `uniforms(n)` gives the n sampling uniforms of one
/// step, one per sequence.
fn sample_steps<B: Backend>(
    be: &B,
    model: &Llama<B>,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    mut uniforms: impl FnMut(usize) -> Vec<f32>,
) -> Vec<Vec<u32>> {
    let n = prompts.len();
    let mut out = vec![Vec::new(); n];
    if n == 0 || opts.max_new_tokens == 0 {
        return out;
    }
    let mut batch = Batch::left_padded(prompts, opts.pad_id);
    let mut cache = model.new_cache(be, n, batch.seq + opts.max_new_tokens);
    let mut done = vec![false; n];
    let vocab = model.cfg.vocab_size;
    for _ in 0..opts.max_new_tokens {
        let h = model.decode(be, &batch, &mut cache);
        let logits = model.logits_of(be, &h, n);
        let next = be.sample(&logits, vocab, opts.sampling, &uniforms(n));
        for (b, &t) in next.iter().enumerate() {
            if !done[b] {
                out[b].push(t);
                done[b] = opts.eos.contains(&t);
            }
        }
        if done.iter().all(|&d| d) {
            break;
        }
        batch = Batch {
            ids: next,
            batch: n,
            seq: 1,
            pad: batch.pad,
        };
    }
    out
}
