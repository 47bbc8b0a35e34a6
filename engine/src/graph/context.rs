//! What a running stage sees: its inputs, where to write, where to keep
//! resume state, the device and execution settings, a log, progress and the
//! cancellation flag set by Ctrl-C.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::kind::ArtifactType;
use crate::backend::Device;
use crate::error::Exit;
use crate::model::memory::{PlannedModel, Trains};

/// How a stage executes: from the memory preset, never part of a hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecSettings {
    /// The memory preset these settings came from, if any.
    pub preset: Option<String>,
    pub micro_batch: u32,
    /// Global batch / micro-batch (1 for stages without a batch size).
    pub grad_accum: u32,
    pub activation_checkpointing: bool,
    /// Optimizer state in host memory (the preset's `offload_optimizer`).
    #[serde(default)]
    pub offload_optimizer: bool,
    pub gpu_memory_gib: Option<f64>,
    /// The model this stage's weights descend from (a pretrained model, or
    /// a random one's config), followed through upstream stages (see
    /// [`super::ModelOrigin`]): what the memory planner sizes a reward or
    /// PPO stage by. Derived from the stage graph, so never part of a hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model: Option<PlannedModel>,
    /// For each params field naming an upstream model, the LoRA adapter
    /// that model carries (see `StageKind::output_adapter`), so a stage
    /// that continues an adapter plans it at its real rank.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub input_adapters: BTreeMap<String, Trains>,
    /// What the memory planner is asked about a run that happened, on the
    /// host: set only when a finished stage's `memory.json` sets the
    /// planner's figure beside the measured peak.
    #[serde(skip)]
    pub ran: Option<RanOnHost>,
}

/// A finished run on the CPU backend, as the memory planner needs it: the
/// planner then sizes the CPU backend (no CUDA context, the CPU's logits
/// chunk) and the prompts the stage actually rolled out instead of its
/// assumption about prompts it has not read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RanOnHost {
    /// The longest prompt rolled out, in tokens (PPO).
    pub prompt_tokens: Option<usize>,
    /// The longest roll-out trained on, prompt and response, in tokens
    /// (PPO: responses may stop before `max_new_tokens`).
    pub sequence_tokens: Option<usize>,
    /// Whether the run wrote a checkpoint (a short PPO run may not).
    pub checkpointed: bool,
}

/// How a stage's `run` ended when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Outputs are complete in `out_dir`.
    Done,
    /// Cancelled: state saved under `work_dir`, outputs incomplete.
    Interrupted,
}

/// A stage failure: bad user data (exit 1) or a runtime failure (exit 3).
#[derive(Debug)]
pub struct StageError {
    pub exit: Exit,
    pub report: miette::Report,
}

impl StageError {
    pub fn user(report: impl Into<miette::Report>) -> Self {
        StageError {
            exit: Exit::User,
            report: report.into(),
        }
    }

    pub fn runtime(report: impl Into<miette::Report>) -> Self {
        StageError {
            exit: Exit::Runtime,
            report: report.into(),
        }
    }

    /// Work stopped by Ctrl-C deep inside a stage; the stage turns it into
    /// [`Outcome::Interrupted`] (see [`StageError::or_interrupted`]).
    pub fn interrupted() -> Self {
        StageError {
            exit: Exit::Interrupted,
            report: miette::miette!("interrupted"),
        }
    }

    /// A stage's result with an [`StageError::interrupted`] error turned
    /// into the outcome it stands for (the log flushed, the bar cleared).
    pub fn or_interrupted(result: StageResult, ctx: &mut StageContext) -> StageResult {
        match result {
            Err(e) if e.exit == Exit::Interrupted => {
                ctx.finish();
                Ok(Outcome::Interrupted)
            }
            other => other,
        }
    }
}

pub type StageResult = Result<Outcome, StageError>;

/// An upstream output as a stage receives it.
#[derive(Clone, Debug)]
pub struct ResolvedInput {
    pub stage: String,
    pub output: String,
    pub artifact: ArtifactType,
    /// The output's file or folder inside the upstream cache entry.
    pub path: PathBuf,
}

/// Set once by the SIGINT handler; seen by every [`Cancel`].
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// A cancellation flag: set by Ctrl-C (once [`Cancel::install_sigint`] ran)
/// or by [`Cancel::cancel`]. Stages poll it between steps.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Self {
        Cancel::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst) || INTERRUPTED.load(Ordering::SeqCst)
    }

    /// Route Ctrl-C to the flag: the first asks stages to save and stop, a
    /// second one ends the process at once (exit 130).
    pub fn install_sigint() {
        extern "C" fn on_sigint(_: libc::c_int) {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                // SAFETY: _exit is async-signal-safe.
                unsafe { libc::_exit(130) };
            }
        }
        let handler: extern "C" fn(libc::c_int) = on_sigint;
        // SAFETY: the handler only touches an atomic and calls _exit, both
        // async-signal-safe; installing it has no other preconditions.
        unsafe {
            libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        }
    }

    /// For the commands other than `run`, which have no state to save: the
    /// first Ctrl-C ends the process at once with exit 130, as a shell tool
    /// ends, instead of dying by the signal. What they write is written a
    /// record at a time (eval's answers) or through a temporary file, so
    /// nothing already done is lost.
    pub fn exit_on_sigint() {
        extern "C" fn on_sigint(_: libc::c_int) {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(130) };
        }
        let handler: extern "C" fn(libc::c_int) = on_sigint;
        // SAFETY: the handler only calls _exit, which is async-signal-safe.
        unsafe {
            libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        }
    }
}

