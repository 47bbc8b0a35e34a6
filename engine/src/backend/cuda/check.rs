//! Argument checks shared by the launch wrappers: a kernel trusts its sizes,
//! so every wrapper proves them against the buffers before launching.

use super::CudaError;

pub(crate) fn need(
    kernel: &'static str,
    ok: bool,
    detail: impl FnOnce() -> String,
) -> Result<(), CudaError> {
    if ok {
        Ok(())
    } else {
        Err(CudaError::BadLaunch {
            kernel,
            detail: detail(),
        })
    }
}

/// `buffer` must hold exactly `expected` elements.
pub(crate) fn len_is(
    kernel: &'static str,
    buffer: &str,
    actual: usize,
    expected: usize,
) -> Result<(), CudaError> {
    need(kernel, actual == expected, || {
        format!("`{buffer}` holds {actual} elements, the shape needs {expected}")
    })
}

/// A size as the kernel's `int` parameter.
pub(crate) fn int(kernel: &'static str, name: &str, value: usize) -> Result<i32, CudaError> {
    i32::try_from(value).map_err(|_| CudaError::BadLaunch {
        kernel,
        detail: format!("`{name}` = {value} does not fit the kernel's 32-bit int"),
    })
}

/// A count as the kernel's `long long` parameter.
pub(crate) fn long(kernel: &'static str, name: &str, value: usize) -> Result<i64, CudaError> {
    i64::try_from(value).map_err(|_| CudaError::BadLaunch {
        kernel,
        detail: format!("`{name}` = {value} does not fit a 64-bit int"),
    })
}

/// A grid dimension: at least 1, at most `cap`.
pub(crate) fn grid(kernel: &'static str, blocks: usize, cap: u32) -> Result<u32, CudaError> {
    let blocks = u32::try_from(blocks.max(1)).map_err(|_| CudaError::BadLaunch {
        kernel,
        detail: format!("{blocks} blocks exceed the grid limit"),
    })?;
    Ok(blocks.min(cap))
}

/// The y and z grid dimensions are limited to 65535.
pub(crate) fn grid_yz(kernel: &'static str, name: &str, value: usize) -> Result<u32, CudaError> {
    need(kernel, (1..=65535).contains(&value), || {
        format!("`{name}` = {value} must be in 1..=65535 (a grid dimension)")
    })?;
    Ok(value as u32)
}
