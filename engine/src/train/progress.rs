//! Progress of long training work on stderr: an indicatif bar with ETA,
//! tokens/s and the loss on a terminal; plain periodic lines otherwise
//! (CI logs, `nohup`, pipes), where a redrawn bar would be noise.
//!
//! Rates and the ETA count only the steps done in this process, so a resumed
//! run does not claim the speed of the steps it skipped.
//!
//! The terminal is one of a stage's metrics sinks: [`TrainProgress`] gets
//! the same step figures as `metrics.jsonl` and shows the first of them
//! (the loss, or PPO's reward), tokens/s from `tokens` where the stage logs
//! it, and the stage's peak memory so far (as its `memory.json` measures
//! it).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::metrics::{MetricsError, MetricsSink};
use crate::model::memory::gib_text;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, else plain lines every 10 s.
    Auto,
    /// Always a bar on stderr.
    Bar,
    /// Plain lines at most this often (and always at the first and last step).
    Plain { every: Duration },
    /// Nothing.
    Quiet,
}

impl From<crate::graph::Verbosity> for ProgressMode {
    /// Quiet shows nothing, verbose a plain line for every step, normal a
    /// bar on a terminal and a line every 10 s elsewhere.
    fn from(verbosity: crate::graph::Verbosity) -> Self {
        match verbosity {
            crate::graph::Verbosity::Quiet => ProgressMode::Quiet,
            crate::graph::Verbosity::Normal => ProgressMode::Auto,
            crate::graph::Verbosity::Verbose => ProgressMode::Plain {
                every: Duration::ZERO,
            },
        }
    }
}

/// The interval of plain lines in `Auto` mode.
pub const DEFAULT_PLAIN_EVERY: Duration = Duration::from_secs(10);

enum Sink {
    Bar(ProgressBar),
    Plain {
        out: Box<dyn Write + Send>,
        every: Duration,
        last: Option<Instant>,
    },
    Quiet,
}

/// Progress of one training loop of `total` optimizer steps.
pub struct TrainProgress {
    label: String,
    total: u64,
    start_step: u64,
    started: Instant,
    tokens: u64,
    sink: Sink,
    /// The stage's peak memory so far (bytes; 0 where nothing counts it).
    memory: fn() -> u64,
}

impl TrainProgress {
    /// Progress for steps `start_step + 1 ..= total` (`start_step` is the
    /// checkpoint's step on resume, else 0).
    pub fn new(label: &str, total: u64, start_step: u64, mode: ProgressMode) -> Self {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Plain {
                every: DEFAULT_PLAIN_EVERY,
            },
            other => other,
        };
        let sink = match mode {
            ProgressMode::Bar => {
                Sink::Bar(bar(label, total, start_step, ProgressDrawTarget::stderr()))
            }
            ProgressMode::Plain { every } => Sink::Plain {
                out: Box::new(std::io::stderr()),
                every,
                last: None,
            },
            ProgressMode::Auto | ProgressMode::Quiet => Sink::Quiet,
        };
        Self::with_sink(label, total, start_step, sink)
    }

    /// Plain lines into any writer (a log file, or a buffer in tests).
    pub fn plain_to(
        label: &str,
        total: u64,
        start_step: u64,
        every: Duration,
        out: Box<dyn Write + Send>,
    ) -> Self {
        let sink = Sink::Plain {
            out,
            every,
            last: None,
        };
        Self::with_sink(label, total, start_step, sink)
    }

    fn with_sink(label: &str, total: u64, start_step: u64, sink: Sink) -> Self {
        TrainProgress {
            label: label.to_string(),
            total,
            start_step,
            started: Instant::now(),
            tokens: 0,
            sink,
            memory: crate::backend::meter::window_peak,
        }
    }

    /// Show optimizer step `step` (1-based): `headline` is the figure to
    /// show (name, value), `tokens` what the step trained on, if counted.
    fn step_at(&mut self, step: u64, tokens: Option<u64>, headline: (&str, f64), now: Instant) {
        self.tokens += tokens.unwrap_or(0);
        let elapsed = now.saturating_duration_since(self.started);
        let mut figures = vec![format!("{} {:.4}", headline.0, headline.1)];
        if tokens.is_some() {
            figures.push(format!(
                "{:.0} tok/s",
                per_second(self.tokens as f64, elapsed)
            ));
        }
        let memory = (self.memory)();
        if memory > 0 {
            figures.push(format!("peak {}", gib_text(memory)));
        }
        let eta = self.eta(step, elapsed);
        let (label, total) = (&self.label, self.total);
        match &mut self.sink {
            Sink::Bar(bar) => {
                bar.set_position(step);
                bar.set_message(figures.join(" · "));
            }
            Sink::Plain { out, every, last } => {
                let due = last.is_none_or(|at| now.saturating_duration_since(at) >= *every);
                if due || step >= total {
                    *last = Some(now);
                    let percent = 100.0 * step as f64 / total.max(1) as f64;
                    let eta = eta.map_or_else(|| "?".to_string(), format_duration);
                    // A progress line that cannot be written is not worth
                    // stopping training for; the records are in the files.
                    let _ = writeln!(
                        out,
                        "[{label}] step {step}/{total} ({percent:.1}%)  {}  elapsed {}  ETA {eta}",
                        figures.join("  "),
                        format_duration(elapsed)
                    );
                    let _ = out.flush();
                }
            }
            Sink::Quiet => {}
        }
    }

    /// Time left at the pace of the steps done in this process.
    fn eta(&self, step: u64, elapsed: Duration) -> Option<Duration> {
        let done = step.checked_sub(self.start_step).filter(|d| *d > 0)?;
        let left = self.total.saturating_sub(step);
        Some(elapsed.mul_f64(left as f64 / done as f64))
    }

    /// Close the bar (left on screen with its last message).
    pub fn finish(&mut self) {
        if let Sink::Bar(bar) = &self.sink {
            bar.finish();
        }
    }
}

