//! Where a training or evaluation stage runs: the one place a stage's
//! device (`--device`, `cpu` or `cuda[:N]`) becomes a backend. The stage's
//! work is written once over [`Backend`]; [`run_on_device`] opens the
//! device through [`with_backend`] and runs it there.

use crate::backend::meter::PeakWindow;
use crate::backend::{Backend, Device, Dtype, OnBackend, with_backend};
use crate::graph::{ExecSettings, Outcome, StageContext, StageError, StageKind, StageResult};
use crate::model::memory::{Breakdown, StageMemory};

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
        let window = PeakWindow::open();
        be.reset_device_peak();
        let device_base = be.device_bytes().map(|d| d.current);
        let outcome = self.kind.run_on(be, self.params, self.ctx)?;
        if outcome == Outcome::Done {
            let planned = (be.device() == Device::Cpu).then(|| {
                let exec = ExecSettings {
                    ran: Some(self.ctx.ran),
                    ..self.ctx.exec.clone()
                };
                self.kind.memory(self.params, &exec)
            });
            write_memory(
                be,
                self.kind.dtype(self.params),
                (&window, device_base),
                planned.as_ref().and_then(StageMemory::breakdown),
                self.ctx,
            )?;
        }
        Ok(outcome)
    }
}

/// `memory.json` beside a finished stage's outputs: the most host memory
/// the stage's work held at once (counted from when the backend opened, so
/// the model, its training state and the data; on the CPU that is every
/// buffer the backend holds), the most device memory (on a GPU, what its
/// memory pool held above `device_base`, where the stage began) and, on the
/// CPU, the memory planner's figure for the same run (the CPU backend, the
/// preset's micro-batch, the prompts it rolled out), so that every run
/// checks the planner. It varies from run to run (a resumed stage counts
/// only its last part), so it stays out of `summary.json` and
/// `metrics.jsonl`, which a resume reproduces byte for byte. Where a GPU's
/// driver allocates outside a pool, the device figure is null.
fn write_memory<B: Backend>(
    be: &B,
    dtype: Dtype,
    (window, device_base): (&PeakWindow, Option<u64>),
    planned: Option<&Breakdown>,
    ctx: &StageContext,
) -> Result<(), StageError> {
    let peak_device = match (be.device(), be.device_bytes(), device_base) {
        (Device::Cpu, _, _) => Some(window.bytes()),
        (_, Some(now), Some(base)) => Some(now.peak.saturating_sub(base)),
        _ => None,
    };
    let json = serde_json::json!({
        "device": be.device().to_string(),
        "dtype": dtype,
        "peak_host_bytes": window.bytes(),
        "peak_device_bytes": peak_device,
        "planned_bytes": planned.map(Breakdown::total),
        "planned": planned,
    });
    let path = ctx.out_dir().join("memory.json");
    std::fs::write(&path, format!("{json:#}\n"))
        .map_err(|e| StageError::runtime(miette::miette!("cannot write {}: {e}", path.display())))
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
