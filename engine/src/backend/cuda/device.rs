//! One GPU, ready to run every kernel: the context and its stream, the kernel
//! modules (PTX from the cache or NVRTC, loaded once), the cuBLAS handle and
//! the facts launch code needs (architecture, multiprocessor count).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cudarc::cublas::CudaBlas;
use cudarc::driver::result::mem_pool;
use cudarc::driver::sys::{self, CUdevice_attribute, CUmemPool_attribute as PoolAttr};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchArgs,
    LaunchConfig, ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;
use poker_pipe_kernels::{Arch, MODULES, nvrtc_supported_archs};

use super::CudaError;
use super::probe::{Versions, probe, version_text};
use super::ptx_cache::{PtxCache, PtxOrigin, ptx_for};
use crate::backend::DeviceBytes;

/// An opened GPU. All work is issued on one stream, in order.
pub struct CudaDevice {
    ordinal: usize,
    name: String,
    arch: Arch,
    target: Arch,
    versions: Versions,
    sm_count: u32,
    ptx_origins: Vec<(&'static str, PtxOrigin)>,
    functions: HashMap<&'static str, CudaFunction>,
    pub(crate) blas: CudaBlas,
    pub(crate) stream: Arc<CudaStream>,
    /// Bytes the pool held when its high-water mark was last reset: the
    /// driver restarts the mark at zero, and the peak since the reset is at
    /// least what was held then.
    peak_floor: AtomicU64,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice")
            .field("ordinal", &self.ordinal)
            .field("name", &self.name)
            .field("arch", &self.arch)
            .field("target", &self.target)
            .field("driver", &version_text(self.versions.driver))
            .field("nvrtc", &version_text(self.versions.nvrtc))
            .finish()
    }
}

impl CudaDevice {
    /// Open GPU `ordinal` with the PTX cache from the environment.
    pub fn open(ordinal: usize) -> Result<Self, CudaError> {
        Self::open_with_cache(ordinal, PtxCache::from_env())
    }

