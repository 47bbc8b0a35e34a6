//! Gradient clipping by global norm, as torch.nn.utils.clip_grad_norm_.

use crate::backend::Backend;
use crate::model::param::Param;

/// The L2 norm of all gradients together.
pub fn global_grad_norm<'a, B: Backend + 'a>(
    be: &B,
    params: impl IntoIterator<Item = &'a Param<B>>,
) -> f64 {
    params
        .into_iter()
        .filter_map(|p| p.grad.as_ref())
        .map(|g| be.sum_squares(g))
        .sum::<f64>()
        .sqrt()
}

/// Scales all gradients by `max_norm / (norm + 1e-6)` when that is below 1
/// (torch's formula) and returns the norm before clipping, which training
/// logs as `grad_norm`.
pub fn clip_grad_norm<B: Backend>(be: &B, params: &mut [&mut Param<B>], max_norm: f64) -> f64 {
    let norm = global_grad_norm(be, params.iter().map(|p| &**p));
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for g in params.iter_mut().filter_map(|p| p.grad.as_mut()) {
            be.scale(g, coef as f32);
        }
    }
    norm
}
