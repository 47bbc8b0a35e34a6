//! Training machinery shared by the stages: AdamW, schedules, clipping,
//! checkpoints and resume, metrics, progress.

pub mod adamw;
pub mod checkpoint;
pub mod clip;
pub mod data_order;
pub mod dataset;
pub mod dpo;
pub mod ema;
pub mod grpo;
pub mod guard;
pub mod lm_loop;
pub mod metrics;
pub mod policy;
pub mod ppo;
pub mod ppo_roles;
pub mod progress;
pub mod schedule;
pub mod step_memory;
pub mod tensorboard;
pub mod wall_clock;
