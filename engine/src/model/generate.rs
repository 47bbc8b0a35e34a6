//! Generation with a KV cache: prompts left-padded into one batch, one
//! prefill, then one token per step for every unfinished sequence.

use std::collections::HashMap;

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

/// The distinct prompts of `prompts`, in first-seen order, and for every
/// prompt the index of its distinct one.
fn distinct(prompts: &[Vec<u32>]) -> (Vec<Vec<u32>>, Vec<u32>) {
    let mut seen: HashMap<&[u32], u32> = HashMap::new();
    let mut unique = Vec::new();
    let copies = prompts
        .iter()
        .map(|p| {
            *seen.entry(p.as_slice()).or_insert_with(|| {
                unique.push(p.clone());
                (unique.len() - 1) as u32
            })
        })
        .collect();
    (unique, copies)
}

/// The generation loop; `uniforms(n)` gives the n sampling uniforms of one
/// step, one per sequence.
///
/// A prompt asked several times (GRPO's groups) is prefilled once and its
/// keys and values copied to each asking: no row of the model depends on
/// another row, so every sequence sees the same numbers as when each copy
/// was prefilled on its own, for the prefill's cost over the distinct
/// prompts only.
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
    let (unique, copies) = distinct(prompts);
    let prefill = Batch::left_padded(&unique, opts.pad_id);
    let mut cache = model.new_cache(be, unique.len(), prefill.seq + opts.max_new_tokens);
    let mut h = model.decode(be, &prefill, &mut cache);
    if unique.len() < n {
        cache.select(be, &copies);
        h = be.gather_rows(&h, &copies, model.cfg.hidden_size);
    }
    let mut batch = Batch {
        ids: Vec::new(),
        batch: n,
        seq: 1,
        pad: copies.iter().map(|&u| prefill.pad[u as usize]).collect(),
    };
    let mut done = vec![false; n];
    let vocab = model.cfg.vocab_size;
    for step in 0..opts.max_new_tokens {
        let logits = model.logits_of(be, &h, n);
        let next = be.sample(&logits, vocab, opts.sampling, &uniforms(n));
        for (b, &t) in next.iter().enumerate() {
            if !done[b] {
                out[b].push(t);
                done[b] = opts.eos.contains(&t);
            }
        }
        if done.iter().all(|&d| d) || step + 1 == opts.max_new_tokens {
            break;
        }
        batch.ids = next;
        h = model.decode(be, &batch, &mut cache);
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
        // Groups of one prompt asked several times, as GRPO asks them: the
        // prompt is prefilled once, and each asking still samples what it
        // samples alone.
        let asked = [0usize, 3, 0, 0, 4, 3, 0];
        let grouped: Vec<Vec<u32>> = asked.iter().map(|&i| prompts[i].clone()).collect();
        let streams: Vec<u64> = (0..asked.len()).map(|_| rng.random()).collect();
        let together = generate_per_prompt(&Cpu, &model, &grouped, &opts, &streams);
        for (j, (p, s)) in grouped.iter().zip(&streams).enumerate() {
            let alone = generate_per_prompt(&Cpu, &model, std::slice::from_ref(p), &opts, &[*s]);
            assert_eq!(together[j], alone[0], "asking {j}");
        }
        assert_ne!(together[0], together[2], "copies sample their own streams");
        let other: Vec<u64> = seeds.iter().map(|s| s ^ 1).collect();
        assert_ne!(
            generate_per_prompt(&Cpu, &model, &prompts, &opts, &other),
            all
        );
    }
}
