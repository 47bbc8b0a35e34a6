//! Out of device memory: the backend's typed error, and the message a
//! stage that hits it ends with (its preset, the planner's figure, the next
//! smaller preset to try).

use std::fmt;

use miette::Diagnostic;
use thiserror::Error;

use super::{HostOutOfMemory, gib_text};

/// What a user sees when a stage runs out of device memory, or is refused
/// on the CPU before it could: the stage, its preset, the planner's
/// estimate, and the next smaller preset to try.
#[derive(Debug, Error, Diagnostic)]
#[error("stage `{stage}` {what} under preset `{preset}`{}", estimate_text(.estimate, .gpu_memory_gib))]
#[diagnostic(code(run::out_of_memory))]
pub struct OutOfMemory {
    pub stage: String,
    /// "ran out of GPU memory", or "cannot fit in host memory".
    pub what: &'static str,
    pub preset: String,
    pub estimate: Option<u64>,
    pub gpu_memory_gib: Option<f64>,
    pub next_smaller: Option<String>,
    #[help]
    pub help: String,
    #[source]
    pub cause: Box<dyn std::error::Error + Send + Sync>,
}

fn estimate_text(estimate: &Option<u64>, gib: &Option<f64>) -> String {
    match (estimate, gib) {
        (Some(bytes), Some(gib)) => format!(
            " (the planner estimated {} of the preset's {gib} GiB)",
            gib_text(*bytes)
        ),
        (Some(bytes), None) => format!(" (the planner estimated {})", gib_text(*bytes)),
        _ => String::new(),
    }
}

/// Where a stage ran out of memory, for [`explain_out_of_memory`].
#[derive(Clone, Debug)]
pub struct OomContext<'a> {
    pub stage: &'a str,
    pub preset: Option<&'a str>,
    pub gpu_memory_gib: Option<f64>,
    pub estimate: Option<u64>,
    /// Every preset of the pipeline: (name, GPU memory in GiB).
    pub presets: Vec<(&'a str, f64)>,
}

/// The preset with the most memory below `current`'s.
pub fn next_smaller_preset<'a>(presets: &[(&'a str, f64)], current_gib: f64) -> Option<&'a str> {
    presets
        .iter()
        .filter(|(_, gib)| *gib < current_gib)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(name, _)| *name)
}

/// Whether a stage's failure is the device running out of memory: the
/// host's refusal, or a CUDA driver call that answered
/// `CUDA_ERROR_OUT_OF_MEMORY` (the CUDA backend unwinds with it, and the
/// executor hands it back as the stage's error).
pub fn is_out_of_memory(report: &miette::Report) -> bool {
    if report.downcast_ref::<HostOutOfMemory>().is_some() {
        return true;
    }
    report
        .downcast_ref::<crate::backend::cuda::CudaError>()
        .is_some_and(|e| e.is_out_of_memory())
}

/// Turn an out-of-memory failure into [`OutOfMemory`]; any other failure
/// comes back unchanged. The executor never moves a failed stage's
/// temporary output into the cache and keeps its resume state, so the
/// message can promise that nothing cached is lost.
pub fn explain_out_of_memory(report: miette::Report, at: &OomContext<'_>) -> miette::Report {
    if !is_out_of_memory(&report) {
        return report;
    }
    let next = at
        .gpu_memory_gib
        .and_then(|gib| next_smaller_preset(&at.presets, gib));
    let preset = at.preset.unwrap_or("(none)");
    let mut help = match next {
        Some(name) => format!(
            "run again with `--preset {name}` (smaller micro-batch, same global batch and results)"
        ),
        None if at.preset.is_some() => "this is already the smallest preset: add one with \
             `micro_batch: 1` and `activation_checkpointing: true`, or use LoRA instead of \
             full fine-tuning"
            .to_string(),
        None => "add `memory_presets` to the pipeline and pick one with `--preset`".to_string(),
    };
    help.push_str(
        "; `poker-pipe plan` shows each stage's estimate per preset. Stages that \
         finished stay cached and this stage resumes from its last checkpoint",
    );
    let cause: Box<dyn std::error::Error + Send + Sync> = Box::new(ReportText(format!("{report}")));
    let what = if report.downcast_ref::<HostOutOfMemory>().is_some() {
        "cannot fit in host memory"
    } else {
        "ran out of GPU memory"
    };
    miette::Report::new(OutOfMemory {
        stage: at.stage.to_string(),
        what,
        preset: preset.to_string(),
        estimate: at.estimate,
        gpu_memory_gib: at.gpu_memory_gib,
        next_smaller: next.map(str::to_string),
        help,
        cause,
    })
}

/// The original failure's text as the source of [`OutOfMemory`].
#[derive(Debug)]
struct ReportText(String);

impl fmt::Display for ReportText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReportText {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::memory::fits;

    #[test]
    fn next_smaller_preset_and_fit_rule() {
        let presets = [("a", 23.9), ("b", 39.5), ("c", 44.9), ("d", 79.6)];
        assert_eq!(next_smaller_preset(&presets, 79.6), Some("c"));
        assert_eq!(next_smaller_preset(&presets, 39.5), Some("a"));
        assert_eq!(next_smaller_preset(&presets, 23.9), None);
        assert!(fits(9 * (1 << 30), 10.0));
        assert!(!fits(10 * (1 << 30), 10.0));
    }

    /// A typed out-of-memory failure becomes the full message; any other
    /// failure passes through untouched.
    #[test]
    fn out_of_memory_names_stage_preset_estimate_and_next_preset() {
        let at = OomContext {
            stage: "sft",
            preset: Some("a40-48g"),
            gpu_memory_gib: Some(44.9),
            estimate: Some(30 * (1 << 30)),
            presets: vec![("rtx4090-24g", 23.9), ("a40-48g", 44.9), ("a100-40g", 39.5)],
        };
        let oom = miette::Report::new(crate::backend::CudaError::Driver {
            op: "allocating activations".into(),
            status: cudarc::driver::DriverError(
                cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY,
            ),
        });
        let explained = explain_out_of_memory(oom, &at);
        let typed = explained.downcast_ref::<OutOfMemory>().unwrap();
        assert_eq!(typed.next_smaller.as_deref(), Some("a100-40g"));
        let text = format!("{explained}");
        assert!(
            text.contains("`sft`") && text.contains("`a40-48g`"),
            "{text}"
        );
        assert!(text.contains("30.0 GiB"), "{text}");
        assert!(typed.help.contains("--preset a100-40g"), "{}", typed.help);
        assert!(typed.help.contains("stay cached"), "{}", typed.help);

        let other = explain_out_of_memory(miette::miette!("disk full"), &at);
        assert!(other.downcast_ref::<OutOfMemory>().is_none());
        assert_eq!(format!("{other}"), "disk full");
    }
}
