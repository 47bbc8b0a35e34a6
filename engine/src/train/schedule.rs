//! Learning-rate schedules with linear warmup, defined exactly as HF
//! transformers' `get_constant_schedule_with_warmup`,
//! `get_linear_schedule_with_warmup` and `get_cosine_schedule_with_warmup`
//! (`transformers/optimization.py`), so a run here and a run there use the
//! same rate at every step. Checked against rates recorded from transformers
//! by `tests/golden/schedule/make_fixture.py`.

use serde::{Deserialize, Serialize};

/// The shape of the rate after warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Stays at the base rate.
    Constant,
    /// Falls linearly to zero at the last step.
    Linear,
    /// Half a cosine from the base rate to zero at the last step.
    Cosine,
}

/// A schedule over a known number of optimizer steps. Its whole state is
/// the step number, so resuming needs only the checkpoint's step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub base_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl Schedule {
    /// The rate for the optimizer step with 0-based index `step`: what a
    /// torch `LambdaLR` gives after `step` calls of `scheduler.step()`.
    pub fn lr(&self, step: u64) -> f64 {
        self.base_lr * self.factor(step)
    }

    /// The multiplier of the base rate at `step`, in [0, 1].
    pub fn factor(&self, step: u64) -> f64 {
        let step_f = step as f64;
        if step < self.warmup_steps {
            return step_f / self.warmup_steps.max(1) as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Linear => {
                let left = self.total_steps as f64 - step_f;
                (left / decay_steps).max(0.0)
            }
            ScheduleKind::Cosine => {
                // transformers' default num_cycles = 0.5: half a period.
                let progress = (step_f - self.warmup_steps as f64) / decay_steps;
                let cycles = 0.5;
                (0.5 * (1.0 + (std::f64::consts::PI * cycles * 2.0 * progress).cos())).max(0.0)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Fixture {
        cases: Vec<Case>,
    }

    #[derive(Deserialize)]
    struct Case {
        kind: ScheduleKind,
        lr: f64,
        warmup_steps: u64,
        total_steps: u64,
        rates: Vec<f64>,
    }

    /// Every recorded rate, including steps past the end, within 1e-12
    /// relative (both sides compute in f64; only rounding differs).
    #[test]
    fn matches_transformers_rates() {
        let text = include_str!("../../../tests/golden/schedule/schedules.json");
        let fixture: Fixture = serde_json::from_str(text).unwrap();
        assert_eq!(fixture.cases.len(), 8);
        for case in fixture.cases {
            let schedule = Schedule {
                kind: case.kind,
                base_lr: case.lr,
                warmup_steps: case.warmup_steps,
                total_steps: case.total_steps,
            };
            for (step, &want) in case.rates.iter().enumerate() {
                let got = schedule.lr(step as u64);
                let tol = 1e-12 * want.abs().max(case.lr * 1e-6);
                assert!(
                    (got - want).abs() <= tol,
                    "{:?} warmup {} total {} step {step}: {got} vs {want}",
                    case.kind,
                    case.warmup_steps,
                    case.total_steps
                );
            }
        }
    }

    #[test]
    fn warmup_rises_linearly_then_cosine_ends_at_zero() {
        let schedule = Schedule {
            kind: ScheduleKind::Cosine,
            base_lr: 1.0,
            warmup_steps: 4,
            total_steps: 12,
        };
        assert_eq!(schedule.lr(0), 0.0);
        assert_eq!(schedule.lr(2), 0.5);
        assert_eq!(schedule.lr(4), 1.0);
        assert!((schedule.lr(8) - 0.5).abs() < 1e-15);
        assert!(schedule.lr(12).abs() < 1e-15);
        let json = serde_json::to_string(&schedule).unwrap();
        assert_eq!(serde_json::from_str::<Schedule>(&json).unwrap(), schedule);
    }
}
