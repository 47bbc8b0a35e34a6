//! Matrix products through cuBLAS: bf16 operands, f32 accumulation
//! (CUBLAS_COMPUTE_32F), output in bf16 or f32. Shapes are given row-major,
//! as the model stores them (a Linear weight is [out, in]); cuBLAS is
//! column-major, so C = op(A) op(B) is issued as C^T = op(B)^T op(A)^T.
//!
//! The three LLaMA forms, for x [M, K], weight w [N, K], y [M, N]:
//!   forward      y  = x  w^T   gemm(x, No, w, Yes)
//!   input grad   dx = dy w     gemm(dy, No, w, No)
//!   weight grad  dw = dy^T x   gemm(dy, Yes, x, No)

use std::ffi::c_void;

use cudarc::cublas::result::gemm_ex;
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::driver::{DevicePtr, DevicePtrMut, DeviceRepr};
use half::bf16;

use super::check::{int, len_is, need};
use super::{CudaDevice, CudaError};

/// Whether an operand is used as stored or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transpose {
    No,
    Yes,
}

/// Output element types cuBLAS writes for us.
pub trait GemmOut: DeviceRepr {
    const TYPE: cudaDataType;
}

impl GemmOut for bf16 {
    const TYPE: cudaDataType = cudaDataType::CUDA_R_16BF;
}

impl GemmOut for f32 {
    const TYPE: cudaDataType = cudaDataType::CUDA_R_32F;
}

impl CudaDevice {
    /// c[m, n] = alpha * op(a)[m, k] * op(b)[k, n] + beta * c, row-major.
    /// `a` is stored [m, k] (No) or [k, m] (Yes); `b` is [k, n] or [n, k].
    #[allow(clippy::too_many_arguments)]
    pub fn gemm<C: GemmOut>(
        &self,
        (m, n, k): (usize, usize, usize),
        a: &impl DevicePtr<bf16>,
        trans_a: Transpose,
        b: &impl DevicePtr<bf16>,
        trans_b: Transpose,
        c: &mut impl DevicePtrMut<C>,
        alpha: f32,
        beta: f32,
    ) -> Result<(), CudaError> {
        let op = "gemm";
        need(op, m > 0 && n > 0 && k > 0, || {
            format!("empty product {m}x{n}x{k}")
        })?;
        len_is(op, "a", a.len(), m * k)?;
        len_is(op, "b", b.len(), k * n)?;
        len_is(op, "c", c.len(), m * n)?;
        let (mi, ni, ki) = (int(op, "m", m)?, int(op, "n", n)?, int(op, "k", k)?);
        // Column-major view: C^T [n, m] = op(B)^T [n, k] * op(A)^T [k, m].
        let (op_b, ldb) = match trans_b {
            Transpose::No => (cublasOperation_t::CUBLAS_OP_N, ni),
            Transpose::Yes => (cublasOperation_t::CUBLAS_OP_T, ki),
        };
        let (op_a, lda) = match trans_a {
            Transpose::No => (cublasOperation_t::CUBLAS_OP_N, ki),
            Transpose::Yes => (cublasOperation_t::CUBLAS_OP_T, mi),
        };
        let s = &self.stream;
        let (a, _a) = a.device_ptr(s);
        let (b, _b) = b.device_ptr(s);
        let (c, _c) = c.device_ptr_mut(s);
        // SAFETY: the handle is bound to this device's stream; every operand
        // length was checked against (m, n, k) and the leading dimensions
        // follow from the row-major layouts above.
        unsafe {
            gemm_ex(
                *self.blas.handle(),
                op_b,
                op_a,
                ni,
                mi,
                ki,
                (&alpha as *const f32).cast::<c_void>(),
                b as *const c_void,
                cudaDataType::CUDA_R_16BF,
                ldb,
                a as *const c_void,
                cudaDataType::CUDA_R_16BF,
                lda,
                (&beta as *const f32).cast::<c_void>(),
                c as *mut c_void,
                C::TYPE,
                ni,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(CudaError::blas(format!("multiplying {m}x{k} by {k}x{n}")))
    }
}
