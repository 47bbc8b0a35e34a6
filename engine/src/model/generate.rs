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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::backend::Cpu;
    use crate::model::config::LlamaConfig;

    /// With a stream per prompt, a prompt's sampled tokens are the same
    /// whether it is generated alone, with one neighbour or with all of
    /// them (what lets PPO generate in micro-batches of any size), and
    /// they differ between seeds.
    #[test]
    fn per_prompt_streams_do_not_depend_on_the_batch() {
        let cfg = LlamaConfig::parse(
            r#"{"vocab_size": 40, "hidden_size": 16, "intermediate_size": 24,
                "num_hidden_layers": 2, "num_attention_heads": 2,
                "num_key_value_heads": 1, "rms_norm_eps": 1e-5}"#,
            std::path::Path::new("config.json"),
        )
        .unwrap();
        let model = Llama::random(&Cpu, cfg, 4).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let prompts: Vec<Vec<u32>> = (0..5)
            .map(|i| (0..2 + i).map(|_| rng.random_range(1..40)).collect())
            .collect();
        let seeds: Vec<u64> = (0..5).map(|_| rng.random()).collect();
        let opts = GenerateOptions {
            max_new_tokens: 6,
            sampling: Sampling {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
            },
            seed: 0,
            eos: Vec::new(),
            pad_id: 0,
        };
        let all = generate_per_prompt(&Cpu, &model, &prompts, &opts, &seeds);
        assert!(all.iter().all(|r| r.len() == 6));
        for size in [1, 2, 3] {
            let mut pieces = Vec::new();
            for (p, s) in prompts.chunks(size).zip(seeds.chunks(size)) {
                pieces.extend(generate_per_prompt(&Cpu, &model, p, &opts, s));
            }
            assert_eq!(pieces, all, "micro-batch {size}");
        }
        let other: Vec<u64> = seeds.iter().map(|s| s ^ 1).collect();
        assert_ne!(
            generate_per_prompt(&Cpu, &model, &prompts, &opts, &other),
            all
        );
    }
}
