//! A stage's training record: `metrics.jsonl` (one JSON object per logged
//! step, for plots and tools), the same scalars as TensorBoard events
//! (`tensorboard --logdir runs/<pipeline>`), `training.log` (the same in
//! plain lines, for people) and `summary.json` (headline numbers).
//!
//! These records hold no wall-clock figure: the same seed on the same
//! machine must give byte-identical outputs. tokens/s and peak memory go to
//! the terminal and to their own TensorBoard file under `wall/`
//! ([`super::wall_clock`]), which nothing compares. On resume, records past
//! the checkpoint's step are dropped first, so an interrupted-then-resumed
//! run writes the same files as an uninterrupted one.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use miette::Diagnostic;
use serde::Serialize;
use thiserror::Error;

use super::tensorboard::EventWriter;
use super::wall_clock::WallClock;

pub const METRICS_FILE: &str = "metrics.jsonl";
pub const LOG_FILE: &str = "training.log";
pub const SUMMARY_FILE: &str = "summary.json";

#[derive(Debug, Error, Diagnostic)]
#[error("cannot write training record `{}`: {source}", path.display())]
#[diagnostic(
    code(train::metrics::io),
    help("check free disk space and write access to the stage's directory")
)]
pub struct MetricsError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MetricsError + '_ {
    move |source| MetricsError {
        path: path.to_path_buf(),
        source,
    }
}

/// A destination for a training stage's figures: a file format, a tracker,
/// the terminal. Every training kind records through [`MetricsLog`], which
/// hands each step to every sink, so another tracker is one more
/// implementation of this trait, added where [`MetricsLog::with`] is called.
pub trait MetricsSink: Send {
    /// The figures of optimizer step `step` (1-based), in the order the
    /// stage logs them; non-finite values included.
    fn step(&mut self, step: u64, values: &[(&str, f64)]) -> Result<(), MetricsError>;
    /// A free-form line (the stage's start, a resume notice); most sinks
    /// have nowhere to put it.
    fn note(&mut self, _text: &str) -> Result<(), MetricsError> {
        Ok(())
    }
    /// The stage stopped (finished or interrupted).
    fn finish(&mut self) {}
}

/// A stage's records: `metrics.jsonl`, the TensorBoard events and
/// `training.log` in one directory, the wall-clock scalars in `wall/`, and
/// whatever other sinks the stage adds (its progress on the terminal).
pub struct MetricsLog {
    sinks: Vec<Box<dyn MetricsSink>>,
}

impl MetricsLog {
    /// Start fresh records in `dir`, replacing any old ones.
    pub fn create(dir: &Path) -> Result<Self, MetricsError> {
        Self::open(dir, None)
    }

    /// Continue the records in `dir` after a resume from the checkpoint of
    /// `step`: step records past it (written before the interruption, and
    /// about to be redone) are removed, as are notes after them.
    pub fn resume(dir: &Path, step: u64) -> Result<Self, MetricsError> {
        Self::open(dir, Some(step))
    }

    fn open(dir: &Path, resume_step: Option<u64>) -> Result<Self, MetricsError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let events = match resume_step {
            Some(step) => EventWriter::resume(dir, step)?,
            None => EventWriter::create(dir)?,
        };
        Ok(MetricsLog {
            sinks: vec![
                Box::new(JsonLines(LineFile::open(
                    &dir.join(METRICS_FILE),
                    resume_step,
                    jsonl_step,
                )?)),
                Box::new(events),
                Box::new(TextLog(LineFile::open(
                    &dir.join(LOG_FILE),
                    resume_step,
                    log_step,
                )?)),
                Box::new(WallClock::open(dir, resume_step)?),
            ],
        })
    }

    /// The same records, also handed to `sink`.
    pub fn with(mut self, sink: impl MetricsSink + 'static) -> Self {
        self.sinks.push(Box::new(sink));
        self
    }

    /// Record one step in every sink: in the files, a JSON object
    /// `{"step": .., <name>: <value>, ..}` in the given order, a TensorBoard
    /// scalar per value, and a log line `step N  name value  ..`.
    /// Non-finite values are written as JSON `null` (JSON has no NaN) and
    /// as `NaN`/`inf` in the log.
    pub fn record(&mut self, step: u64, values: &[(&str, f64)]) -> Result<(), MetricsError> {
        self.sinks.iter_mut().try_for_each(|s| s.step(step, values))
    }

    /// A free-form line in `training.log` (stage start, evaluation results,
    /// resume notices).
    pub fn note(&mut self, text: &str) -> Result<(), MetricsError> {
        self.sinks.iter_mut().try_for_each(|s| s.note(text))
    }

    /// Tell every sink the stage stopped (closes a progress bar).
    pub fn finish(&mut self) {
        self.sinks.iter_mut().for_each(|s| s.finish());
    }
}

/// A text file of one record per line, reopened on resume with the lines
/// up to the checkpoint's step (`step_of` reads a line's step).
struct LineFile {
    path: PathBuf,
    out: BufWriter<File>,
}

impl LineFile {
    fn open(
        path: &Path,
        resume_step: Option<u64>,
        step_of: fn(&str) -> Option<u64>,
    ) -> Result<Self, MetricsError> {
        let kept = match resume_step {
            Some(step) => keep_until(path, step, step_of)?,
            None => Vec::new(),
        };
        Ok(LineFile {
            path: path.to_path_buf(),
            out: rewrite(path, &kept)?,
        })
    }

    fn line(&mut self, line: &str) -> Result<(), MetricsError> {
        writeln!(self.out, "{line}").map_err(io(&self.path))?;
        self.out.flush().map_err(io(&self.path))
    }
}

