//! LoRA adapters: attach (fresh, PEFT's initialisation), merge and unmerge,
//! and save/load in PEFT's layout (`adapter_config.json` +
//! `adapter_model.safetensors` with PEFT's tensor names), so adapters move
//! between us and transformers + peft unchanged.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::backend::Backend;

use super::error::{ModelError, Result};
use super::linear::Lora;
use super::llama::{Llama, PROJECTIONS};
use super::param::Param;
use super::weights::{self, HostTensor, TensorMap};

/// What to adapt and how.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f32,
    pub dropout: f32,
    /// Projection names: `q_proj`, ..., `down_proj`.
    pub targets: Vec<String>,
    /// PEFT's rsLoRA: scale `alpha / sqrt(rank)` instead of `alpha / rank`.
    pub rslora: bool,
}

impl LoraConfig {
    pub fn scale(&self) -> f32 {
        if self.rslora {
            self.alpha / (self.rank as f32).sqrt()
        } else {
            self.alpha / self.rank as f32
        }
    }

    /// Checks the targets name projections we have.
    pub fn check(&self, path: &Path) -> Result<()> {
        let bad = |reason: String| ModelError::Adapter {
            path: path.to_path_buf(),
            reason,
        };
        if self.rank == 0 {
            return Err(bad("rank must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(bad(format!("dropout {} is not in [0, 1)", self.dropout)));
        }
        for t in &self.targets {
            if !PROJECTIONS.contains(&t.as_str()) {
                return Err(bad(format!(
                    "unknown target module `{t}` (known: {})",
                    PROJECTIONS.join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// PEFT's `adapter_config.json` (the fields we read and write).
#[derive(Debug, Serialize, Deserialize)]
struct PeftConfig {
    peft_type: String,
    #[serde(default)]
    task_type: Option<String>,
    r: usize,
    lora_alpha: f32,
    #[serde(default)]
    lora_dropout: f32,
    target_modules: TargetModules,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default = "none_bias")]
    bias: String,
    #[serde(default)]
    base_model_name_or_path: Option<String>,
    #[serde(default)]
    inference_mode: bool,
    /// Whole modules saved beside the adapter: a sequence classifier's
    /// `score` head (PEFT adds it for `SEQ_CLS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    modules_to_save: Option<Vec<String>>,
    /// Per-module ranks and alphas: not supported, so refused when set.
    #[serde(default, skip_serializing)]
    rank_pattern: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing)]
    alpha_pattern: serde_json::Map<String, serde_json::Value>,
}

fn none_bias() -> String {
    "none".into()
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum TargetModules {
    List(Vec<String>),
    One(String),
}

/// PEFT's name of a sequence classifier's score head saved with the
/// adapter (`modules_to_save`).
pub const PEFT_SCORE: &str = "base_model.model.score.weight";

/// PEFT's name of a LoRA matrix on the projection whose weight is `base`
/// (`model.layers.0.self_attn.q_proj.weight` ->
/// `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`).
pub fn peft_name(base: &str, matrix: char) -> String {
    let module = base.strip_suffix(".weight").unwrap_or(base);
    format!("base_model.model.{module}.lora_{matrix}.weight")
}

/// [`attach`], then B filled with seeded normal values (sd 0.1), so the
/// adapters change the model's output: what a test of adapter plumbing
/// needs, where a fresh B of zeros would hide a lost adapter.
#[cfg(test)]
pub(crate) fn attach_nonzero<B: Backend>(
    be: &B,
    model: &mut Llama<B>,
    cfg: &LoraConfig,
    seed: u64,
) -> Result<()> {
    attach(be, model, cfg, seed)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(9));
    for layer in &mut model.layers {
        for (_, lin) in layer.projections_mut() {
            if let Some(l) = lin.lora.as_mut() {
                let v = crate::model::llama::normal(&mut rng, l.b.numel(), 0.1);
                l.b.value = be.upload(&v);
            }
        }
    }
    Ok(())
}

/// Attaches fresh adapters as PEFT initialises them (A Kaiming-uniform with
/// bound `1/sqrt(in)`, B zero, so the model is unchanged), freezes the base
/// and makes the adapters trainable.
pub fn attach<B: Backend>(be: &B, model: &mut Llama<B>, cfg: &LoraConfig, seed: u64) -> Result<()> {
    cfg.check(Path::new("<lora config>"))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    attach_with(be, model, cfg, |name, shape| {
        let n = shape[0] * shape[1];
        let data = if name.contains("lora_A") {
            let bound = 1.0 / (shape[1] as f32).sqrt();
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        } else {
            vec![0.0; n]
        };
        Ok(HostTensor::new(shape.to_vec(), data))
    })
}

fn attach_with<B: Backend>(
    be: &B,
    model: &mut Llama<B>,
    cfg: &LoraConfig,
    mut make: impl FnMut(&str, &[usize]) -> Result<HostTensor>,
) -> Result<()> {
    for p in model.params_mut() {
        p.set_trainable(be, false);
    }
    for layer in &mut model.layers {
        for (proj, lin) in layer.projections_mut() {
            if !cfg.targets.iter().any(|t| t == proj) {
                continue;
            }
            let (a_name, b_name) = (
                peft_name(&lin.weight.name, 'A'),
                peft_name(&lin.weight.name, 'B'),
            );
            let a = make(&a_name, &[cfg.rank, lin.in_dim])?;
            let b = make(&b_name, &[lin.out_dim, cfg.rank])?;
            let mut a = Param::new(be, a_name, &a);
            let mut b = Param::new(be, b_name, &b);
            a.set_trainable(be, true);
            b.set_trainable(be, true);
            lin.lora = Some(Lora {
                a,
                b,
                rank: cfg.rank,
                scale: cfg.scale(),
                dropout: cfg.dropout,
                merged: false,
            });
        }
    }
    Ok(())
}

/// Folds every adapter into its base weight (inference without the extra
/// products), or takes them back out.
pub fn set_merged<B: Backend>(be: &B, model: &mut Llama<B>, merged: bool) {
    for layer in &mut model.layers {
        for (_, lin) in layer.projections_mut() {
            lin.fold_lora(be, merged);
        }
    }
}

/// Whether an adapter directory is beside (or in) a model directory.
pub fn has_adapter(dir: &Path) -> bool {
    dir.join("adapter_config.json").exists()
}

/// Writes the adapters in PEFT's layout. `base` is recorded as
/// `base_model_name_or_path`.
pub fn save<B: Backend>(
    be: &B,
    model: &mut Llama<B>,
    cfg: &LoraConfig,
    dir: &Path,
    base: &str,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::Write {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut tensors = TensorMap::new();
    for layer in &mut model.layers {
        for (_, lin) in layer.projections_mut() {
            if let Some(lora) = lin.lora.as_ref() {
                tensors.insert(lora.a.name.clone(), lora.a.to_host(be));
                tensors.insert(lora.b.name.clone(), lora.b.to_host(be));
            }
        }
    }
    // A reward model's head trains with the adapter and is saved with it,
    // as PEFT saves `modules_to_save`.
    if let Some(score) = model.score.as_ref() {
        tensors.insert(PEFT_SCORE.to_string(), score.to_host(be));
    }
    let task = if model.score.is_some() {
        "SEQ_CLS"
    } else {
        "CAUSAL_LM"
    };
    let config = PeftConfig {
        peft_type: "LORA".into(),
        task_type: Some(task.into()),
        r: cfg.rank,
        lora_alpha: cfg.alpha,
        lora_dropout: cfg.dropout,
        target_modules: TargetModules::List(cfg.targets.clone()),
        use_rslora: cfg.rslora,
        use_dora: false,
        fan_in_fan_out: false,
        bias: "none".into(),
        base_model_name_or_path: Some(base.to_string()),
        inference_mode: true,
        modules_to_save: model.score.is_some().then(|| vec!["score".to_string()]),
        rank_pattern: serde_json::Map::new(),
        alpha_pattern: serde_json::Map::new(),
    };
    let path = dir.join("adapter_config.json");
    let text = serde_json::to_string_pretty(&config).map_err(|e| ModelError::Write {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(&path, text).map_err(|e| ModelError::Write { path, source: e })?;
    weights::save_file(
        &dir.join("adapter_model.safetensors"),
        &tensors,
        weights::pt_metadata(),
    )
}

/// Reads a PEFT LoRA adapter from `dir` onto the model (base frozen,
/// adapters trainable) and returns its config. A score head saved with it
/// (a reward model's) becomes the model's frozen `score`.
pub fn load<B: Backend>(be: &B, model: &mut Llama<B>, dir: &Path) -> Result<LoraConfig> {
    let path = dir.join("adapter_config.json");
    let bad = |reason: String| ModelError::Adapter {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
    let peft: PeftConfig = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if peft.peft_type != "LORA" {
        return Err(bad(format!(
            "peft_type is {}, only LORA is supported",
            peft.peft_type
        )));
    }
    if peft.use_dora || peft.fan_in_fan_out || peft.bias != "none" {
        return Err(bad(
            "DoRA, fan_in_fan_out and LoRA biases are not supported".into(),
        ));
    }
    if !peft.rank_pattern.is_empty() || !peft.alpha_pattern.is_empty() {
        return Err(bad(
            "per-module rank_pattern / alpha_pattern are not supported".into(),
        ));
    }
    let targets = match peft.target_modules {
        TargetModules::List(list) => list,
        TargetModules::One(s) if s == "all-linear" => {
            PROJECTIONS.iter().map(|s| s.to_string()).collect()
        }
        TargetModules::One(s) => {
            return Err(bad(format!(
                "target_modules `{s}`: only a list of names or all-linear"
            )));
        }
    };
    let cfg = LoraConfig {
        rank: peft.r,
        alpha: peft.lora_alpha,
        dropout: peft.lora_dropout,
        targets,
        rslora: peft.use_rslora,
    };
    cfg.check(&path)?;
    let mut tensors = weights::load_file(&dir.join("adapter_model.safetensors"))?;
    attach_with(be, model, &cfg, |name, shape| {
        weights::take(&mut tensors, name, shape, dir)
    })?;
    if let Some(labels) = tensors
        .get(PEFT_SCORE)
        .and_then(|t| t.shape.first().copied())
    {
        let head = weights::take(
            &mut tensors,
            PEFT_SCORE,
            &[labels, model.cfg.hidden_size],
            dir,
        )?;
        model.score = Some(Param::new(be, "score.weight", &head));
    }
    Ok(cfg)
}
