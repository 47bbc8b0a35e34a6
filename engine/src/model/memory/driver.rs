//! What the CUDA driver says about a real card.

/// Total memory of CUDA device `ordinal` in bytes, asked of the driver after
/// the same probe `--device cuda` runs (so a missing driver is an error, not
/// a panic).
pub fn gpu_total_memory(ordinal: usize) -> Result<u64, crate::backend::cuda::CudaError> {
    use crate::backend::cuda::{CudaError, probe};
    probe(ordinal)?;
    let device = cudarc::driver::result::device::get(i32::try_from(ordinal).unwrap_or(i32::MAX))
        .map_err(|status| CudaError::Driver {
            op: "opening the device to read its memory".into(),
            status,
        })?;
    // SAFETY: the driver is loaded and initialised by `probe`, and `device`
    // is a valid handle it returned.
    let bytes = unsafe { cudarc::driver::result::device::total_mem(device) }.map_err(|status| {
        CudaError::Driver {
            op: "reading the device's total memory".into(),
            status,
        }
    })?;
    Ok(bytes as u64)
}
