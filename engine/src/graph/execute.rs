//! Runs a plan: stages in order, each into a temporary folder renamed into
//! the cache on success, reusing cached ones, and pointing
//! `runs/<pipeline>/<stage>` at the result.

use std::collections::{BTreeMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::context::{
    Cancel, ContextParts, LOG_FILE, Outcome, ResolvedInput, StageContext, StageError, Verbosity,
};
use super::plan::{Plan, Reason};
use super::store::{Manifest, Store, unix_now};
use crate::backend::Device;
use crate::model::memory::refuse_beyond_host;
use crate::spec::{Pipeline, did_you_mean};

/// Which stages of the plan to run.
#[derive(Clone, Debug, Default)]
pub enum Selection {
    #[default]
    All,
    /// This stage and everything it depends on.
    Until(String),
    /// Only this stage; its inputs must already be cached.
    Only(String),
}

/// How one stage ended in this run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageStatus {
    Cached,
    Ran,
    Interrupted,
    Failed,
}

/// A row of the final table.
#[derive(Clone, Debug)]
pub struct StageReport {
    pub name: String,
    pub status: StageStatus,
    pub duration_s: f64,
    pub output: PathBuf,
}

/// The end of a run.
#[derive(Debug)]
pub struct RunReport {
    pub stages: Vec<StageReport>,
    /// Set when a stage failed (the run stopped there).
    pub error: Option<StageError>,
    pub interrupted: bool,
}

/// Everything `execute` needs besides the plan.
pub struct Executor<'a> {
    pub pipeline: &'a Pipeline,
    pub store: &'a Store,
    pub device: Device,
    pub cancel: Cancel,
    /// The `runs/` folder (relative to the working directory by default).
    pub runs_dir: PathBuf,
    pub verbosity: Verbosity,
}

/// A selection naming a stage that does not exist, or one whose inputs are
/// missing for `--only`.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SelectionError {
    #[error("no stage `{name}` in pipeline `{pipeline}`")]
    #[diagnostic(code(run::unknown_stage))]
    UnknownStage {
        name: String,
        pipeline: String,
        #[help]
        help: String,
    },
    #[error("`--only {stage}` needs `{upstream}` to be cached, and it is not")]
    #[diagnostic(
        code(run::upstream_missing),
        help("run without --only, or with `--until {stage}`, to build its inputs first")
    )]
    UpstreamMissing { stage: String, upstream: String },
}

/// Check that a stage name given on the command line exists.
pub fn check_stage_name(plan: &Plan, name: &str) -> Result<(), SelectionError> {
    if plan.stage(name).is_some() {
        return Ok(());
    }
    let names = plan.stages.iter().map(|s| s.name.as_str());
    let help = did_you_mean(name, names.clone())
        .unwrap_or_else(|| format!("stages: {}", names.collect::<Vec<_>>().join(", ")));
    Err(SelectionError::UnknownStage {
        name: name.to_string(),
        pipeline: plan.pipeline.clone(),
        help,
    })
}

/// The plan's stage names that the selection runs, in plan order.
pub fn select(
    plan: &Plan,
    pipeline: &Pipeline,
    selection: &Selection,
) -> Result<Vec<String>, SelectionError> {
    match selection {
        Selection::All => Ok(plan.stages.iter().map(|s| s.name.clone()).collect()),
        Selection::Until(target) => {
            check_stage_name(plan, target)?;
            let mut wanted = HashSet::from([target.clone()]);
            for planned in plan.stages.iter().rev() {
                if wanted.contains(&planned.name) {
                    for up in &pipeline.stages[planned.index].upstream {
                        wanted.insert(up.stage.clone());
                    }
                }
            }
            Ok(plan
                .stages
                .iter()
                .filter(|s| wanted.contains(&s.name))
                .map(|s| s.name.clone())
                .collect())
        }
        Selection::Only(target) => {
            check_stage_name(plan, target)?;
            if let Some(planned) = plan.stage(target) {
                for up in &pipeline.stages[planned.index].upstream {
                    if plan.stage(&up.stage).is_none_or(|u| !u.cached) {
                        return Err(SelectionError::UpstreamMissing {
                            stage: target.clone(),
                            upstream: up.stage.clone(),
                        });
                    }
                }
            }
            Ok(vec![target.clone()])
        }
    }
}

