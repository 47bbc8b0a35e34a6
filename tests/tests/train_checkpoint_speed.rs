//! Checkpoint save/load throughput, a measurement rather than a test: it is
//! ignored by default and run on demand (figures go to engine/PERF.md):
//!
//! `cargo test -p poker-pipe-tests --test train_checkpoint_speed -- --ignored --nocapture`
//!
//! It prints one JSON line; `POKER_PIPE_BENCH_MB` sets the state size
//! (default 256 MB) and `POKER_PIPE_BENCH_DIR` where it is written (default
//! the system temp dir: put it on the disk the cache will live on).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Instant;

use poker_pipe::train::checkpoint::{self, Checkpoint, TensorData, TrainState};
use poker_pipe::train::data_order::Cursor;
use poker_pipe::train::schedule::{Schedule, ScheduleKind};

#[test]
#[ignore = "a measurement; run with --ignored --nocapture"]
fn checkpoint_throughput() {
    let megabytes: usize = std::env::var("POKER_PIPE_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let root = std::env::var("POKER_PIPE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let dir = root.join(format!("poker-pipe-ckpt-bench-{}", std::process::id()));
    // 64 tensors, like the LoRA A/B pairs and moments of a few layers.
    let per_tensor = megabytes * (1 << 20) / 4 / 64;
    let mut state: u32 = 1;
    let mut tensors = BTreeMap::new();
    for t in 0..64 {
        let data = (0..per_tensor)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32
            })
            .collect();
        tensors.insert(
            format!("layer.{t}.lora"),
            TensorData {
                shape: vec![per_tensor],
                data,
            },
        );
    }
    let checkpoint = Checkpoint {
        state: TrainState {
            step: 1,
            cursor: Cursor::default(),
            rngs: BTreeMap::new(),
            schedule: Schedule {
                kind: ScheduleKind::Constant,
                base_lr: 1e-4,
                warmup_steps: 0,
                total_steps: 1,
            },
            extra: Default::default(),
        },
        tensors,
    };
    let bytes = (per_tensor * 64 * 4) as f64;
    let started = Instant::now();
    checkpoint::save(&dir, &checkpoint).unwrap();
    let save_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let loaded = checkpoint::load(&dir).unwrap().unwrap();
    let load_s = started.elapsed().as_secs_f64();
    assert_eq!(loaded.checkpoint.tensors.len(), 64);
    std::fs::remove_dir_all(&dir).unwrap();
    println!(
        "{{\"bytes\": {bytes}, \"save_s\": {save_s:.3}, \"load_s\": {load_s:.3}, \
         \"save_mb_per_s\": {:.1}, \"load_mb_per_s\": {:.1}}}",
        bytes / save_s / 1e6,
        bytes / load_s / 1e6
    );
}
