//! Training machinery shared by the stages: AdamW, schedules, clipping,
//! checkpoints and resume, metrics, progress.

pub mod adamw;
pub mod clip;
