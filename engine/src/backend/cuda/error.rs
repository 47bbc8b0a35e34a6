//! What can go wrong on the CUDA path, as diagnostics a user can act on.
//! Missing libraries and hardware are ordinary errors here: cudarc would
//! panic on them, so `probe` checks before cudarc is ever asked.

use std::path::PathBuf;

use cudarc::cublas::result::CublasError;
use cudarc::driver::DriverError;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum CudaError {
    #[error("--device cuda needs an NVIDIA driver; none found (libcuda.so could not be loaded)")]
    #[diagnostic(
        code(cuda::no_driver),
        help(
            "install the NVIDIA driver (R580 or newer, CUDA 13) on a machine with an NVIDIA GPU, \
             or run with --device cpu"
        )
    )]
    NoDriver,

    #[error("the NVIDIA driver supports CUDA {found}; poker-pipe needs CUDA 13.0 or newer")]
    #[diagnostic(
        code(cuda::driver_too_old),
        help("update the NVIDIA driver to R580 or newer, or run with --device cpu")
    )]
    DriverTooOld { found: String },

    #[error("--device cuda found the NVIDIA driver but no usable GPU ({detail})")]
    #[diagnostic(
        code(cuda::no_gpu),
        help("check `nvidia-smi` and CUDA_VISIBLE_DEVICES, or run with --device cpu")
    )]
    NoGpu { detail: String },

    #[error("--device cuda:{ordinal} does not exist; this machine has {count} GPU(s)")]
    #[diagnostic(
        code(cuda::no_such_gpu),
        help("GPUs are numbered from 0; use --device cuda:0 .. cuda:{last}", last = count.saturating_sub(1))
    )]
    NoSuchGpu { ordinal: usize, count: usize },

    #[error("{name} could not be loaded; the CUDA backend needs it")]
    #[diagnostic(
        code(cuda::missing_library),
        help(
            "install the CUDA 13 runtime libraries ({package}) and make sure the folder holding \
             {name} is on LD_LIBRARY_PATH"
        )
    )]
    MissingLibrary {
        name: &'static str,
        package: &'static str,
    },

    #[error(
        "NVRTC {nvrtc} is newer than the driver's CUDA {driver}: the driver cannot load its PTX"
    )]
    #[diagnostic(
        code(cuda::nvrtc_newer_than_driver),
        help(
            "update the NVIDIA driver, or put an NVRTC no newer than CUDA {driver} first on LD_LIBRARY_PATH"
        )
    )]
    NvrtcNewerThanDriver { nvrtc: String, driver: String },

    #[error("this GPU is {arch}; NVRTC {nvrtc} compiles for sm_{oldest} and newer only")]
    #[diagnostic(
        code(cuda::unsupported_gpu),
        help("use a GPU of compute capability 7.5 or newer, or run with --device cpu")
    )]
    UnsupportedGpu {
        arch: String,
        nvrtc: String,
        oldest: u32,
    },

    #[error("kernel module `{module}` failed to compile for {arch}")]
    #[diagnostic(
        code(cuda::kernel_compile),
        help("this is a bug in poker-pipe's kernels; please report it with this log:\n{log}")
    )]
    KernelCompile {
        module: &'static str,
        arch: String,
        log: String,
    },

    /// The status is shown by its name: formatting `DriverError` itself
    /// asks the driver library for a description, which panics where the
    /// library is absent.
    #[error("CUDA driver call failed while {op}: {:?}", status.0)]
    #[diagnostic(code(cuda::driver), help("{}", driver_hint(status)))]
    Driver { op: String, status: DriverError },

    #[error("cuBLAS call failed while {op}: {source}")]
    #[diagnostic(
        code(cuda::cublas),
        help("an out-of-memory or invalid-value status usually means a smaller micro_batch helps")
    )]
    Blas {
        op: String,
        #[source]
        source: CublasError,
    },

    #[error("kernel `{kernel}` called with invalid arguments: {detail}")]
    #[diagnostic(
        code(cuda::bad_launch),
        help("the caller passed buffers or sizes that do not match; this is a bug in poker-pipe")
    )]
    BadLaunch {
        kernel: &'static str,
        detail: String,
    },

    #[error("PTX cache folder {path} is unusable: {source}")]
    #[diagnostic(
        code(cuda::ptx_cache),
        help("set POKER_PIPE_PTX_CACHE to a writable folder")
    )]
    PtxCache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn driver_hint(error: &DriverError) -> &'static str {
    use cudarc::driver::sys::CUresult;
    match error.0 {
        CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
            "the GPU ran out of memory: choose a memory preset with a smaller micro_batch, or \
             turn activation checkpointing on"
        }
        CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION => {
            "the driver is older than the NVRTC that compiled the kernels: update the driver"
        }
        CUresult::CUDA_ERROR_NO_DEVICE => "no GPU is visible: check CUDA_VISIBLE_DEVICES",
        _ => "run with CUDA_LAUNCH_BLOCKING=1 to find the failing call, and report it",
    }
}

impl CudaError {
    pub(crate) fn driver(op: impl Into<String>) -> impl FnOnce(DriverError) -> CudaError {
        let op = op.into();
        move |status| CudaError::Driver { op, status }
    }

    /// Whether the driver answered `CUDA_ERROR_OUT_OF_MEMORY`.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(
            self,
            CudaError::Driver { status, .. }
                if status.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY
        )
    }

    pub(crate) fn blas(op: impl Into<String>) -> impl FnOnce(CublasError) -> CudaError {
        let op = op.into();
        move |source| CudaError::Blas { op, source }
    }
}
