//! The plan: stages in dependency order, each with its hash, whether its
//! outputs are cached, and if not, why it must run.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::code;
use super::context::ExecSettings;
use super::hash::{FileHash, HashInput, StatCache, UpstreamHash, changed_fields};
use super::kind::ModelOrigin;
use super::store::{EntryState, Store, list_files};
use crate::backend::Device;
use crate::model::memory::{Breakdown, StageMemory, fits};
use crate::model::source::{self, ModelSource, ResolveOptions};
use crate::spec::{MemoryPreset, Pipeline, exec_settings};

/// Why a stage must run.
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    /// Never run with these inputs (or its entry was removed).
    NoEntry,
    /// A semantic parameter differs from the last run (dotted field).
    ConfigChanged(String),
    /// The kind's version constant changed since the last run.
    KindVersionChanged { old: u32, new: u32 },
    /// An upstream stage's hash changed.
    UpstreamChanged(String),
    /// An input file's bytes changed.
    InputFileChanged(PathBuf),
    /// The code of the kind changed (a new build with different sources,
    /// kernels, dependencies or compiler).
    CodeChanged(String),
    /// Computed on another device class (`cpu` / `cuda`).
    DeviceChanged { old: String, new: String },
    /// The pretrained base model is another one (a new hub commit, or a
    /// local folder whose files changed).
    BaseChanged,
    /// Asked for with `--force` or `--force-all`.
    Forced,
    /// The entry exists but fails the cheap check (what is wrong); it is
    /// rebuilt.
    Damaged(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NoEntry => f.write_str("no cache entry"),
            Reason::ConfigChanged(field) => write!(f, "config field {field} changed"),
            Reason::KindVersionChanged { old, new } => {
                write!(f, "kind version changed ({old} -> {new})")
            }
            Reason::UpstreamChanged(stage) => write!(f, "upstream stage {stage} changed"),
            Reason::InputFileChanged(path) => write!(f, "input file {} changed", path.display()),
            Reason::CodeChanged(kind) => write!(f, "code of kind {kind} changed"),
            Reason::DeviceChanged { old, new } => write!(f, "device changed ({old} -> {new})"),
            Reason::BaseChanged => f.write_str("base model changed"),
            Reason::Forced => f.write_str("forced"),
            Reason::Damaged(what) => write!(f, "cache entry damaged ({what}), rebuilt"),
        }
    }
}

/// One stage of a plan.
#[derive(Clone, Debug)]
pub struct PlannedStage {
    /// Index into `Pipeline::stages`.
    pub index: usize,
    pub name: String,
    pub kind: &'static str,
    pub hash: String,
    pub input: HashInput,
    pub cached: bool,
    /// Empty when cached.
    pub reasons: Vec<Reason>,
    pub exec: ExecSettings,
    pub memory_estimate: Option<u64>,
    /// The planner's breakdown (or why there is none).
    pub memory: StageMemory,
}

/// The stages in topological order.
#[derive(Clone, Debug)]
pub struct Plan {
    pub pipeline: String,
    pub preset: Option<String>,
    pub device: Device,
    pub stages: Vec<PlannedStage>,
}

/// What `plan` and `run` may change about planning.
#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    pub device: Device,
    pub force: Vec<String>,
    pub force_all: bool,
}

/// The JSON form of `poker-pipe plan --format json`.
#[derive(Serialize)]
pub struct PlanJson<'a> {
    pub pipeline: &'a str,
    pub preset: Option<&'a str>,
    pub stages: Vec<PlanStageJson<'a>>,
}

#[derive(Serialize)]
pub struct PlanStageJson<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub hash: &'a str,
    pub status: &'static str,
    pub reasons: Vec<String>,
    pub memory_estimate_bytes: Option<u64>,
    /// The estimate part by part, when the planner made one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_breakdown: Option<Breakdown>,
    /// Why a training stage has no estimate (e.g. offline, nothing cached).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_note: Option<&'a str>,
    /// Whether the estimate fits the preset's GPU memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fits_preset: Option<bool>,
}

impl Plan {
    pub fn to_json(&self) -> PlanJson<'_> {
        PlanJson {
            pipeline: &self.pipeline,
            preset: self.preset.as_deref(),
            stages: self
                .stages
                .iter()
                .map(|s| PlanStageJson {
                    name: &s.name,
                    kind: s.kind,
                    hash: &s.hash,
                    status: if s.cached { "cached" } else { "run" },
                    reasons: s.reasons.iter().map(ToString::to_string).collect(),
                    memory_estimate_bytes: s.memory_estimate,
                    memory_breakdown: s.memory.breakdown().copied(),
                    memory_note: s.memory.note(),
                    fits_preset: s
                        .memory_estimate
                        .zip(s.exec.gpu_memory_gib)
                        .map(|(bytes, gib)| fits(bytes, gib)),
                })
                .collect(),
        }
    }

    pub fn stage(&self, name: &str) -> Option<&PlannedStage> {
        self.stages.iter().find(|s| s.name == name)
    }
}

