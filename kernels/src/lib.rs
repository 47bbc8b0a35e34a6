//! The CUDA C sources of poker-pipe's kernels, embedded in the binary so NVRTC
//! can compile them at first use for whatever GPU the run finds.
//!
//! Each module is one `cuda/*.cu` file with `cuda/common.cuh` prepended (NVRTC
//! on a bare machine has no headers to include, so the shared helpers travel
//! with every source). [`MODULES`] lists every module with the entry points its
//! PTX must define; the CUDA backend loads modules by that table and the NVRTC
//! test checks the table against the compiled PTX.
//!
//! Compiling needs NVRTC (`libnvrtc.so.13` and its builtins library) on the
//! library path. Its absence is an error value, never a panic: [`compile_ptx`]
//! probes for the library before cudarc touches it.

use std::fmt;

use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};

/// Helpers shared by every kernel: bf16 conversion, warp and block reductions,
/// the sampling RNG.
pub const COMMON: &str = include_str!("../cuda/common.cuh");

/// One compilation unit: a `.cu` file and the kernels it defines.
#[derive(Debug)]
pub struct Module {
    /// Short name, used for the PTX cache file and in error messages.
    pub name: &'static str,
    /// Path of the source file inside the kernels crate, for messages.
    pub file: &'static str,
    body: &'static str,
    /// The `extern "C"` entry points the module defines.
    pub kernels: &'static [&'static str],
}

impl Module {
    /// The exact text NVRTC compiles: the common helpers, then the module,
    /// with `#line` markers so diagnostics name the real file and line.
    pub fn source(&self) -> String {
        format!(
            "#line 1 \"cuda/common.cuh\"\n{COMMON}\n#line 1 \"{}\"\n{}",
            self.file, self.body
        )
    }
}

macro_rules! module {
    ($name:literal, [$($kernel:literal),+ $(,)?]) => {
        Module {
            name: $name,
            file: concat!("cuda/", $name, ".cu"),
            body: include_str!(concat!("../cuda/", $name, ".cu")),
            kernels: &[$($kernel),+],
        }
    };
}

/// Every kernel module, in the order the backend loads them.
pub static MODULES: &[Module] = &[
    module!(
        "attention",
        [
            "flash_attn_fwd_d64",
            "flash_attn_fwd_d128",
            "flash_attn_bwd_delta",
            "flash_attn_bwd_dkdv_d64",
            "flash_attn_bwd_dkdv_d128",
            "flash_attn_bwd_dq_d64",
            "flash_attn_bwd_dq_d128",
        ]
    ),
    module!(
        "decode",
        [
            "decode_attn_partial_d64",
            "decode_attn_partial_d128",
            "decode_attn_combine",
        ]
    ),
    module!("adamw", ["adamw_f32grad", "adamw_bf16grad"]),
    module!("rmsnorm", ["rmsnorm_fwd", "rmsnorm_bwd", "sum_rows_f32"]),
    module!("rope", ["rope_fwd", "rope_bwd"]),
    module!("swiglu", ["swiglu_fwd", "swiglu_bwd"]),
    module!(
        "cross_entropy",
        ["cross_entropy_fwd", "cross_entropy_bwd", "softmax_entropy"]
    ),
    module!("embedding", ["embedding_fwd", "embedding_bwd"]),
    module!("grad_norm", ["sumsq_f32", "sumsq_bf16", "grad_norm_finish"]),
    module!("sampling", ["sample_tokens"]),
    module!(
        "tensor",
        [
            "cast_f32_bf16",
            "cast_bf16_f32",
            "axpy_f32",
            "scale_f32",
            "copy_rows_f32",
            "gather_rows_f32",
            "scatter_add_rows_f32",
            "dropout_f32",
            "attention_fwd_f32",
            "attention_bwd_f32",
        ]
    ),
];

/// The module that defines `kernel`, if any.
pub fn module_of(kernel: &str) -> Option<&'static Module> {
    MODULES.iter().find(|m| m.kernels.contains(&kernel))
}

