//! The figures that depend on the clock and the machine, as TensorBoard
//! scalars: tokens/s (over each step) and the stage's peak memory so far
//! (GiB), per step, in their own event file under `wall/` beside the
//! stage's records. `tensorboard --logdir runs/<pipeline>` shows them as
//! the run `<stage>/wall`.
//!
//! They are kept apart because everything else a stage records is the same
//! bytes for the same seed, resumed or not; these files are not, and
//! nothing compares them. On resume, events past the checkpoint are dropped
//! like the others'.

use std::path::Path;
use std::time::Instant;

use super::metrics::{MetricsError, MetricsSink};
use super::tensorboard::EventWriter;

/// The folder of the wall-clock event file, inside a stage's records.
pub const WALL_DIR: &str = "wall";

const GIB: f64 = (1u64 << 30) as f64;

pub struct WallClock {
    events: EventWriter,
    last: Instant,
    /// The stage's peak memory so far, in bytes.
    memory: fn() -> u64,
}

impl WallClock {
    /// Fresh (`resume_step` None) or continued after the checkpoint of
    /// `resume_step`, in `records/wall/`.
    pub fn open(records: &Path, resume_step: Option<u64>) -> Result<Self, MetricsError> {
        let dir = records.join(WALL_DIR);
        let events = match resume_step {
            Some(step) => EventWriter::resume(&dir, step)?,
            None => EventWriter::create(&dir)?,
        };
        Ok(WallClock {
            events,
            last: Instant::now(),
            memory: crate::backend::meter::window_peak,
        })
    }

    fn step_at(
        &mut self,
        step: u64,
        values: &[(&str, f64)],
        now: Instant,
    ) -> Result<(), MetricsError> {
        let seconds = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let mut scalars = Vec::with_capacity(2);
        let tokens = values.iter().find(|(name, _)| *name == "tokens");
        if let Some((_, tokens)) = tokens.filter(|_| seconds > 0.0) {
            scalars.push(("tokens_per_s", tokens / seconds));
        }
        let memory = (self.memory)();
        if memory > 0 {
            scalars.push(("peak_memory_gib", memory as f64 / GIB));
        }
        self.events.scalars(step, &scalars)
    }
}

impl MetricsSink for WallClock {
    fn step(&mut self, step: u64, values: &[(&str, f64)]) -> Result<(), MetricsError> {
        self.step_at(step, values, Instant::now())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::train::tensorboard::{EVENTS_FILE, read_events};

    #[test]
    fn tokens_per_second_and_peak_memory_per_step() {
        let dir = tempfile::tempdir().unwrap();
        let mut wall = WallClock::open(dir.path(), None).unwrap();
        wall.memory = || 3 << 29;
        let t0 = wall.last;
        wall.step_at(
            1,
            &[("loss", 2.0), ("tokens", 500.0)],
            t0 + Duration::from_millis(250),
        )
        .unwrap();
        wall.step_at(2, &[("reward", 0.5)], t0 + Duration::from_millis(500))
            .unwrap();
        let events = read_events(&dir.path().join(WALL_DIR).join(EVENTS_FILE)).unwrap();
        let scalars: Vec<(i64, String, f32)> = events
            .iter()
            .filter_map(|e| Some((e.step, e.summary.as_ref()?)))
            .flat_map(|(step, s)| {
                s.value
                    .iter()
                    .map(move |v| (step, v.tag.clone(), v.simple_value.unwrap()))
            })
            .collect();
        assert_eq!(
            scalars,
            vec![
                (1, "tokens_per_s".to_string(), 2000.0),
                (1, "peak_memory_gib".to_string(), 1.5),
                (2, "peak_memory_gib".to_string(), 1.5),
            ]
        );
    }
}