/// How much a run says on stderr (`run --quiet`, `--verbose`). Files
/// (`training.log`, metrics) get everything either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verbosity {
    /// Errors and the final table only.
    Quiet,
    /// Stage notes, a progress bar on a terminal, throttled progress lines
    /// elsewhere.
    #[default]
    Normal,
    /// Every step's line as well.
    Verbose,
}

/// Everything a stage's `run` gets.
pub struct StageContext {
    pub stage: String,
    pub device: Device,
    pub exec: ExecSettings,
    inputs: BTreeMap<String, ResolvedInput>,
    files: BTreeMap<String, PathBuf>,
    out_dir: PathBuf,
    work_dir: PathBuf,
    log: File,
    cancel: Cancel,
    progress: ProgressBar,
    started: Instant,
    verbosity: Verbosity,
    /// What the stage's work saw that its plan could only assume, for the
    /// planner's figure in `memory.json`.
    pub ran: RanOnHost,
}

/// Where a stage writes and what it reads, assembled by the executor.
pub struct ContextParts {
    pub stage: String,
    pub device: Device,
    pub exec: ExecSettings,
    pub inputs: BTreeMap<String, ResolvedInput>,
    pub files: BTreeMap<String, PathBuf>,
    pub out_dir: PathBuf,
    pub work_dir: PathBuf,
    pub cancel: Cancel,
}

/// The log lives in the work dir so that it survives interruptions and
/// tells the whole story of a resumed stage; it is copied into the outputs.
pub const LOG_FILE: &str = "training.log";

impl StageContext {
    pub fn new(parts: ContextParts) -> std::io::Result<Self> {
        std::fs::create_dir_all(&parts.work_dir)?;
        std::fs::create_dir_all(&parts.out_dir)?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(parts.work_dir.join(LOG_FILE))?;
        let progress = ProgressBar::hidden();
        Ok(StageContext {
            stage: parts.stage,
            device: parts.device,
            exec: parts.exec,
            inputs: parts.inputs,
            files: parts.files,
            out_dir: parts.out_dir,
            work_dir: parts.work_dir,
            log,
            cancel: parts.cancel,
            progress,
            started: Instant::now(),
            verbosity: Verbosity::Normal,
            ran: RanOnHost::default(),
        })
    }

    /// The upstream output wired to params field `field`.
    pub fn input(&self, field: &str) -> Result<&ResolvedInput, StageError> {
        self.inputs.get(field).ok_or_else(|| {
            StageError::runtime(miette::miette!(
                "stage `{}` has no upstream input for field `{field}`",
                self.stage
            ))
        })
    }

    /// The user file named by params field `field` (absolute path).
    pub fn file(&self, field: &str) -> Result<&Path, StageError> {
        self.files.get(field).map(PathBuf::as_path).ok_or_else(|| {
            StageError::runtime(miette::miette!(
                "stage `{}` has no input file for field `{field}`",
                self.stage
            ))
        })
    }

    /// Outputs go here (a temporary folder renamed into the cache on success).
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// Resumable state goes here; it survives interruptions and crashes and
    /// is deleted once the stage's outputs are in the cache.
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The cancellation flag itself, for work that polls it from other
    /// threads (a data stage's rayon workers).
    pub fn cancel_flag(&self) -> Cancel {
        self.cancel.clone()
    }

    /// How much this run says on stderr (the executor sets it).
    pub fn set_verbosity(&mut self, verbosity: Verbosity) {
        self.verbosity = verbosity;
    }

    pub fn verbosity(&self) -> Verbosity {
        self.verbosity
    }

    /// Append a line to `training.log` and echo it on stderr (not when
    /// quiet).
    pub fn log(&mut self, line: impl AsRef<str>) {
        let line = line.as_ref();
        self.append_log(line);
        if self.verbosity != Verbosity::Quiet {
            self.progress
                .suspend(|| eprintln!("  {}: {line}", self.stage));
        }
    }

    /// `line` into `training.log`, stamped with the stage's elapsed time.
    fn append_log(&mut self, line: &str) {
        let elapsed = self.started.elapsed().as_secs_f64();
        // The log is best effort: a full disk shows up in the outputs' write.
        let _ = writeln!(self.log, "[{elapsed:9.2}s] {line}");
    }

    /// A plain progress line for `total` units of this stage's work, silent
    /// on a terminal (the bar shows it) and when quiet.
    pub fn progress_line(&self, total: u64) -> ProgressLine {
        let mut line = ProgressLine::new(&self.stage, total);
        line.quiet |= self.verbosity == Verbosity::Quiet;
        line
    }

