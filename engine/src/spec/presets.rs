//! Choosing a memory preset and turning it into a stage's execution
//! settings. Presets change how a stage runs, never what it computes.

use super::check::{Pipeline, Stage};
use super::types::MemoryPreset;
use crate::backend::Device;
use crate::graph::ExecSettings;

/// The `preset:` of a pipeline file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PresetChoice {
    /// Pick by the device's memory.
    Auto,
    Named(String),
}

impl PresetChoice {
    /// A missing `preset:` means `auto`.
    pub fn parse(text: Option<&str>) -> Self {
        match text {
            None | Some("auto") => PresetChoice::Auto,
            Some(name) => PresetChoice::Named(name.to_string()),
        }
    }
}

/// The preset to run with: `--preset` if given, else the file's choice.
/// `auto` takes the largest preset that fits the GPU's memory (as the CUDA
/// driver reports it), or the smallest preset on the CPU or when the memory
/// is unknown. `Ok(None)` when the pipeline has no presets.
pub fn select_preset(
    pipeline: &Pipeline,
    requested: Option<&str>,
    device: Device,
) -> Result<Option<(String, MemoryPreset)>, miette::Report> {
    let choice = match requested {
        Some(name) => PresetChoice::parse(Some(name)),
        None => pipeline.preset.clone(),
    };
    match choice {
        PresetChoice::Named(name) => match pipeline.presets.get(&name) {
            Some(preset) => Ok(Some((name, preset.clone()))),
            None => {
                let known: Vec<&str> = pipeline.presets.keys().map(String::as_str).collect();
                let hint =
                    crate::spec::did_you_mean(&name, known.iter().copied()).unwrap_or_else(|| {
                        format!(
                            "presets of `{}`: {}, or `auto`",
                            pipeline.name,
                            known.join(", ")
                        )
                    });
                Err(miette::miette!(
                    code = "spec::unknown_preset",
                    help = hint,
                    "unknown preset `{name}`"
                ))
            }
        },
        PresetChoice::Auto => {
            let mut by_size: Vec<(&String, &MemoryPreset)> = pipeline.presets.iter().collect();
            by_size.sort_by(|a, b| a.1.gpu_memory_gib.total_cmp(&b.1.gpu_memory_gib));
            let fits = gpu_memory_gib(device).and_then(|have| {
                by_size
                    .iter()
                    .rev()
                    .find(|(_, p)| p.gpu_memory_gib <= have + 0.5)
                    .copied()
            });
            Ok(fits
                .or_else(|| by_size.first().copied())
                .map(|(n, p)| (n.clone(), p.clone())))
        }
    }
}

/// Total memory of a CUDA device in GiB, asked of the driver through the
/// CUDA probe; None on the CPU. When a GPU was asked for but cannot be read
/// (no driver, no such device) this says so once and `auto` falls back to
/// the smallest preset, the one most likely to fit.
fn gpu_memory_gib(device: Device) -> Option<f64> {
    let Device::Cuda(index) = device else {
        return None;
    };
    match crate::model::memory::gpu_total_memory(index) {
        Ok(bytes) => Some(bytes as f64 / (1024.0 * 1024.0 * 1024.0)),
        Err(err) => {
            eprintln!(
                "note: preset `auto` cannot read the memory of GPU {index} ({err}); \
                 using the smallest preset (pick one with --preset)"
            );
            None
        }
    }
}

/// A stage's execution settings under a preset. Without a preset a stage
/// runs its whole global batch at once.
pub fn exec_settings(stage: &Stage, preset: Option<&(String, MemoryPreset)>) -> ExecSettings {
    let global = stage.batch.as_ref().map(|b| b.size);
    match preset {
        Some((name, preset)) => {
            let micro = match global {
                Some(g) => preset.micro_batch.min(g),
                None => preset.micro_batch,
            };
            ExecSettings {
                preset: Some(name.clone()),
                micro_batch: micro,
                grad_accum: global.map_or(1, |g| (g / micro.max(1)).max(1)),
                activation_checkpointing: preset.activation_checkpointing,
                offload_optimizer: preset.offload_optimizer,
                gpu_memory_gib: Some(preset.gpu_memory_gib),
                base_model: stage.base_model.clone(),
                input_adapters: stage.input_adapters.clone(),
                ran: None,
            }
        }
        None => ExecSettings {
            preset: None,
            micro_batch: global.unwrap_or(1),
            grad_accum: 1,
            activation_checkpointing: false,
            offload_optimizer: false,
            gpu_memory_gib: None,
            base_model: stage.base_model.clone(),
            input_adapters: stage.input_adapters.clone(),
            ran: None,
        },
    }
}
