//! Sampling against a CPU reference that draws the same random numbers.

use super::*;
use crate::backend::cuda::{SamplingParams, uniform01};

/// The kept set and the token the reference picks, in f64: the threshold
/// rules of sampling.cu, computed by sorting.
fn reference(row: &[f32], p: SamplingParams, r: u64) -> (Vec<bool>, Vec<f64>, f64) {
    let z: Vec<f64> = row
        .iter()
        .map(|&x| f64::from(x * (1.0 / p.temperature)))
        .collect();
    let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut sorted = z.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let mut floor = f64::NEG_INFINITY;
    if p.top_k > 0 && (p.top_k as usize) < z.len() {
        floor = sorted[p.top_k as usize - 1];
    }
    let kept_mass = |f: f64| {
        z.iter()
            .filter(|&&x| x >= f)
            .map(|x| (x - max).exp())
            .sum::<f64>()
    };
    if p.top_p > 0.0 && p.top_p < 1.0 {
        let need = f64::from(p.top_p) * kept_mass(floor);
        let nucleus = sorted
            .iter()
            .copied()
            .filter(|&t| t >= floor)
            .find(|&t| kept_mass(t) >= need);
        floor = floor.max(nucleus.unwrap_or(floor));
    }
    let kept: Vec<bool> = z.iter().map(|&x| x >= floor).collect();
    let mut cdf = Vec::new();
    let mut run = 0.0;
    for (x, k) in z.iter().zip(&kept) {
        if *k {
            run += (x - max).exp();
        }
        cdf.push(run);
    }
    let u = f64::from(uniform01(p.seed, p.counter + r)) * run;
    (kept, cdf, u)
}

#[test]
fn greedy_picks_the_first_maximum() {
    let Some(dev) = gpu("sample greedy") else {
        return;
    };
    let mut rng = rng("sample greedy");
    let (rows, vocab) = (4, 50_000);
    let mut logits = random_f32(&mut rng, rows * vocab, 5.0);
    logits[vocab + 7] = 100.0;
    logits[vocab + 9] = 100.0;
    let mut out = dev.upload(&vec![-1i32; rows]).unwrap();
    let p = SamplingParams {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed: 1,
        counter: 0,
    };
    dev.sample_tokens(rows, vocab, p, &dev.upload(&logits).unwrap(), &mut out)
        .unwrap();
    let got = dev.download(&out).unwrap();
    for (r, &tok) in got.iter().enumerate() {
        let row = &logits[r * vocab..][..vocab];
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let first = row.iter().position(|&x| x == max).unwrap();
        assert_eq!(tok as usize, first, "row {r}");
    }
}

#[test]
fn sampling_draws_the_reference_token() {
    let Some(dev) = gpu("sample") else { return };
    let mut rng = rng("sample");
    let (rows, vocab) = (6, 32_000);
    for (temperature, top_k, top_p) in [
        (1.0, 0, 1.0),
        (0.7, 50, 1.0),
        (1.3, 0, 0.9),
        (0.8, 200, 0.5),
    ] {
        let logits = random_f32(&mut rng, rows * vocab, 6.0);
        let p = SamplingParams {
            temperature,
            top_k,
            top_p,
            seed: rng.random(),
            counter: rng.random_range(0..1 << 40),
        };
        let mut out = dev.upload(&vec![-1i32; rows]).unwrap();
        dev.sample_tokens(rows, vocab, p, &dev.upload(&logits).unwrap(), &mut out)
            .unwrap();
        let got = dev.download(&out).unwrap();
        for (r, &tok) in got.iter().enumerate() {
            let (kept, cdf, u) = reference(&logits[r * vocab..][..vocab], p, r as u64);
            let t = usize::try_from(tok).unwrap();
            assert!(kept[t], "{p:?} row {r}: token {t} is outside the kept set");
            // The token's slice of the CDF holds u, up to f32 summation error.
            let total = cdf[vocab - 1];
            let lo = if t == 0 { 0.0 } else { cdf[t - 1] };
            let slack = 1e-4 * total;
            assert!(
                lo - slack <= u && u <= cdf[t] + slack,
                "{p:?} row {r}: token {t} covers [{lo}, {}], u = {u}",
                cdf[t]
            );
        }
        eprintln!("  {p:?}: ok");
    }
}