    /// Open GPU `ordinal`; `cache: None` compiles every module afresh.
    pub fn open_with_cache(ordinal: usize, cache: Option<PtxCache>) -> Result<Self, CudaError> {
        let versions = probe(ordinal)?;
        let ctx = CudaContext::new(ordinal).map_err(CudaError::driver("creating the context"))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(CudaError::driver("reading the compute capability"))?;
        let arch = Arch {
            major: u32::try_from(major).unwrap_or(0),
            minor: u32::try_from(minor).unwrap_or(0),
        };
        let target = compile_target(arch, versions)?;
        let sm_count = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(CudaError::driver("reading the multiprocessor count"))?;
        let name = ctx
            .name()
            .map_err(CudaError::driver("reading the GPU name"))?;
        let stream = ctx.default_stream();

        let compiled = compile_all(target, versions.nvrtc, cache.as_ref())?;
        let mut functions = HashMap::new();
        let mut ptx_origins = Vec::new();
        for (module, ptx, origin) in compiled {
            let loaded = ctx
                .load_module(Ptx::from_src(ptx))
                .map_err(CudaError::driver(format!(
                    "loading kernel module `{}`",
                    module.name
                )))?;
            for kernel in module.kernels {
                let function = loaded
                    .load_function(kernel)
                    .map_err(CudaError::driver(format!("finding kernel `{kernel}`")))?;
                functions.insert(*kernel, function);
            }
            ptx_origins.push((module.name, origin));
        }
        let blas =
            CudaBlas::new(stream.clone()).map_err(CudaError::blas("creating the cuBLAS handle"))?;
        Ok(CudaDevice {
            ordinal,
            name,
            arch,
            target,
            versions,
            sm_count: u32::try_from(sm_count).unwrap_or(1).max(1),
            ptx_origins,
            functions,
            blas,
            stream,
            peak_floor: AtomicU64::new(0),
        })
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The GPU's marketing name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The GPU's own architecture.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The architecture the kernels were compiled for: the GPU's, or the
    /// newest NVRTC knows when the GPU is newer than NVRTC.
    pub fn target(&self) -> Arch {
        self.target
    }

    pub fn versions(&self) -> Versions {
        self.versions
    }

    pub fn sm_count(&self) -> u32 {
        self.sm_count
    }

    /// Where each module's PTX came from in this open.
    pub fn ptx_origins(&self) -> &[(&'static str, PtxOrigin)] {
        &self.ptx_origins
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Wait for all queued work; surfaces errors of earlier launches.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream
            .synchronize()
            .map_err(CudaError::driver("waiting for the GPU"))
    }

    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>, CudaError> {
        self.stream
            .clone_htod(host)
            .map_err(CudaError::driver("copying to the GPU"))
    }

    pub fn download<T: DeviceRepr + Default + Clone>(
        &self,
        device: &impl DevicePtr<T>,
    ) -> Result<Vec<T>, CudaError> {
        self.stream
            .clone_dtoh(device)
            .map_err(CudaError::driver("copying from the GPU"))
    }

    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<CudaSlice<T>, CudaError> {
        self.stream
            .alloc_zeros(len)
            .map_err(CudaError::driver("allocating GPU memory"))
    }

    /// A buffer whose every element the next kernel overwrites.
    pub(crate) fn scratch<T: DeviceRepr>(&self, len: usize) -> Result<CudaSlice<T>, CudaError> {
        // SAFETY: callers hand the buffer to a kernel that writes all of it
        // before anything reads it.
        unsafe { self.stream.alloc(len.max(1)) }
            .map_err(CudaError::driver("allocating GPU scratch memory"))
    }

    /// The stream-ordered memory pool every buffer of this device comes
    /// from: cudarc allocates with `cuMemAllocAsync` wherever the driver
    /// supports it (every GPU the kernels target), from the device's current
    /// pool. `None` where it allocates synchronously instead.
    fn pool(&self) -> Result<Option<sys::CUmemoryPool>, CudaError> {
        let ctx = self.stream.context();
        if !ctx.has_async_alloc() {
            return Ok(None);
        }
        ctx.bind_to_thread()
            .map_err(CudaError::driver("binding the context"))?;
        // SAFETY: the device handle is the live context's own.
        unsafe { cudarc::driver::result::device::get_mem_pool(ctx.cu_device()) }
            .map(Some)
            .map_err(CudaError::driver("reading the device's memory pool"))
    }

    /// Bytes the device's buffers hold now and at most since
    /// [`CudaDevice::reset_pool_peak`], as the driver counts them in the
    /// pool: every buffer and scratch of this backend, not the context or
    /// cuBLAS's workspace (the memory planner lists those apart). `None`
    /// where the driver allocates outside a pool.
    pub fn pool_bytes(&self) -> Result<Option<DeviceBytes>, CudaError> {
        let Some(pool) = self.pool()? else {
            return Ok(None);
        };
        let current = pool_used(pool, PoolAttr::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?;
        let high = pool_used(pool, PoolAttr::CU_MEMPOOL_ATTR_USED_MEM_HIGH)?;
        let floor = self.peak_floor.load(Ordering::Relaxed);
        Ok(Some(DeviceBytes {
            current,
            peak: high.max(floor).max(current),
        }))
    }

    /// Starts a new high-water mark of the pool at what is used now. The
    /// driver resets its mark to zero only, so what is held at the reset is
    /// kept as the mark's floor.
    pub fn reset_pool_peak(&self) -> Result<(), CudaError> {
        let Some(pool) = self.pool()? else {
            return Ok(());
        };
        let held = pool_used(pool, PoolAttr::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?;
        self.peak_floor.store(held, Ordering::Relaxed);
        let mut zero: u64 = 0;
        // SAFETY: the attribute is a `cuuint64_t`, which `zero` is, and zero
        // is the one value the driver accepts for it.
        unsafe {
            mem_pool::set_attribute(
                pool,
                PoolAttr::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                (&raw mut zero).cast::<std::ffi::c_void>(),
            )
        }
        .map_err(CudaError::driver("resetting the pool's high-water mark"))
    }

    pub(crate) fn function(&self, kernel: &'static str) -> Result<&CudaFunction, CudaError> {
        self.functions.get(kernel).ok_or(CudaError::BadLaunch {
            kernel,
            detail: "no such kernel is loaded".into(),
        })
    }

    /// Queue a launch whose arguments `args` already holds.
    pub(crate) fn launch(
        &self,
        kernel: &'static str,
        mut args: LaunchArgs<'_>,
        grid: (u32, u32, u32),
        block: u32,
    ) -> Result<(), CudaError> {
        let cfg = LaunchConfig {
            grid_dim: grid,
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: every wrapper checks buffer lengths against the sizes it
        // passes and pushes arguments in the order of the kernel's signature.
        unsafe { args.launch(cfg) }
            .map(|_| ())
            .map_err(CudaError::driver(format!("launching `{kernel}`")))
    }
}

/// One of the pool's used-memory figures (current or high-water mark).
fn pool_used(pool: sys::CUmemoryPool, attr: PoolAttr) -> Result<u64, CudaError> {
    let mut value: u64 = 0;
    // SAFETY: the used-memory attributes are `cuuint64_t`, which `value` is.
    unsafe { mem_pool::get_attribute(pool, attr, (&raw mut value).cast::<std::ffi::c_void>()) }
        .map(|()| value)
        .map_err(CudaError::driver(format!(
            "reading the memory pool's {attr:?}"
        )))
}

/// The newest architecture NVRTC supports that is not newer than the GPU.
fn compile_target(arch: Arch, versions: Versions) -> Result<Arch, CudaError> {
    let supported = nvrtc_supported_archs().map_err(|e| CudaError::KernelCompile {
        module: "-",
        arch: arch.to_string(),
        log: e.to_string(),
    })?;
    supported
        .iter()
        .rev()
        .find(|&&n| n <= arch.number())
        .map(|&n| Arch {
            major: n / 10,
            minor: n % 10,
        })
        .ok_or_else(|| CudaError::UnsupportedGpu {
            arch: arch.to_string(),
            nvrtc: version_text(versions.nvrtc),
            oldest: supported.first().copied().unwrap_or(0),
        })
}

type Compiled = (&'static poker_pipe_kernels::Module, String, PtxOrigin);

/// PTX for every module, compiled in parallel on a miss.
fn compile_all(
    target: Arch,
    nvrtc: i32,
    cache: Option<&PtxCache>,
) -> Result<Vec<Compiled>, CudaError> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = MODULES
            .iter()
            .map(|module| {
                scope.spawn(move || {
                    ptx_for(module, target, nvrtc, cache).map(|(ptx, origin)| (module, ptx, origin))
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(MODULES)
            .map(|(handle, module)| {
                handle.join().unwrap_or_else(|_| {
                    Err(CudaError::KernelCompile {
                        module: module.name,
                        arch: target.to_string(),
                        log: "the compile thread panicked".into(),
                    })
                })
            })
            .collect()
    })
}
