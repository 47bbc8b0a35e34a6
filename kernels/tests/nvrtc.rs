//! Every kernel module compiles with NVRTC to PTX for sm_80 and sm_90, and the
//! PTX defines exactly the entry points the module table lists.
//!
//! Needs libnvrtc on the library path. Without it the test prints a notice and
//! passes, unless `POKER_PIPE_REQUIRE_NVRTC=1` (set by `.ci/compile-kernels`),
//! where a missing NVRTC is a failure: CI must never skip this silently.

use std::collections::BTreeSet;

use poker_pipe_kernels::{
    Arch, MODULES, compile_ptx, nvrtc_available, nvrtc_version, ptx_entries, ptxas_report,
};

#[test]
fn every_module_compiles_for_sm80_and_sm90() -> Result<(), String> {
    if !nvrtc_available() {
        if std::env::var_os("POKER_PIPE_REQUIRE_NVRTC").is_some() {
            return Err("POKER_PIPE_REQUIRE_NVRTC is set but libnvrtc cannot be loaded".into());
        }
        eprintln!("SKIPPED: libnvrtc not found; run .ci/compile-kernels to compile the kernels");
        return Ok(());
    }
    let version = nvrtc_version().map_err(|e| e.to_string())?;
    eprintln!("NVRTC {}.{}", version.0, version.1);
    let results: Vec<Result<String, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = MODULES
            .iter()
            .flat_map(|module| [Arch::SM80, Arch::SM90].map(|arch| (module, arch)))
            .map(|(module, arch)| {
                scope.spawn(move || {
                    let ptx = compile_ptx(module, arch).map_err(|e| e.to_string())?;
                    let found: BTreeSet<&str> = ptx_entries(&ptx).into_iter().collect();
                    let listed: BTreeSet<&str> = module.kernels.iter().copied().collect();
                    if found != listed {
                        return Err(format!(
                            "{} for {arch}: PTX defines {found:?}, the table lists {listed:?}",
                            module.name
                        ));
                    }
                    Ok(format!(
                        "{} {arch}: {} kernels, {} bytes of PTX",
                        module.name,
                        found.len(),
                        ptx.len()
                    ))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("compile thread panicked".into()))
            })
            .collect()
    });
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok(line) => eprintln!("ok  {line}"),
            Err(error) => failures.push(error),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n\n"))
    }
}

/// The ptxas resource report for sm_90 (registers, shared memory, spills),
/// printed for kernels/PERF.md; it fails only when a module does not build
/// to machine code.
#[test]
fn sm90_resource_report() -> Result<(), String> {
    if !nvrtc_available() {
        eprintln!("SKIPPED: libnvrtc not found");
        return Ok(());
    }
    for module in MODULES {
        let log = ptxas_report(module, Arch::SM90).map_err(|e| e.to_string())?;
        let mut kernel = "";
        for line in log.lines() {
            if let Some(rest) = line.split("Compiling entry function '").nth(1) {
                kernel = rest.split('\'').next().unwrap_or("");
            } else if line.contains("Used") || line.contains("spill") {
                let info = line
                    .trim_start_matches("ptxas")
                    .trim_start_matches("info")
                    .trim_start_matches([' ', '.', ':'])
                    .trim_start_matches("info")
                    .trim_start_matches([' ', ':']);
                eprintln!("{kernel:28} {info}");
            }
        }
    }
    Ok(())
}
