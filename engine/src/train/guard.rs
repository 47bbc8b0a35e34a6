//! Stop training at the first non-finite loss or gradient norm, with an
//! error that says where it happened and what to change. One NaN poisons
//! every weight at the next optimizer step, so the stage must return this
//! error before stepping; its last good checkpoint stays on disk and a
//! re-run with a lower learning rate starts a new stage hash.

use miette::Diagnostic;
use thiserror::Error;

/// What went non-finite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watched {
    Loss,
    GradNorm,
}

impl Watched {
    fn as_str(self) -> &'static str {
        match self {
            Watched::Loss => "loss",
            Watched::GradNorm => "gradient norm",
        }
    }
}

/// A training stage diverged.
#[derive(Debug, Error, Diagnostic)]
#[error("stage `{stage}`: the {} became {value} at step {step}", watched.as_str())]
#[diagnostic(code(train::non_finite), help("{help}"))]
pub struct NonFinite {
    pub stage: String,
    pub watched: Watched,
    pub step: u64,
    pub value: f64,
    help: String,
}

/// The settings a diverged run is advised to change, and where it can
/// resume from.
#[derive(Clone, Debug, PartialEq)]
pub struct LossGuard {
    pub stage: String,
    /// The learning rate the stage was configured with.
    pub lr: f64,
    /// Clipping by global norm, if on.
    pub max_grad_norm: Option<f64>,
    /// The step of the last checkpoint written, if any.
    pub last_good_step: Option<u64>,
}

impl LossGuard {
    /// `Ok` for a finite loss; otherwise the error to return from the stage.
    pub fn check_loss(&self, step: u64, loss: f64) -> Result<(), NonFinite> {
        self.check(Watched::Loss, step, loss)
    }

    /// `Ok` for a finite gradient norm (checked before clipping, which would
    /// otherwise scale NaN into every weight).
    pub fn check_grad_norm(&self, step: u64, norm: f64) -> Result<(), NonFinite> {
        self.check(Watched::GradNorm, step, norm)
    }

    fn check(&self, watched: Watched, step: u64, value: f64) -> Result<(), NonFinite> {
        if value.is_finite() {
            return Ok(());
        }
        Err(NonFinite {
            stage: self.stage.clone(),
            watched,
            step,
            value,
            help: self.advice(),
        })
    }

    fn advice(&self) -> String {
        let lower = self.lr / 10.0;
        let clipping = match self.max_grad_norm {
            Some(norm) => format!(
                "gradients are clipped at a global norm of {norm}; try a smaller max_grad_norm \
                 (for example {})",
                norm / 2.0
            ),
            None => "turn on gradient clipping with `max_grad_norm: 1.0`".to_string(),
        };
        let checkpoint = match self.last_good_step {
            Some(step) => format!("the last good checkpoint (step {step}) is kept"),
            None => "no checkpoint was written before this step".to_string(),
        };
        format!(
            "lower the learning rate (now {:e}; for example {lower:e}) and {clipping}; a \
             warmup (`warmup_steps`) also helps. {checkpoint}; a fixed run starts again from \
             the stage's inputs.",
            self.lr
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn guard(max_grad_norm: Option<f64>, last_good_step: Option<u64>) -> LossGuard {
        LossGuard {
            stage: "sft".into(),
            lr: 5e-4,
            max_grad_norm,
            last_good_step,
        }
    }

    #[test]
    fn finite_values_pass_and_extremes_do_not() {
        let g = guard(Some(1.0), Some(40));
        for ok in [0.0, 1e-30, 3.5, 1e30, -2.0] {
            g.check_loss(7, ok).unwrap();
            g.check_grad_norm(7, ok).unwrap();
        }
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(g.check_loss(7, bad).is_err());
            assert!(g.check_grad_norm(7, bad).is_err());
        }
    }

    #[test]
    fn error_names_the_step_and_suggests_a_lower_rate_and_clipping() {
        let err = guard(Some(1.0), Some(40))
            .check_loss(57, f64::NAN)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "stage `sft`: the loss became NaN at step 57"
        );
        let help = err.help().unwrap().to_string();
        for needle in [
            "lower the learning rate",
            "5e-4",
            "5e-5",
            "max_grad_norm",
            "0.5",
            "step 40",
        ] {
            assert!(help.contains(needle), "missing {needle}: {help}");
        }
        let err = guard(None, None)
            .check_grad_norm(3, f64::INFINITY)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "stage `sft`: the gradient norm became inf at step 3"
        );
        let help = err.help().unwrap().to_string();
        assert!(
            help.contains("max_grad_norm: 1.0") && help.contains("no checkpoint"),
            "{help}"
        );
    }
}
