//! The CUDA backend's foundation: probing for the driver and libraries,
//! device context, NVRTC compile with an on-disk PTX cache, typed launch
//! wrappers for every kernel in `kernels/`, and cuBLAS GEMMs (bf16 in, f32
//! accumulation), and [`CudaBackend`], the Backend trait over them.
//!
//! Buffers are cudarc slices: `CudaSlice<bf16>` for weights and activations,
//! `CudaSlice<f32>` for master weights, optimizer state and statistics,
//! `CudaSlice<i32>` for token ids, positions and lengths.

mod attention;
mod backend;
mod check;
mod device;
mod error;
mod gemm;
mod layers;
mod loss;
mod optim;
mod probe;
mod ptx_cache;
mod sampling;
mod tensor;
#[cfg(test)]
mod tests;

pub use attention::{AttentionShape, DecodeShape};
pub use backend::{CE_CHUNK_VALUES, CudaBackend, CudaBuf};
pub use device::CudaDevice;
pub use error::CudaError;
pub use gemm::GemmOut;
pub use gemm::Transpose;
pub use half::bf16;
pub use layers::{Llama3Scaling, rope_inv_freq};
pub use optim::{AdamGrad, GradRef};
pub use probe::{MIN_DRIVER, Versions, probe, version_text};
pub use ptx_cache::{CACHE_ENV, PtxCache, PtxOrigin, ptx_for};
pub use sampling::{SamplingParams, uniform01};
pub use tensor::RowBlocks;
