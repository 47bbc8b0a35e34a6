//! Where a command's model runs: the one place `--device` becomes a backend
//! for the commands that load a model (`eval`, `arena`, `bench train`).

use crate::backend::{Device, Dtype, OnBackend, with_backend};
use crate::error::Failure;

/// Runs a command's `work` on the backend `device` names, with frozen
/// weights stored as `dtype`. A device that cannot be opened (no NVIDIA
/// driver, no such GPU) is the user's to fix: exit code 1 with the
/// backend's own message and hint, as `bench gpu`.
pub fn on_device<T, W>(device: Device, dtype: Dtype, work: W) -> Result<T, Failure>
where
    W: OnBackend<Output = Result<T, Failure>>,
{
    with_backend(device, dtype, work).map_err(|e| Failure::user(miette::Report::new(e)))?
}