/// Stage indices in dependency order; ties keep file order, so plans read
/// like the file.
pub fn topological_order(pipeline: &Pipeline) -> Vec<usize> {
    let index: HashMap<&str, usize> = pipeline
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut placed = vec![false; pipeline.stages.len()];
    let mut order = Vec::new();
    while order.len() < pipeline.stages.len() {
        let next = pipeline.stages.iter().enumerate().find(|(i, s)| {
            !placed[*i]
                && s.upstream
                    .iter()
                    .all(|u| index.get(u.stage.as_str()).is_none_or(|&j| placed[j]))
        });
        // A checked pipeline has no cycles; stop rather than loop if not.
        let Some((i, _)) = next else { break };
        placed[i] = true;
        order.push(i);
    }
    order
}

/// Hash every stage and compare with the cache and the last run.
pub fn plan(
    pipeline: &Pipeline,
    preset: Option<&(String, MemoryPreset)>,
    store: &Store,
    options: &PlanOptions,
) -> std::io::Result<Plan> {
    let mut stat_cache = StatCache::load(&store.stat_cache_path());
    let previous = store.state(&pipeline.name);
    let mut hashes: BTreeMap<String, String> = BTreeMap::new();
    let mut stages = Vec::new();
    for index in topological_order(pipeline) {
        let stage = &pipeline.stages[index];
        let upstream = stage
            .upstream
            .iter()
            .map(|u| {
                let hash = hashes.get(&u.stage).cloned().unwrap_or_default();
                (
                    u.field.clone(),
                    UpstreamHash {
                        stage: u.stage.clone(),
                        output: u.output.name.to_string(),
                        hash,
                    },
                )
            })
            .collect();
        let mut files = BTreeMap::new();
        for (field, path) in &stage.files {
            let blake3 = stat_cache.hash_file(path).map_err(|err| {
                std::io::Error::new(err.kind(), format!("{}: {err}", path.display()))
            })?;
            files.insert(
                field.clone(),
                FileHash {
                    path: path.clone(),
                    blake3,
                },
            );
        }
        let base = match stage.kind.model_origin(&stage.params) {
            ModelOrigin::Pretrained(source) => Some(base_identity(&source, &mut stat_cache)),
            _ => None,
        };
        let input = HashInput {
            kind: stage.kind.name().to_string(),
            version: stage.kind.version(),
            code: code::fingerprint(stage.kind.name()).to_string(),
            device: device_class(options.device).to_string(),
            base,
            config: stage.kind.semantic_config(&stage.params),
            upstream,
            files,
        };
        let hash = input.hash();
        hashes.insert(stage.name.clone(), hash.clone());
        let forced = options.force_all || options.force.iter().any(|f| f == &stage.name);
        let entry = store.check_entry(&hash);
        let cached = !forced && entry == EntryState::Intact;
        let reasons = match entry {
            _ if cached => Vec::new(),
            _ if forced => vec![Reason::Forced],
            EntryState::Damaged(what) => vec![Reason::Damaged(what)],
            _ => why(previous.stages.get(&stage.name), &input),
        };
        let exec = exec_settings(stage, preset);
        let memory_estimate = stage.kind.memory_estimate(&stage.params, &exec);
        let memory = stage.kind.memory(&stage.params, &exec);
        stages.push(PlannedStage {
            index,
            name: stage.name.clone(),
            kind: stage.kind.name(),
            hash,
            input,
            cached,
            reasons,
            exec,
            memory_estimate,
            memory,
        });
    }
    // The stat cache only speeds things up; failing to save it is harmless.
    let _ = stat_cache.save(&store.stat_cache_path());
    Ok(Plan {
        pipeline: pipeline.name.clone(),
        preset: preset.map(|(name, _)| name.clone()),
        device: options.device,
        stages,
    })
}

/// The device class that enters the hash: which GPU does not matter, CPU
/// against CUDA does.
pub fn device_class(device: Device) -> &'static str {
    match device {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
    }
}

