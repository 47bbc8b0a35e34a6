//! Where a command's model runs: the one place `--device` becomes a backend
//! for the commands that load a model (`eval`, `arena`, `bench train`).

use crate::backend::{Device, OnBackend, with_backend};
use crate::error::Failure;

/// Runs a command's `work` on the backend `device` names. A device that
/// cannot be opened (no NVIDIA driver, no such GPU) is the user's to fix:
/// exit code 1 with the backend's own message and hint, as `bench gpu`.
pub fn on_device<T, W>(device: Device, work: W) -> Result<T, Failure>
where
    W: OnBackend<Output = Result<T, Failure>>,
{
    with_backend(device, work).map_err(|e| Failure::user(miette::Report::new(e)))?
}
