//! Where a training or evaluation stage runs: the one place a stage's
//! device (`--device`, `cpu` or `cuda[:N]`) becomes a backend. The stage's
//! work is written once over [`Backend`]; [`run_on_device`] opens the
//! device through [`with_backend`] and runs it there.

use crate::backend::{Backend, Dtype, OnBackend, with_backend};
use crate::graph::{StageContext, StageError, StageKind, StageResult};

/// A stage kind whose work runs on any backend.
pub trait RunOnBackend: StageKind {
    /// How the stage stores its frozen weights (its `dtype`, else the
    /// pipeline's `model.dtype`, else f32).
    fn dtype(&self, params: &Self::Params) -> Dtype;

    fn run_on<B: Backend>(
        &self,
        be: &B,
        params: &Self::Params,
        ctx: &mut StageContext,
    ) -> StageResult;
}

/// One stage's work, waiting for its backend.
struct Work<'a, K: RunOnBackend> {
    kind: &'a K,
    params: &'a K::Params,
    ctx: &'a mut StageContext,
}

impl<K: RunOnBackend> OnBackend for Work<'_, K> {
    type Output = StageResult;

    fn run<B: Backend>(self, be: &B) -> StageResult {
        self.kind.run_on(be, self.params, self.ctx)
    }
}

/// Runs a stage on the backend of its context's device. A device that
/// cannot be opened (no NVIDIA driver, no such GPU) is the user's to fix:
/// exit code 1 with the backend's own message and hint, as `bench gpu`.
pub fn run_on_device<K: RunOnBackend>(
    kind: &K,
    params: &K::Params,
    ctx: &mut StageContext,
) -> StageResult {
    let device = ctx.device;
    let dtype = kind.dtype(params);
    with_backend(device, dtype, Work { kind, params, ctx })
        .map_err(|e| StageError::user(miette::Report::new(e)))?
}
