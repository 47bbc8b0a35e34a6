//! Host memory, for stages that run on the CPU: a stage whose planned need
//! is beyond the machine's memory is refused before it allocates, because
//! an allocation the host cannot make aborts the process (no error to
//! report, no exit code of ours).

use miette::Diagnostic;
use thiserror::Error;

use super::{Breakdown, gib_text};

/// A CPU stage that cannot fit in this machine's memory.
#[derive(Debug, Error, Diagnostic)]
#[error(
    "the stage needs at least {} of host memory and this machine has {}",
    gib_text(*needed),
    gib_text(*total)
)]
#[diagnostic(code(cpu::out_of_memory))]
pub struct HostOutOfMemory {
    pub needed: u64,
    pub total: u64,
}

/// The machine's physical memory in bytes (`MemTotal` of /proc/meminfo);
/// `None` where it cannot be read, and then nothing is refused.
pub fn host_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kib: u64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// What a stage planned as `planned` (for CUDA in bf16) needs at least on
/// the CPU: 8/9 of every part but the CUDA workspace. A trained parameter
/// costs 16 bytes in f32 (weight, which is its own master copy, gradient,
/// AdamW's m and v) against the plan's 18 (bf16 weight, f32 gradient,
/// master, m and v); every other part is as large or larger on the CPU.
pub fn host_lower_bound(planned: &Breakdown) -> u64 {
    let without_workspace = planned.total() - planned.workspace;
    without_workspace / 9 * 8
}

/// Refuses a CPU stage whose plan cannot fit in `total` bytes of host
/// memory (the machine's, from [`host_memory_bytes`], when `None`).
pub fn refuse_beyond_host(planned: &Breakdown, total: Option<u64>) -> Result<(), HostOutOfMemory> {
    let Some(total) = total.or_else(host_memory_bytes) else {
        return Ok(());
    };
    let needed = host_lower_bound(planned);
    if needed > total {
        return Err(HostOutOfMemory { needed, total });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_beyond_the_host_is_refused_and_one_within_is_not() {
        let planned = Breakdown {
            weights: 9 << 30,
            gradients: 9 << 30,
            workspace: 1 << 30,
            ..Breakdown::default()
        };
        assert_eq!(host_lower_bound(&planned), 16 << 30);
        let refused = refuse_beyond_host(&planned, Some(15 << 30)).unwrap_err();
        assert_eq!((refused.needed, refused.total), (16 << 30, 15 << 30));
        assert!(refused.to_string().contains("16.0 GiB"), "{refused}");
        assert!(refuse_beyond_host(&planned, Some(16 << 30)).is_ok());
        assert!(host_memory_bytes().is_some_and(|b| b > 1 << 20));
    }
}
