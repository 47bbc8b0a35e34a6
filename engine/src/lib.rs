//! poker-pipe: poker data, a LLaMA of our own, SFT, reward model, PPO and
//! evaluation, driven by one validated, content-hashed YAML pipeline.
//!
//! Dependencies point one way: `cli` -> `spec`, `graph`, `stages`;
//! `stages` -> `graph`, `spec`, `train`, `model`, `poker`; `train` -> `model`;
//! `model` -> `backend` -> kernels. `poker` and `backend` stand alone;
//! `report` reads what `graph` stored.

pub mod backend;
pub mod cli;
pub mod error;
pub mod graph;
pub mod model;
pub mod poker;
pub mod report;
pub mod spec;
pub mod stages;
pub mod train;
