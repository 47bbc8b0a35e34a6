//! AdamW and token sampling.

use rayon::prelude::*;

use crate::backend::{AdamWStep, Sampling};

/// torch.optim.AdamW (single-tensor path), operation for operation.
pub fn adamw(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], h: AdamWStep) {
    let bc1 = 1.0 - h.beta1.powi(h.step as i32);
    let bc2_sqrt = (1.0 - h.beta2.powi(h.step as i32)).sqrt();
    let step_size = h.lr / bc1;
    let decay = 1.0 - h.lr * h.weight_decay;
    param
        .par_iter_mut()
        .zip(grad)
        .zip(m.par_iter_mut())
        .zip(v.par_iter_mut())
        .for_each(|(((p, &g), m), v)| {
            *p *= decay;
            *m += (g - *m) * (1.0 - h.beta1);
            *v = *v * h.beta2 + (1.0 - h.beta2) * g * g;
            let denom = v.sqrt() / bc2_sqrt + h.eps;
            *p -= step_size * (*m / denom);
        });
}

pub fn sample(logits: &[f32], vocab: usize, how: Sampling, uniforms: &[f32]) -> Vec<u32> {
    logits
        .par_chunks(vocab)
        .zip(uniforms)
        .map(|(row, &u)| sample_row(row, how, u))
        .collect()
}

fn sample_row(row: &[f32], how: Sampling, u: f32) -> u32 {
    if how.temperature <= 0.0 {
        return argmax(row);
    }
    let mut order: Vec<u32> = (0..row.len() as u32).collect();
    // Descending logit, ties by lower id: a stable sort keeps id order.
    order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]));
    let max = row[order[0] as usize];
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| (((row[i as usize] - max) / how.temperature) as f64).exp())
        .collect();
    if how.top_k > 0 {
        probs.truncate(how.top_k);
    }
    let total: f64 = probs.iter().sum();
    if how.top_p < 1.0 {
        let mut cum = 0.0;
        let keep = probs
            .iter()
            .position(|p| {
                cum += p / total;
                cum >= how.top_p as f64
            })
            .map_or(probs.len(), |i| i + 1);
        probs.truncate(keep);
    }
    let total: f64 = probs.iter().sum();
    let target = u as f64 * total;
    let mut cum = 0.0;
    for (i, p) in probs.iter().enumerate() {
        cum += p;
        if cum > target {
            return order[i];
        }
    }
    order[probs.len() - 1]
}

/// The id of the largest logit, the lowest id among ties: the token the
/// sampling path's sorted order puts first, found in one pass (greedy
/// decoding of a 49,152-token vocabulary sorted it per token).
fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in row.iter().enumerate().skip(1) {
        if x.total_cmp(&row[best]).is_gt() {
            best = i;
        }
    }
    best as u32
}
