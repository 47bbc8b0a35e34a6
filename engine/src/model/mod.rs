//! Our LLaMA: config, weights (safetensors, hf-hub), tokenizer, LoRA,
//! forward/backward, reward head, generation. Written once over `Backend`.

pub mod adapters;
pub mod batch;
pub mod chat;
pub mod config;
pub mod error;
pub mod export;
pub mod generate;
pub mod gguf;
pub mod hub;
pub mod linear;
pub mod llama;
pub mod load;
pub mod lora;
pub mod memory;
pub mod param;
pub mod reward;
pub mod score;
pub mod source;
pub mod tokenizer;
pub mod weights;

pub use batch::Batch;
pub use config::LlamaConfig;
pub use error::ModelError;
pub use llama::{Llama, TrainPass};
pub use tokenizer::Tokenizer;