/// `metrics.jsonl`: one JSON object per step.
struct JsonLines(LineFile);

impl MetricsSink for JsonLines {
    fn step(&mut self, step: u64, values: &[(&str, f64)]) -> Result<(), MetricsError> {
        let mut object = serde_json::Map::new();
        object.insert("step".to_string(), step.into());
        for (name, value) in values {
            object.insert(name.to_string(), serde_json::json!(value));
        }
        self.0.line(&serde_json::Value::Object(object).to_string())
    }
}

/// `training.log`: notes and a plain line per step, for people.
struct TextLog(LineFile);

impl MetricsSink for TextLog {
    fn step(&mut self, step: u64, values: &[(&str, f64)]) -> Result<(), MetricsError> {
        let mut line = format!("step {step}");
        for (name, value) in values {
            line.push_str(&format!("  {name} {}", format_value(*value)));
        }
        self.0.line(&line)
    }

    fn note(&mut self, text: &str) -> Result<(), MetricsError> {
        self.0.line(text)
    }
}

/// Numbers in the log: compact, with enough digits to compare runs.
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "inf" } else { "-inf" }.to_string()
    } else if value != 0.0 && (value.abs() < 1e-3 || value.abs() >= 1e6) {
        format!("{value:.4e}")
    } else {
        format!("{value:.6}")
    }
}

/// The step a `metrics.jsonl` line records.
fn jsonl_step(line: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()?
        .get("step")?
        .as_u64()
}

/// The step a `training.log` step line records (`step N  ...`).
fn log_step(line: &str) -> Option<u64> {
    line.strip_prefix("step ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The lines of `path` up to the first step record past `step`.
fn keep_until(
    path: &Path,
    step: u64,
    step_of: fn(&str) -> Option<u64>,
) -> Result<Vec<String>, MetricsError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(io(path)(err)),
    };
    let mut kept = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(io(path))?;
        if step_of(&line).is_some_and(|s| s > step) {
            break;
        }
        kept.push(line);
    }
    Ok(kept)
}

fn rewrite(path: &Path, lines: &[String]) -> Result<BufWriter<File>, MetricsError> {
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(io(path))?;
    let mut writer = BufWriter::new(file);
    for line in lines {
        writeln!(writer, "{line}").map_err(io(path))?;
    }
    writer.flush().map_err(io(path))?;
    Ok(writer)
}

/// Write `summary.json` in `dir`: pretty JSON with a final newline, via a
/// temporary file and a rename so a reader never sees half of it.
pub fn write_summary(dir: &Path, summary: &impl Serialize) -> Result<PathBuf, MetricsError> {
    let path = dir.join(SUMMARY_FILE);
    let temp = dir.join(format!("{SUMMARY_FILE}.tmp"));
    let mut text = serde_json::to_string_pretty(summary)
        .map_err(|err| io(&path)(std::io::Error::other(err)))?;
    text.push('\n');
    std::fs::write(&temp, text).map_err(io(&temp))?;
    std::fs::rename(&temp, &path).map_err(io(&path))?;
    Ok(path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn read(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).unwrap()
    }

    #[test]
    fn records_steps_as_json_lines_and_log_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::create(dir.path()).unwrap();
        log.note("sft: 3 epochs, 90 steps").unwrap();
        log.record(1, &[("loss", 2.5), ("lr", 5e-4)]).unwrap();
        log.record(2, &[("loss", f64::NAN), ("grad_norm", f64::INFINITY)])
            .unwrap();
        let jsonl = read(dir.path(), METRICS_FILE);
        let lines: Vec<serde_json::Value> = jsonl
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines[0],
            serde_json::json!({"step": 1, "loss": 2.5, "lr": 5e-4})
        );
        assert_eq!(lines[1]["loss"], serde_json::Value::Null);
        assert_eq!(
            jsonl.lines().next().unwrap(),
            r#"{"step":1,"loss":2.5,"lr":0.0005}"#,
            "keys keep their order"
        );
        assert_eq!(
            read(dir.path(), LOG_FILE),
            "sft: 3 epochs, 90 steps\nstep 1  loss 2.500000  lr 5.0000e-4\n\
             step 2  loss NaN  grad_norm inf\n"
        );
    }

    #[test]
    fn resume_drops_records_past_the_checkpoint_and_matches_a_straight_run() {
        let straight = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::create(straight.path()).unwrap();
        log.note("start").unwrap();
        for step in 1..=6 {
            log.record(step, &[("loss", 1.0 / step as f64)]).unwrap();
        }
        drop(log);

        let resumed = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::create(resumed.path()).unwrap();
        log.note("start").unwrap();
        for step in 1..=5 {
            log.record(step, &[("loss", 1.0 / step as f64)]).unwrap();
        }
        drop(log);
        // Killed after step 5, the last checkpoint was at step 3.
        let mut log = MetricsLog::resume(resumed.path(), 3).unwrap();
        for step in 4..=6 {
            log.record(step, &[("loss", 1.0 / step as f64)]).unwrap();
        }
        drop(log);
        for name in [METRICS_FILE, LOG_FILE] {
            assert_eq!(
                read(resumed.path(), name),
                read(straight.path(), name),
                "{name}"
            );
        }
    }

    #[test]
    fn summary_is_pretty_json_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let summary =
            serde_json::json!({"action_accuracy": 0.61, "arena": {"random": {"hands": 2000}}});
        let path = write_summary(dir.path(), &summary).unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.ends_with("}\n"));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            summary
        );
        assert!(!dir.path().join("summary.json.tmp").exists());
    }
}
