//! Kernel PTX, compiled by NVRTC at first use and kept on disk so later runs
//! skip the compile. An entry's name is blake3 of everything that decides the
//! PTX: the full source, the architecture, the NVRTC options and NVRTC's
//! version (a newer NVRTC emits a newer PTX ISA). Entries are written to a
//! temporary file and renamed, so a crash never leaves half a file under a
//! valid name; an entry that does not define the module's kernels is ignored
//! and rebuilt.
//!
//! Folder: `$POKER_PIPE_PTX_CACHE`, else `$XDG_CACHE_HOME/poker-pipe/ptx`,
//! else `$HOME/.cache/poker-pipe/ptx`.

use std::io::Write;
use std::path::{Path, PathBuf};

use poker_pipe_kernels::{Arch, Module, compile_options, ptx_entries};

use super::CudaError;

/// The environment variable that moves the cache.
pub const CACHE_ENV: &str = "POKER_PIPE_PTX_CACHE";

/// Where compiled PTX lives.
#[derive(Clone, Debug)]
pub struct PtxCache {
    dir: PathBuf,
}

/// Where a module's PTX came from, for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PtxOrigin {
    Cache,
    Compiled,
}

impl PtxCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PtxCache { dir: dir.into() }
    }

    /// The folder from the environment, as documented above; `None` when no
    /// home folder can be found either.
    pub fn from_env() -> Option<Self> {
        let from = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty());
        if let Some(dir) = from(CACHE_ENV) {
            return Some(PtxCache::new(dir));
        }
        if let Some(xdg) = from("XDG_CACHE_HOME") {
            return Some(PtxCache::new(
                Path::new(&xdg).join("poker-pipe").join("ptx"),
            ));
        }
        from("HOME").map(|home| PtxCache::new(Path::new(&home).join(".cache/poker-pipe/ptx")))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry name for this module, architecture and NVRTC version.
    pub fn key(module: &Module, arch: Arch, nvrtc_version: i32) -> String {
        let mut hasher = blake3::Hasher::new();
        let mut field = |bytes: &[u8]| {
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        field(module.source().as_bytes());
        field(arch.to_string().as_bytes());
        for option in compile_options(arch) {
            field(option.as_bytes());
        }
        field(&nvrtc_version.to_le_bytes());
        format!("{}-{}-{}", module.name, arch, hasher.finalize().to_hex())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.ptx"))
    }

    /// A stored entry, if present and complete for `module`.
    pub fn load(&self, module: &Module, key: &str) -> Option<String> {
        let ptx = std::fs::read_to_string(self.path(key)).ok()?;
        let entries = ptx_entries(&ptx);
        module
            .kernels
            .iter()
            .all(|k| entries.contains(k))
            .then_some(ptx)
    }

    /// Store an entry atomically (temporary file in the same folder, then
    /// rename).
    pub fn store(&self, key: &str, ptx: &str) -> Result<(), CudaError> {
        let fail = |source| CudaError::PtxCache {
            path: self.dir.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(fail)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(fail)?;
        tmp.write_all(ptx.as_bytes()).map_err(fail)?;
        tmp.persist(self.path(key)).map_err(|e| fail(e.error))?;
        Ok(())
    }
}

/// PTX for `module` on `arch`: from the cache when it holds a complete entry,
/// else compiled by NVRTC and stored. A cache that cannot be written costs
/// only the next run's compile, so that failure is reported as a warning.
pub fn ptx_for(
    module: &'static Module,
    arch: Arch,
    nvrtc_version: i32,
    cache: Option<&PtxCache>,
) -> Result<(String, PtxOrigin), CudaError> {
    let key = PtxCache::key(module, arch, nvrtc_version);
    if let Some(ptx) = cache.and_then(|c| c.load(module, &key)) {
        return Ok((ptx, PtxOrigin::Cache));
    }
    let ptx = poker_pipe_kernels::compile_ptx(module, arch).map_err(|e| match e {
        poker_pipe_kernels::CompileError::NvrtcMissing => CudaError::MissingLibrary {
            name: "libnvrtc.so (NVRTC, compiles the kernels at first use)",
            package: "cuda-nvrtc-13-0, or pip nvidia-cuda-nvrtc",
        },
        other => CudaError::KernelCompile {
            module: module.name,
            arch: arch.to_string(),
            log: other.to_string(),
        },
    })?;
    if let Some(cache) = cache
        && let Err(error) = cache.store(&key, &ptx)
    {
        eprintln!("warning: {error}; kernels will be compiled again next run");
    }
    Ok((ptx, PtxOrigin::Compiled))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use poker_pipe_kernels::MODULES;

    #[test]
    fn key_changes_with_module_arch_and_nvrtc() {
        let (a, b) = (&MODULES[0], &MODULES[1]);
        let base = PtxCache::key(a, Arch::SM90, 13000);
        assert_eq!(base, PtxCache::key(a, Arch::SM90, 13000));
        assert_ne!(base, PtxCache::key(b, Arch::SM90, 13000));
        assert_ne!(base, PtxCache::key(a, Arch::SM80, 13000));
        assert_ne!(base, PtxCache::key(a, Arch::SM90, 13010));
        assert!(base.starts_with("attention-sm_90-"));
    }

    #[test]
    fn stored_entries_load_and_incomplete_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PtxCache::new(dir.path().join("nested/ptx"));
        let module = poker_pipe_kernels::module_of("rope_fwd").unwrap();
        let key = PtxCache::key(module, Arch::SM90, 13000);
        assert_eq!(cache.load(module, &key), None);

        let complete = ".visible .entry rope_fwd(\n)\n.visible .entry rope_bwd(\n)\n";
        cache.store(&key, complete).unwrap();
        assert_eq!(cache.load(module, &key).as_deref(), Some(complete));

        cache.store(&key, ".visible .entry rope_fwd(\n").unwrap();
        assert_eq!(
            cache.load(module, &key),
            None,
            "a truncated entry must be rebuilt"
        );
    }

    #[test]
    fn unwritable_folder_is_a_cache_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let cache = PtxCache::new(file.join("ptx"));
        assert!(matches!(
            cache.store("k", "p"),
            Err(CudaError::PtxCache { .. })
        ));
    }

    /// With NVRTC on the library path (as under .ci/compile-kernels), a miss
    /// compiles and stores, and the next call is served from the cache.
    #[test]
    fn miss_compiles_then_hits() {
        if !poker_pipe_kernels::nvrtc_available() {
            eprintln!("SKIPPED: libnvrtc not found");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let cache = PtxCache::new(dir.path());
        let module = poker_pipe_kernels::module_of("rope_fwd").unwrap();
        let (first, origin) = ptx_for(module, Arch::SM90, 13000, Some(&cache)).unwrap();
        assert_eq!(origin, PtxOrigin::Compiled);
        let (second, origin) = ptx_for(module, Arch::SM90, 13000, Some(&cache)).unwrap();
        assert_eq!(origin, PtxOrigin::Cache);
        assert_eq!(first, second);
    }
}
