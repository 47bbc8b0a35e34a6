//! The Backend trait: the fixed set of ops a LLaMA forward/backward, LoRA,
//! AdamW, reward head, PPO and sampling need, over device buffers.

pub mod cuda;
mod device;

pub use device::{Device, UnknownDevice};