/// A GPU architecture as a compute capability, e.g. 9.0 for Hopper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Arch {
    pub major: u32,
    pub minor: u32,
}

impl Arch {
    pub const SM80: Arch = Arch { major: 8, minor: 0 };
    pub const SM90: Arch = Arch { major: 9, minor: 0 };

    /// The number NVRTC uses: 90 for compute capability 9.0.
    pub fn number(self) -> u32 {
        self.major * 10 + self.minor
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sm_{}", self.number())
    }
}

/// The NVRTC options every module is compiled with. Virtual architecture
/// (`compute_XX`), so the result is PTX the driver finishes for the exact
/// chip; no fast-math, so the f32 paths keep their 1e-4 accuracy.
pub fn compile_options(arch: Arch) -> Vec<String> {
    vec![
        "--std=c++17".to_string(),
        format!("--gpu-architecture=compute_{}", arch.number()),
        "--fmad=true".to_string(),
    ]
}

/// Why a module did not compile.
#[derive(Debug)]
pub enum CompileError {
    /// libnvrtc could not be loaded.
    NvrtcMissing,
    /// NVRTC rejected the source; `log` is its diagnostic output.
    Rejected {
        module: &'static str,
        arch: Arch,
        log: String,
    },
    /// NVRTC failed for another reason (e.g. its builtins library is missing).
    Nvrtc {
        module: &'static str,
        arch: Arch,
        detail: String,
    },
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompileError::NvrtcMissing => {
                f.write_str("the NVRTC library (libnvrtc.so) could not be loaded")
            }
            CompileError::Rejected { module, arch, log } => {
                write!(
                    f,
                    "kernel module `{module}` does not compile for {arch}:\n{log}"
                )
            }
            CompileError::Nvrtc {
                module,
                arch,
                detail,
            } => write!(f, "NVRTC failed on module `{module}` for {arch}: {detail}"),
        }
    }
}

impl std::error::Error for CompileError {}

/// Whether libnvrtc can be loaded, checked without letting cudarc panic.
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the candidate library names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// NVRTC's own version as (major, minor).
pub fn nvrtc_version() -> Result<(i32, i32), CompileError> {
    if !nvrtc_available() {
        return Err(CompileError::NvrtcMissing);
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present; both pointers are valid for writes.
    let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if status != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(CompileError::Nvrtc {
            module: "-",
            arch: Arch::SM80,
            detail: format!("nvrtcVersion returned {status:?}"),
        });
    }
    Ok((major, minor))
}

/// The architectures this NVRTC can target, ascending (e.g. [75, 80, ..]).
pub fn nvrtc_supported_archs() -> Result<Vec<u32>, CompileError> {
    if !nvrtc_available() {
        return Err(CompileError::NvrtcMissing);
    }
    let mut count = 0;
    // SAFETY: the library is present; `count` is valid for a write.
    let status = unsafe { cudarc::nvrtc::sys::nvrtcGetNumSupportedArchs(&mut count) };
    let mut archs = vec![0i32; usize::try_from(count).unwrap_or(0)];
    // SAFETY: `archs` holds exactly `count` ints.
    let status2 = unsafe { cudarc::nvrtc::sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) };
    let ok = cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS;
    if status != ok || status2 != ok {
        return Err(CompileError::Nvrtc {
            module: "-",
            arch: Arch::SM80,
            detail: format!("nvrtcGetSupportedArchs returned {status:?} / {status2:?}"),
        });
    }
    let mut archs: Vec<u32> = archs
        .into_iter()
        .filter_map(|a| a.try_into().ok())
        .collect();
    archs.sort_unstable();
    Ok(archs)
}

