//! `config.json` of a Hugging Face LLaMA, in both the form the hub publishes
//! for Llama 3.1 (`rope_scaling` + top-level `rope_theta`) and the newer
//! transformers form (`rope_parameters` holding both).

use std::path::Path;

use serde::Deserialize;

use super::error::{ModelError, Result};

/// RoPE frequency scaling.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Llama 3's wavelength-dependent scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// The architecture numbers the model code needs.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    pub max_position_embeddings: usize,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

#[derive(Deserialize)]
struct RawRope {
    #[serde(alias = "type")]
    rope_type: Option<String>,
    rope_theta: Option<f64>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<f64>,
}

#[derive(Deserialize)]
struct RawConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<RawRope>,
    rope_parameters: Option<RawRope>,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<OneOrMany>,
    pad_token_id: Option<u32>,
    max_position_embeddings: Option<usize>,
}

impl LlamaConfig {
    /// Reads and checks `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses the text of a `config.json`; `path` is only for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = |reason: String| ModelError::Config {
            path: path.to_path_buf(),
            reason,
        };
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let rope = raw.rope_parameters.as_ref().or(raw.rope_scaling.as_ref());
        let rope_theta = raw
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_theta)
            .or(raw.rope_theta)
            .unwrap_or(10_000.0);
        let rope_scaling = match rope.and_then(|r| r.rope_type.as_deref()) {
            None | Some("default") => RopeScaling::None,
            Some("llama3") => {
                let Some(r) = rope else {
                    return Err(bad("rope scaling without parameters".into()));
                };
                let need = |v: Option<f64>, name: &str| {
                    v.ok_or_else(|| bad(format!("llama3 rope scaling needs `{name}`")))
                };
                RopeScaling::Llama3 {
                    factor: need(r.factor, "factor")?,
                    low_freq_factor: need(r.low_freq_factor, "low_freq_factor")?,
                    high_freq_factor: need(r.high_freq_factor, "high_freq_factor")?,
                    original_max_position_embeddings: need(
                        r.original_max_position_embeddings,
                        "original_max_position_embeddings",
                    )?,
                }
            }
            Some(other) => {
                return Err(ModelError::Unsupported {
                    path: path.to_path_buf(),
                    what: format!("rope type `{other}`"),
                    hint: "only plain RoPE and `llama3` scaling are implemented".into(),
                });
            }
        };
        let num_kv_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        if raw.num_attention_heads == 0
            || num_kv_heads == 0
            || !raw.num_attention_heads.is_multiple_of(num_kv_heads)
        {
            return Err(bad(format!(
                "num_attention_heads ({}) must be a positive multiple of num_key_value_heads ({num_kv_heads})",
                raw.num_attention_heads
            )));
        }
        let head_dim = match raw.head_dim {
            Some(d) => d,
            None if raw.hidden_size.is_multiple_of(raw.num_attention_heads) => {
                raw.hidden_size / raw.num_attention_heads
            }
            None => return Err(bad(
                "hidden_size is not a multiple of num_attention_heads and head_dim is not given"
                    .into(),
            )),
        };
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(bad(format!(
                "head_dim ({head_dim}) must be even and positive for RoPE"
            )));
        }
        let eos_token_ids = match raw.eos_token_id {
            None => Vec::new(),
            Some(OneOrMany::One(id)) => vec![id],
            Some(OneOrMany::Many(ids)) => ids,
        };
        Ok(LlamaConfig {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6) as f32,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            bos_token_id: raw.bos_token_id,
            eos_token_ids,
            pad_token_id: raw.pad_token_id,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(2048),
        })
    }

    /// The RoPE frequencies of one head (`head_dim / 2` values), as
    /// transformers computes them (`_compute_llama3_parameters` for llama3).
    pub fn inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim;
        let base: Vec<f64> = (0..d / 2)
            .map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / d as f64))
            .collect();
        match self.rope_scaling {
            RopeScaling::None => base.iter().map(|&f| f as f32).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => base
                .iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    let low_wavelen = old / low_freq_factor;
                    let high_wavelen = old / high_freq_factor;
                    let scaled = if wavelen > low_wavelen {
                        f / factor
                    } else if wavelen < high_wavelen {
                        f
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    };
                    scaled as f32
                })
                .collect(),
        }
    }
}

/// A two-layer GQA shape small enough for unit tests of the model's
/// plumbing (hidden 16, two heads sharing one KV head).
#[cfg(test)]
pub(crate) fn small_test_config(vocab_size: usize) -> LlamaConfig {
    LlamaConfig::parse(
        &format!(
            r#"{{"vocab_size": {vocab_size}, "hidden_size": 16, "intermediate_size": 24,
                "num_hidden_layers": 2, "num_attention_heads": 2,
                "num_key_value_heads": 1, "rms_norm_eps": 1e-5}}"#
        ),
        Path::new("config.json"),
    )
    .expect("a valid config")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HUB_31: &str = r#"{
        "architectures": ["LlamaForCausalLM"], "vocab_size": 128256, "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "tie_word_embeddings": false, "bos_token_id": 128000,
        "eos_token_id": [128001, 128008, 128009], "max_position_embeddings": 131072}"#;

    const NEW_FORM: &str = r#"{
        "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 128, "rms_norm_eps": 1e-05,
        "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "max_position_embeddings": 131072}"#;

    #[test]
    fn both_forms_give_the_same_config() {
        let a = LlamaConfig::parse(HUB_31, Path::new("a")).unwrap();
        let b = LlamaConfig::parse(NEW_FORM, Path::new("b")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.head_dim, 128);
        assert_eq!(a.eos_token_ids, vec![128001, 128008, 128009]);
        assert!(matches!(a.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let cfg = LlamaConfig::parse(HUB_31, Path::new("a")).unwrap();
        let plain = LlamaConfig {
            rope_scaling: RopeScaling::None,
            ..cfg.clone()
        };
        let (s, p) = (cfg.inv_freq(), plain.inv_freq());
        assert_eq!(s[0], p[0]);
        assert!((s[63] - p[63] / 8.0).abs() < 1e-12);
    }

    #[test]
    fn errors_name_the_problem() {
        let e = LlamaConfig::parse(r#"{"vocab_size": 3}"#, Path::new("x/config.json")).unwrap_err();
        assert!(e.to_string().contains("x/config.json"), "{e}");
        let gqa = HUB_31.replace("\"num_key_value_heads\": 8", "\"num_key_value_heads\": 5");
        assert!(LlamaConfig::parse(&gqa, Path::new("c")).is_err());
        let yarn = HUB_31.replace("\"llama3\"", "\"yarn\"");
        let e = LlamaConfig::parse(&yarn, Path::new("c")).unwrap_err();
        assert!(e.to_string().contains("yarn"));
    }
}