    /// Progress of `total` units of work that is not training steps (the
    /// eval's answers, its hands at the table), which worker threads may
    /// advance: a bar on a terminal, else a plain `stage what: done/total`
    /// line at most every 10 s; nothing when quiet.
    pub fn work_progress(&self, what: &str, total: u64) -> WorkProgress {
        let label = format!("{} {what}", self.stage);
        let mut line = ProgressLine::new(&label, total);
        line.quiet |= self.verbosity == Verbosity::Quiet;
        let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = if on_terminal && self.verbosity != Verbosity::Quiet && total > 0 {
            stage_bar(label, total)
        } else {
            ProgressBar::hidden()
        };
        WorkProgress {
            bar,
            line: Mutex::new(line),
            done: AtomicU64::new(0),
        }
    }

    /// A line in `training.log` only: a training step's figures, which the
    /// terminal gets from the stage's progress sink
    /// ([`crate::train::progress::TrainProgress`]).
    pub fn log_to_file(&mut self, line: impl AsRef<str>) {
        self.append_log(line.as_ref());
    }

    /// Show progress `done` of `total` steps (a bar on terminals only, and
    /// not when quiet).
    pub fn progress(&mut self, done: u64, total: u64) {
        if self.verbosity == Verbosity::Quiet {
            return;
        }
        if self.progress.is_hidden()
            && total > 0
            && std::io::IsTerminal::is_terminal(&std::io::stderr())
        {
            self.progress = stage_bar(self.stage.clone(), total);
        }
        self.progress.set_length(total);
        self.progress.set_position(done);
    }

    /// Flush the log and drop the progress bar.
    pub fn finish(&mut self) {
        self.progress.finish_and_clear();
        let _ = self.log.flush();
    }
}

/// A stage's bar on the terminal: `prefix [====    ] done/total ETA`.
fn stage_bar(prefix: String, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    // The template is a constant: if indicatif ever rejected it, a bar
    // without a style still works.
    if let Ok(style) = ProgressStyle::with_template("  {prefix} [{bar:30}] {pos}/{len} {eta} {msg}")
    {
        bar.set_style(style);
    }
    bar.set_prefix(prefix);
    bar
}

/// A plain progress line on stderr for output that is not a terminal (where
/// [`StageContext::progress`] draws no bar): `stage: done/total (p%), ETA`,
/// at most every [`ProgressLine::EVERY`].
pub struct ProgressLine {
    stage: String,
    total: u64,
    started: std::time::Instant,
    last: Option<std::time::Instant>,
    quiet: bool,
}

impl ProgressLine {
    pub const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    pub fn new(stage: &str, total: u64) -> Self {
        ProgressLine {
            stage: stage.to_string(),
            total,
            started: std::time::Instant::now(),
            last: None,
            quiet: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }

    /// Report `done` units if the last line is old enough (and at the end).
    pub fn update(&mut self, done: u64) {
        let now = std::time::Instant::now();
        let due = self.last.is_none_or(|t| now - t >= Self::EVERY) || done >= self.total;
        if self.quiet || !due || self.total == 0 {
            return;
        }
        self.last = Some(now);
        eprintln!("{}", self.line(done, now - self.started));
    }

    fn line(&self, done: u64, elapsed: std::time::Duration) -> String {
        let share = done as f64 / self.total as f64;
        let eta = if done == 0 {
            "ETA unknown".to_string()
        } else {
            let left =
                elapsed.as_secs_f64() * (self.total - done.min(self.total)) as f64 / done as f64;
            format!("ETA {}", human_seconds(left))
        };
        format!(
            "  {}: {done}/{} ({:.0}%), {eta}",
            self.stage,
            self.total,
            share * 100.0
        )
    }
}

/// See [`StageContext::work_progress`].
pub struct WorkProgress {
    bar: ProgressBar,
    line: Mutex<ProgressLine>,
    done: AtomicU64,
}

impl WorkProgress {
    /// `n` more units done.
    pub fn add(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        self.bar.set_position(done);
        if let Ok(mut line) = self.line.lock() {
            line.update(done);
        }
    }

    /// Clear the bar (the plain line ended at the last unit).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// `42 s`, `3 min 20 s`, `2 h 5 min`.
fn human_seconds(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod progress_line_tests {
    use super::*;

    #[test]
    fn the_line_gives_share_and_eta() {
        let line = ProgressLine {
            stage: "data".into(),
            total: 1000,
            started: std::time::Instant::now(),
            last: None,
            quiet: false,
        };
        let text = line.line(250, std::time::Duration::from_secs(10));
        assert_eq!(text, "  data: 250/1000 (25%), ETA 30 s");
        assert!(
            line.line(0, std::time::Duration::ZERO)
                .contains("ETA unknown")
        );
        assert_eq!(human_seconds(200.0), "3 min 20 s");
        assert_eq!(human_seconds(7500.0), "2 h 5 min");
    }
}