/// Compile one module to PTX text for `arch`.
pub fn compile_ptx(module: &'static Module, arch: Arch) -> Result<String, CompileError> {
    if !nvrtc_available() {
        return Err(CompileError::NvrtcMissing);
    }
    let options = CompileOptions {
        options: compile_options(arch),
        name: Some(module.file.to_string()),
        ..Default::default()
    };
    match compile_ptx_with_opts(module.source(), options) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(cudarc::nvrtc::CompileError::CompileError { log, .. }) => Err(CompileError::Rejected {
            module: module.name,
            arch,
            log: log.to_string_lossy().into_owned(),
        }),
        Err(other) => Err(CompileError::Nvrtc {
            module: module.name,
            arch,
            detail: other.to_string(),
        }),
    }
}

/// What ptxas reports per kernel when the module is compiled to machine code
/// for `arch`: registers, shared memory, stack frame and spill bytes. Needs no
/// GPU, so register pressure and spills are visible wherever NVRTC is.
pub fn ptxas_report(module: &'static Module, arch: Arch) -> Result<String, CompileError> {
    use cudarc::nvrtc::result;
    if !nvrtc_available() {
        return Err(CompileError::NvrtcMissing);
    }
    let fail = |detail: String| CompileError::Nvrtc {
        module: module.name,
        arch,
        detail,
    };
    let source = std::ffi::CString::new(module.source()).map_err(|e| fail(e.to_string()))?;
    let name = std::ffi::CString::new(module.file).map_err(|e| fail(e.to_string()))?;
    let options = [
        "--std=c++17".to_string(),
        format!("--gpu-architecture=sm_{}", arch.number()),
        "--fmad=true".to_string(),
        "--ptxas-options=-v".to_string(),
    ];
    let program = result::create_program(&source, Some(&name)).map_err(|e| fail(e.to_string()))?;
    // SAFETY: `program` was created above and is destroyed exactly once below;
    // `source` and `name` outlive it.
    let compiled = unsafe { result::compile_program(program, &options) };
    // SAFETY: as above.
    let log = unsafe { result::get_program_log(program) };
    // SAFETY: as above; the program is not used after this.
    let destroyed = unsafe { result::destroy_program(program) };
    let log: String = log
        .map_err(|e| fail(e.to_string()))?
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8 as char)
        .collect();
    if compiled.is_err() {
        return Err(CompileError::Rejected {
            module: module.name,
            arch,
            log,
        });
    }
    destroyed.map_err(|e| fail(e.to_string()))?;
    Ok(log)
}

/// The entry points a PTX text defines (its `.entry` directives).
pub fn ptx_entries(ptx: &str) -> Vec<&str> {
    ptx.lines()
        .filter_map(|line| line.split(".entry").nth(1))
        .filter_map(|rest| {
            rest.trim_start()
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_is_named_once_and_defined_in_its_source() {
        let mut seen = std::collections::HashSet::new();
        for module in MODULES {
            let source = module.source();
            assert!(!source.contains('\0'), "{} holds a NUL byte", module.file);
            assert!(
                !source.contains("#include"),
                "{} includes a header; kernels must be self-contained",
                module.file
            );
            for kernel in module.kernels {
                assert!(seen.insert(*kernel), "{kernel} is listed twice");
                let signature = format!("{kernel}(");
                assert!(
                    source.contains(&signature),
                    "{kernel} is listed for {} but not defined there",
                    module.file
                );
                assert_eq!(module_of(kernel).map(|m| m.name), Some(module.name));
            }
        }
    }

    #[test]
    fn options_name_the_virtual_architecture() {
        let options = compile_options(Arch::SM90);
        assert!(options.contains(&"--gpu-architecture=compute_90".to_string()));
        assert_eq!(Arch { major: 8, minor: 6 }.to_string(), "sm_86");
    }

    #[test]
    fn entries_are_read_from_ptx() {
        let ptx = ".visible .entry rope_fwd(\n\t.param .u64 a\n)\n.visible .entry sum_rows_f32(";
        assert_eq!(ptx_entries(ptx), vec!["rope_fwd", "sum_rows_f32"]);
    }
}