impl Executor<'_> {
    /// Run the selected stages of the plan in order. Stops at the first
    /// failure or interruption; what finished before stays cached.
    pub fn execute(&self, plan: &Plan, selected: &[String]) -> RunReport {
        let mut report = RunReport {
            stages: Vec::new(),
            error: None,
            interrupted: false,
        };
        let mut state = self.store.state(&self.pipeline.name);
        for planned in plan.stages.iter().filter(|s| selected.contains(&s.name)) {
            let started = Instant::now();
            let entry = self.store.entry_dir(&planned.hash);
            if planned.cached {
                report.stages.push(StageReport {
                    name: planned.name.clone(),
                    status: StageStatus::Cached,
                    duration_s: 0.0,
                    output: self.link(&planned.name, &entry),
                });
            } else {
                if self.cancel.is_cancelled() {
                    report.interrupted = true;
                    break;
                }
                for reason in &planned.reasons {
                    if let Reason::Damaged(_) = reason {
                        eprintln!("{}: {reason}", planned.name);
                    }
                }
                if self.verbosity != Verbosity::Quiet {
                    eprintln!("running {} ({})", planned.name, planned.kind);
                }
                let outcome = self.run_stage(plan, planned.index, &planned.hash);
                let duration_s = started.elapsed().as_secs_f64();
                let status = match &outcome {
                    Ok(Outcome::Done) => StageStatus::Ran,
                    Ok(Outcome::Interrupted) => StageStatus::Interrupted,
                    Err(_) => StageStatus::Failed,
                };
                let output = if status == StageStatus::Ran {
                    self.link(&planned.name, &entry)
                } else {
                    self.store.work_dir(&planned.hash)
                };
                report.stages.push(StageReport {
                    name: planned.name.clone(),
                    status,
                    duration_s,
                    output,
                });
                match outcome {
                    Ok(Outcome::Done) => {}
                    Ok(Outcome::Interrupted) => {
                        report.interrupted = true;
                        break;
                    }
                    Err(err) => {
                        report.error = Some(err);
                        break;
                    }
                }
            }
            // Recorded after every stage so a later crash keeps the history
            // that explains the next plan; skipped when nothing changed.
            let previous = state
                .stages
                .insert(planned.name.clone(), planned.input.clone());
            if previous.as_ref() != Some(&planned.input)
                && let Err(err) = self.store.save_state(&self.pipeline.name, &state)
            {
                eprintln!("warning: could not record the run state: {err}");
            }
        }
        report
    }

    fn run_stage(&self, plan: &Plan, index: usize, hash: &str) -> Result<Outcome, StageError> {
        let stage = &self.pipeline.stages[index];
        let planned = plan
            .stages
            .iter()
            .find(|s| s.index == index)
            .ok_or_else(|| StageError::runtime(miette::miette!("stage missing from plan")))?;
        let io = |what: &str, err: std::io::Error| {
            StageError::runtime(miette::miette!("{what} for stage `{}`: {err}", stage.name))
        };
        // On the CPU an allocation beyond the machine aborts the process:
        // refuse the stage before it tries (exit 3, explained by `run`).
        if self.device == Device::Cpu
            && let Some(planned_memory) = planned.memory.breakdown()
        {
            refuse_beyond_host(planned_memory, None)
                .map_err(|e| StageError::runtime(miette::Report::new(e)))?;
        }
        let mut inputs = BTreeMap::new();
        for up in &stage.upstream {
            let up_hash = plan
                .stage(&up.stage)
                .map(|s| s.hash.clone())
                .unwrap_or_default();
            inputs.insert(
                up.field.clone(),
                ResolvedInput {
                    stage: up.stage.clone(),
                    output: up.output.name.to_string(),
                    artifact: up.output.artifact,
                    path: self.store.entry_dir(&up_hash).join(up.output.path),
                },
            );
        }
        let tmp = self
            .store
            .tmp_dir(hash)
            .map_err(|e| io("cannot create the output folder", e))?;
        let work = self.store.work_dir(hash);
        let mut ctx = StageContext::new(ContextParts {
            stage: stage.name.clone(),
            device: self.device,
            exec: planned.exec.clone(),
            inputs,
            files: stage.files.iter().cloned().collect(),
            out_dir: tmp.clone(),
            work_dir: work.clone(),
            cancel: self.cancel.clone(),
        })
        .map_err(|e| io("cannot prepare the folders", e))?;
        ctx.set_verbosity(self.verbosity);
        let started_unix_s = unix_now();
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| stage.kind.run(&stage.params, &mut ctx)))
            .unwrap_or_else(|panic| {
                // A backend that runs out of device memory unwinds with its
                // typed error, so it is reported as out of memory.
                let panic = match panic.downcast::<crate::backend::CudaError>() {
                    Ok(e) => return Err(StageError::runtime(miette::Report::new(*e))),
                    Err(other) => other,
                };
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                Err(StageError::runtime(miette::miette!(
                    "stage `{}` crashed: {message}",
                    stage.name
                )))
            });
        ctx.finish();
        let result = match outcome {
            Ok(Outcome::Done) => {
                let log = work.join(LOG_FILE);
                if log.is_file() {
                    std::fs::copy(&log, tmp.join(LOG_FILE))
                        .map_err(|e| io("cannot copy the log", e))?;
                }
                let manifest = Manifest {
                    hash: hash.to_string(),
                    pipeline: self.pipeline.name.clone(),
                    stage: stage.name.clone(),
                    input: planned.input.clone(),
                    exec: planned.exec.clone(),
                    device: self.device.to_string(),
                    started_unix_s,
                    duration_s: started.elapsed().as_secs_f64(),
                    files: Vec::new(),
                    summary: serde_json::Value::Null,
                    seal: String::new(),
                };
                self.store
                    .commit(&tmp, manifest)
                    .map_err(|e| io("cannot store the outputs", e))?;
                // Resume state is useless once the outputs exist.
                let _ = std::fs::remove_dir_all(&work);
                Ok(Outcome::Done)
            }
            other => other,
        };
        if tmp.exists() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Point `runs/<pipeline>/<stage>` at a cache entry (replacing any old
    /// link atomically). Returns the link, or the entry if linking failed.
    fn link(&self, stage: &str, entry: &Path) -> PathBuf {
        let dir = self.runs_dir.join(&self.pipeline.name);
        let link = dir.join(stage);
        if std::fs::read_link(&link).is_ok_and(|target| target == entry) {
            return link;
        }
        let tmp = dir.join(format!(".{stage}.{}", std::process::id()));
        let made = std::fs::create_dir_all(&dir)
            .and_then(|()| {
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(entry, &tmp)
            })
            .and_then(|()| std::fs::rename(&tmp, &link));
        match made {
            Ok(()) => link,
            Err(err) => {
                let _ = std::fs::remove_file(&tmp);
                eprintln!(
                    "warning: could not link {} -> {}: {err}",
                    link.display(),
                    entry.display()
                );
                entry.to_path_buf()
            }
        }
    }
}