impl MetricsSink for TrainProgress {
    /// A progress line or bar that cannot be drawn is not worth stopping
    /// training for: this sink never fails.
    fn step(&mut self, step: u64, values: &[(&str, f64)]) -> Result<(), MetricsError> {
        let headline = values.first().copied().unwrap_or(("step", step as f64));
        let tokens = values
            .iter()
            .find(|(name, _)| *name == "tokens")
            .map(|(_, v)| *v as u64);
        self.step_at(step, tokens, headline, Instant::now());
        Ok(())
    }

    fn finish(&mut self) {
        TrainProgress::finish(self);
    }
}

fn bar(label: &str, total: u64, start_step: u64, target: ProgressDrawTarget) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), target);
    // The template is a constant: if indicatif ever rejected it, a bar
    // without a style is still a working bar.
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix:.bold} [{elapsed_precise}] {wide_bar} {pos}/{len} ETA {eta} {msg}",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(label.to_string());
    bar.set_position(start_step);
    bar.reset_eta();
    bar
}

fn per_second(amount: f64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { amount / secs } else { 0.0 }
}

/// `1h02m03s`, `4m05s`, `6s`.
pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer tests can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn plain_lines_are_periodic_with_rate_and_eta() {
        let out = Shared::default();
        let mut progress =
            TrainProgress::plain_to("sft", 10, 0, Duration::from_secs(5), Box::new(out.clone()));
        progress.memory = || 3 << 29;
        let t0 = progress.started;
        for step in 1..=10u64 {
            progress.step_at(
                step,
                Some(100),
                ("loss", 2.0 / step as f64),
                t0 + Duration::from_secs(2 * step),
            );
        }
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // First step, then every >= 5 s (steps 4, 7, 10), and the last.
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(
            lines[0],
            "[sft] step 1/10 (10.0%)  loss 2.0000  50 tok/s  peak 1.5 GiB  elapsed 2s  ETA 18s"
        );
        assert!(lines[3].starts_with("[sft] step 10/10 (100.0%)  loss 0.2000  50 tok/s"));
        assert!(lines[3].ends_with("elapsed 20s  ETA 0s"), "{}", lines[3]);
    }

    #[test]
    fn resumed_runs_estimate_from_their_own_steps() {
        let out = Shared::default();
        let mut progress =
            TrainProgress::plain_to("ppo", 100, 50, Duration::ZERO, Box::new(out.clone()));
        let t0 = progress.started;
        progress.memory = || 0;
        progress.step_at(51, None, ("reward", 1.0), t0 + Duration::from_secs(3));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("step 51/100 (51.0%)  reward 1.0000  elapsed"),
            "{text}"
        );
        assert!(text.contains("ETA 2m27s"), "49 steps at 3 s each: {text}");
    }

    #[test]
    fn bar_carries_loss_and_tokens_per_second() {
        let mut progress = TrainProgress::with_sink(
            "reward",
            8,
            2,
            Sink::Bar(bar("reward", 8, 2, ProgressDrawTarget::hidden())),
        );
        progress.memory = || 0;
        let t0 = progress.started;
        progress.step_at(3, Some(400), ("loss", 0.5724), t0 + Duration::from_secs(2));
        let Sink::Bar(bar) = &progress.sink else {
            panic!("expected a bar")
        };
        assert_eq!(bar.position(), 3);
        assert_eq!(bar.length(), Some(8));
        assert_eq!(bar.message(), "loss 0.5724 · 200 tok/s");
        progress.finish();
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(Duration::from_secs(6)), "6s");
        assert_eq!(format_duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(format_duration(Duration::from_secs(3723)), "1h02m03s");
    }
}
