//! `runs/<pipeline>/report.html`: one self-contained page that shows a run
//! at a glance (the stage table, training curves, the evaluation scorecard,
//! bb/100 per opponent, accuracy per spot type and the confusion matrix).
//!
//! Everything comes from the cache entries the plan names (manifests,
//! `metrics.jsonl`, `summary.json`), so `poker-pipe report` rebuilds the same
//! page at any time, and `run` writes it after every run. The page has no
//! script and loads nothing: charts are inline SVG ([`svg`]).

mod page;
mod svg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::graph::{Plan, StageReport, StageStatus, Store, write_atomic};
use crate::train::metrics::{METRICS_FILE, SUMMARY_FILE};

pub use page::render;

pub const REPORT_FILE: &str = "report.html";

/// Everything the page shows, read from the cache.
pub struct Report {
    pub pipeline: String,
    pub preset: Option<String>,
    pub device: String,
    pub stages: Vec<StageRow>,
}

/// One row of the stage table, with what the stage's entry holds.
pub struct StageRow {
    pub name: String,
    pub kind: String,
    pub status: RowStatus,
    /// How long the stage took when it ran (from its manifest).
    pub duration_s: Option<f64>,
    /// The entry shown: today's hash, or a stale row's earlier one.
    pub hash: String,
    /// `runs/<pipeline>/<stage>` where that link exists, else the entry.
    pub output: Option<PathBuf>,
    /// Per logged scalar, its `(step, value)` points (finite values only).
    pub curves: BTreeMap<String, Vec<(f64, f64)>>,
    /// The entry's `summary.json` (Null when there is none).
    pub summary: Value,
}

/// What happened to a stage, as the table says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowStatus {
    Ran,
    Cached,
    Failed,
    Interrupted,
    /// Not in the cache under today's hash; the row shows the earlier
    /// run that `runs/<pipeline>/<stage>` still points at.
    Stale,
    /// Not in the cache (never ran, or not selected this time).
    NotRun,
}

impl RowStatus {
    pub fn label(self) -> &'static str {
        match self {
            RowStatus::Ran => "ran",
            RowStatus::Cached => "cached",
            RowStatus::Failed => "failed",
            RowStatus::Interrupted => "interrupted",
            RowStatus::Stale => "stale",
            RowStatus::NotRun => "not run",
        }
    }
}

/// Read what the page shows for `plan`'s stages from `store`. `ran` holds
/// this run's outcomes when called at the end of `run` (empty for
/// `poker-pipe report`, where a stage is cached or not run).
pub fn collect(plan: &Plan, store: &Store, runs_dir: &Path, ran: &[StageReport]) -> Report {
    let stages = plan
        .stages
        .iter()
        .map(|stage| {
            let link = runs_dir.join(&plan.pipeline).join(&stage.name);
            let linked = std::fs::read_link(&link).ok();
            let current = store
                .manifest(&stage.hash)
                .ok()
                .map(|m| (stage.hash.clone(), m));
            // Not in the cache under today's hash (the code, an input or a
            // parameter changed since): show the earlier run runs/ points at.
            let found = current.or_else(|| {
                let hash = linked.as_ref()?.file_name()?.to_str()?.to_string();
                let manifest = store.manifest(&hash).ok()?;
                (manifest.stage == stage.name).then_some((hash, manifest))
            });
            let status = match ran.iter().find(|r| r.name == stage.name) {
                Some(r) => match r.status {
                    StageStatus::Ran => RowStatus::Ran,
                    StageStatus::Cached => RowStatus::Cached,
                    StageStatus::Failed => RowStatus::Failed,
                    StageStatus::Interrupted => RowStatus::Interrupted,
                },
                None => match &found {
                    Some((hash, _)) if *hash == stage.hash => RowStatus::Cached,
                    Some(_) => RowStatus::Stale,
                    None => RowStatus::NotRun,
                },
            };
            let (hash, entry) = match &found {
                Some((hash, _)) => (hash.clone(), Some(store.entry_dir(hash))),
                None => (stage.hash.clone(), None),
            };
            let output = entry.as_ref().map(|entry| {
                if linked.as_ref() == Some(entry) {
                    link.clone()
                } else {
                    entry.clone()
                }
            });
            let (curves, summary) = match &entry {
                Some(entry) => (read_curves(&entry.join(METRICS_FILE)), read_summary(entry)),
                None => (BTreeMap::new(), Value::Null),
            };
            StageRow {
                name: stage.name.clone(),
                kind: stage.kind.to_string(),
                status,
                duration_s: found.as_ref().map(|(_, m)| m.duration_s),
                hash,
                output,
                curves,
                summary,
            }
        })
        .collect();
    Report {
        pipeline: plan.pipeline.clone(),
        preset: plan.preset.clone(),
        device: plan.device.to_string(),
        stages,
    }
}

/// Write the page to `runs_dir/<pipeline>/report.html` (atomically: a
/// browser open on the old page never reads half of the new one).
pub fn write(report: &Report, runs_dir: &Path) -> std::io::Result<PathBuf> {
    let dir = runs_dir.join(&report.pipeline);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(REPORT_FILE);
    write_atomic(&path, render(report).as_bytes())?;
    Ok(path)
}

/// Every numeric field of every line of `metrics.jsonl`, by name, against
/// the line's `step`. Unreadable lines and non-finite values (written as
/// `null`) are left out: the page shows what can be drawn.
fn read_curves(path: &Path) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut curves: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return curves;
    };
    for line in text.lines() {
        let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(step) = fields.get("step").and_then(Value::as_f64) else {
            continue;
        };
        for (name, value) in &fields {
            if let Some(v) = value.as_f64().filter(|v| v.is_finite())
                && name != "step"
            {
                curves.entry(name.clone()).or_default().push((step, v));
            }
        }
    }
    curves
}

fn read_summary(entry: &Path) -> Value {
    std::fs::read_to_string(entry.join(SUMMARY_FILE))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn curves_keep_finite_numbers_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METRICS_FILE);
        std::fs::write(
            &path,
            "{\"step\":1,\"loss\":2.5,\"lr\":0.001}\nnot json\n{\"step\":2,\"loss\":null,\"lr\":0.002,\"note\":\"x\"}\n",
        )
        .unwrap();
        let curves = read_curves(&path);
        assert_eq!(curves["loss"], vec![(1.0, 2.5)]);
        assert_eq!(curves["lr"], vec![(1.0, 0.001), (2.0, 0.002)]);
        assert!(!curves.contains_key("note") && !curves.contains_key("step"));
        assert!(read_curves(&dir.path().join("missing")).is_empty());
    }
}