/// What a base model is, for the hash: a hub source's commit (the cached
/// one first, so planning needs no network when the model is there), a
/// local folder's or GGUF file's content (blake3, through the stat cache).
/// What cannot be identified keeps its text with a note, so that the hash
/// changes once it can be.
fn base_identity(text: &str, stat_cache: &mut StatCache) -> String {
    let Ok(parsed) = source::parse(text) else {
        return format!("unparsed:{text}");
    };
    match &parsed {
        ModelSource::Local(dir) => folder_identity(dir, stat_cache)
            .unwrap_or_else(|err| format!("unreadable:{}: {err}", dir.display())),
        ModelSource::Gguf(file) => stat_cache.hash_file(file).map_or_else(
            |err| format!("unreadable:{}: {err}", file.display()),
            |hash| format!("gguf:{hash}"),
        ),
        ModelSource::Hub(_) => {
            let options = ResolveOptions::from_env();
            let cached = ResolveOptions {
                offline: true,
                ..options.clone()
            };
            source::identify(&parsed, &cached)
                .or_else(|_| source::identify(&parsed, &options))
                .map_or_else(|_| format!("unresolved:{text}"), |id| id.canonical())
        }
    }
}

/// blake3 over a folder's files (relative path and content hash each).
fn folder_identity(dir: &std::path::Path, stat_cache: &mut StatCache) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    for rel in list_files(dir)? {
        let hash = stat_cache.hash_file(&dir.join(&rel))?;
        hasher.update(rel.as_bytes());
        hasher.update(b"\0");
        hasher.update(hash.as_bytes());
        hasher.update(b"\n");
    }
    Ok(format!("dir:{}", hasher.finalize().to_hex()))
}

/// Compare with the inputs of the stage's last run.
fn why(previous: Option<&HashInput>, now: &HashInput) -> Vec<Reason> {
    let Some(old) = previous else {
        return vec![Reason::NoEntry];
    };
    let mut reasons = Vec::new();
    if old.kind != now.kind {
        reasons.push(Reason::ConfigChanged("kind".into()));
    } else if old.version != now.version {
        reasons.push(Reason::KindVersionChanged {
            old: old.version,
            new: now.version,
        });
    } else if old.code != now.code {
        reasons.push(Reason::CodeChanged(now.kind.clone()));
    }
    if old.device != now.device {
        reasons.push(Reason::DeviceChanged {
            old: old.device.clone(),
            new: now.device.clone(),
        });
    }
    if old.base != now.base {
        reasons.push(Reason::BaseChanged);
    }
    reasons.extend(
        changed_fields(&old.config, &now.config)
            .into_iter()
            .map(Reason::ConfigChanged),
    );
    for (field, up) in &now.upstream {
        match old.upstream.get(field) {
            Some(o) if o.hash == up.hash && o.output == up.output => {}
            _ => reasons.push(Reason::UpstreamChanged(up.stage.clone())),
        }
    }
    for (field, file) in &now.files {
        if old.files.get(field).is_none_or(|o| o.blake3 != file.blake3) {
            reasons.push(Reason::InputFileChanged(file.path.clone()));
        }
    }
    if reasons.is_empty() {
        reasons.push(Reason::NoEntry);
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input() -> HashInput {
        HashInput {
            kind: "k".into(),
            version: 1,
            code: "c1".into(),
            device: "cpu".into(),
            base: None,
            config: json!({"optim": {"lr": 0.1}, "epochs": 3}),
            upstream: BTreeMap::from([(
                "data".into(),
                UpstreamHash {
                    stage: "data".into(),
                    output: "sft".into(),
                    hash: "h1".into(),
                },
            )]),
            files: BTreeMap::from([(
                "file".into(),
                FileHash {
                    path: PathBuf::from("in.txt"),
                    blake3: "b1".into(),
                },
            )]),
        }
    }

    #[test]
    fn reasons_name_what_changed() {
        let old = input();
        assert_eq!(why(None, &old), [Reason::NoEntry]);
        assert_eq!(why(Some(&old), &old), [Reason::NoEntry]);

        let mut new = input();
        new.version = 2;
        new.config["optim"]["lr"] = json!(0.2);
        if let Some(up) = new.upstream.get_mut("data") {
            up.hash = "h2".into();
        }
        if let Some(file) = new.files.get_mut("file") {
            file.blake3 = "b2".into();
        }
        assert_eq!(
            why(Some(&old), &new),
            [
                Reason::KindVersionChanged { old: 1, new: 2 },
                Reason::ConfigChanged("optim.lr".into()),
                Reason::UpstreamChanged("data".into()),
                Reason::InputFileChanged(PathBuf::from("in.txt")),
            ]
        );
        let text: Vec<String> = why(Some(&old), &new)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            text,
            [
                "kind version changed (1 -> 2)",
                "config field optim.lr changed",
                "upstream stage data changed",
                "input file in.txt changed",
            ]
        );
        assert_eq!(Reason::Forced.to_string(), "forced");

        let mut rebuilt = input();
        rebuilt.code = "c2".into();
        rebuilt.device = "cuda".into();
        rebuilt.base = Some("hf:o/n@abc".into());
        let text: Vec<String> = why(Some(&old), &rebuilt)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            text,
            [
                "code of kind k changed",
                "device changed (cpu -> cuda)",
                "base model changed",
            ]
        );
    }
}
