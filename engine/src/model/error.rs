//! What can go wrong loading, saving or running a model, as diagnostics
//! that name the file and say what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ModelError {
    #[error("cannot read {path}")]
    #[diagnostic(
        code(model::io),
        help("check that the model directory exists and is readable")
    )]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} is not a valid model config: {reason}")]
    #[diagnostic(
        code(model::config),
        help(
            "expected a Hugging Face LlamaForCausalLM config.json (hidden_size, num_hidden_layers, ...)"
        )
    )]
    Config { path: PathBuf, reason: String },

    #[error("{path}: unsupported {what}")]
    #[diagnostic(code(model::unsupported), help("{hint}"))]
    Unsupported {
        path: PathBuf,
        what: String,
        hint: String,
    },

    #[error("{path} is not a usable GGUF file: {reason}")]
    #[diagnostic(
        code(model::gguf),
        help(
            "re-download or re-convert the file (llama.cpp's convert_hf_to_gguf.py writes valid ones)"
        )
    )]
    Gguf { path: PathBuf, reason: String },

    #[error("{path} is not a valid safetensors file: {reason}")]
    #[diagnostic(code(model::safetensors), help("re-download or re-export the weights"))]
    Safetensors { path: PathBuf, reason: String },

    #[error("tensor `{name}` in {path} has {count} of {len} values that are NaN or infinite")]
    #[diagnostic(
        code(model::non_finite),
        help("the weights are corrupt or came from a diverged run: re-export or retrain them")
    )]
    NonFinite {
        path: PathBuf,
        name: String,
        count: usize,
        len: usize,
    },

    #[error("tensor `{name}` is missing from {dir}")]
    #[diagnostic(
        code(model::missing_tensor),
        help(
            "the weights do not match config.json: is this a LLaMA checkpoint in the Hugging Face layout?"
        )
    )]
    MissingTensor { name: String, dir: PathBuf },

    #[error("tensor `{name}` has shape {found:?}, config.json implies {expected:?}")]
    #[diagnostic(code(model::shape), help("the weights do not match config.json"))]
    Shape {
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },

    #[error("cannot load the tokenizer {path}: {reason}")]
    #[diagnostic(
        code(model::tokenizer),
        help("the model directory needs a tokenizer.json in the Hugging Face tokenizers format")
    )]
    Tokenizer { path: PathBuf, reason: String },

    #[error("the chat template in {path} cannot be used: {reason}")]
    #[diagnostic(
        code(model::chat_template),
        help(
            "fix `chat_template` in that tokenizer_config.json, or set `chat_template: false` on the stage (`--no-chat-template` on the command line) to send prompts without it"
        )
    )]
    ChatTemplate { path: PathBuf, reason: String },

    #[error("token id {id} is outside the vocabulary of {vocab} tokens")]
    #[diagnostic(
        code(model::token),
        help("the tokenizer does not belong to this model")
    )]
    TokenOutOfRange { id: u32, vocab: usize },

    #[error("cannot write {path}")]
    #[diagnostic(
        code(model::write),
        help("check free space and permissions of the output directory")
    )]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} is not a valid LoRA adapter: {reason}")]
    #[diagnostic(
        code(model::adapter),
        help("expected a PEFT LoRA adapter: adapter_config.json + adapter_model.safetensors")
    )]
    Adapter { path: PathBuf, reason: String },
}

impl ModelError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
