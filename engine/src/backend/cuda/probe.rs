//! Checks, in order, everything `--device cuda` needs before cudarc touches
//! it: cudarc loads libraries lazily and panics when one is missing, so each
//! library is test-loaded first and its absence becomes a [`CudaError`].

use cudarc::driver::sys as drv;

use super::CudaError;

/// The oldest driver API version the bindings (cudarc's `cuda-13000`) and the
/// PTX our NVRTC emits are made for.
pub const MIN_DRIVER: i32 = 13000;

/// Versions found on this machine, as CUDA writes them (13000 = 13.0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Versions {
    pub driver: i32,
    pub nvrtc: i32,
}

/// `13020` -> `"13.2"`.
pub fn version_text(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// Everything short of creating a context: driver present and new enough, a
/// GPU with this ordinal, NVRTC and cuBLAS(Lt) loadable, NVRTC no newer than
/// the driver. Never panics.
pub fn probe(ordinal: usize) -> Result<Versions, CudaError> {
    // SAFETY: these only try to dlopen candidate library names.
    if !unsafe { drv::is_culib_present() } {
        return Err(CudaError::NoDriver);
    }
    cudarc::driver::result::init().map_err(|e| CudaError::NoGpu {
        detail: format!("cuInit: {e}"),
    })?;
    let mut driver = 0;
    // SAFETY: the driver library is loaded and initialised; valid out-pointer.
    let status = unsafe { drv::cuDriverGetVersion(&mut driver) };
    if status != drv::CUresult::CUDA_SUCCESS {
        return Err(CudaError::Driver {
            op: "reading the driver version".into(),
            status: cudarc::driver::DriverError(status),
        });
    }
    if driver < MIN_DRIVER {
        return Err(CudaError::DriverTooOld {
            found: version_text(driver),
        });
    }
    let count =
        cudarc::driver::result::device::get_count().map_err(CudaError::driver("counting GPUs"))?;
    let count = usize::try_from(count).unwrap_or(0);
    if count == 0 {
        return Err(CudaError::NoGpu {
            detail: "the driver reports 0 devices".into(),
        });
    }
    if ordinal >= count {
        return Err(CudaError::NoSuchGpu { ordinal, count });
    }
    if !poker_pipe_kernels::nvrtc_available() {
        return Err(CudaError::MissingLibrary {
            name: "libnvrtc.so (NVRTC, compiles the kernels at first use)",
            package: "cuda-nvrtc-13-0, or pip nvidia-cuda-nvrtc",
        });
    }
    // SAFETY: as above, dlopen probes only.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err(CudaError::MissingLibrary {
            name: "libcublas.so (cuBLAS, the matrix products)",
            package: "libcublas-13-0, or pip nvidia-cublas",
        });
    }
    // SAFETY: as above.
    if !unsafe { cudarc::cublaslt::sys::is_culib_present() } {
        return Err(CudaError::MissingLibrary {
            name: "libcublasLt.so (cuBLASLt, the matrix products)",
            package: "libcublas-13-0, or pip nvidia-cublas",
        });
    }
    let (major, minor) =
        poker_pipe_kernels::nvrtc_version().map_err(|_| CudaError::MissingLibrary {
            name: "libnvrtc.so (NVRTC; the one found did not answer its version query)",
            package: "cuda-nvrtc-13-0, or pip nvidia-cuda-nvrtc",
        })?;
    let nvrtc = major * 1000 + minor * 10;
    if nvrtc > driver {
        return Err(CudaError::NvrtcNewerThanDriver {
            nvrtc: version_text(nvrtc),
            driver: version_text(driver),
        });
    }
    Ok(Versions { driver, nvrtc })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_print_as_cuda_writes_them() {
        assert_eq!(version_text(13000), "13.0");
        assert_eq!(version_text(12080), "12.8");
        assert_eq!(version_text(13020), "13.2");
    }

    /// Without a usable GPU, opening one is an error whose rendering says what
    /// is missing and how to go on; with one, it opens.
    #[test]
    fn missing_cuda_is_a_diagnostic_with_a_way_out() -> Result<(), std::fmt::Error> {
        match super::super::CudaDevice::open(0) {
            Ok(device) => eprintln!("GPU present: {device:?}"),
            Err(error) => {
                let mut text = String::new();
                miette::GraphicalReportHandler::new_themed(
                    miette::GraphicalTheme::unicode_nocolor(),
                )
                .render_report(&mut text, &error)?;
                eprintln!("{text}");
                assert!(text.contains("cuda::"), "no diagnostic code in:\n{text}");
                assert!(
                    text.contains("--device cpu") || text.contains("LD_LIBRARY_PATH"),
                    "no way out offered in:\n{text}"
                );
            }
        }
        Ok(())
    }

    /// On a machine without the driver this is the error the user sees; with
    /// one, probing any ordinal past the device count must be an error too.
    #[test]
    fn probing_never_panics() {
        match probe(usize::MAX) {
            Err(CudaError::NoSuchGpu { ordinal, .. }) => assert_eq!(ordinal, usize::MAX),
            Err(other) => eprintln!("no usable CUDA here: {other}"),
            Ok(v) => panic!("ordinal usize::MAX accepted with {v:?}"),
        }
    }
}
