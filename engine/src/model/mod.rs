//! Our LLaMA: config, weights (safetensors, hf-hub), tokenizer, LoRA,
//! forward/backward, reward head, generation. Written once over `Backend`.

pub mod hub;
pub mod source;
