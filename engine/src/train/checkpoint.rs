//! Resumable training state in a stage's work directory: named f32 tensors
//! (trainable weights, optimizer moments, EMA copies) and a JSON state (step,
//! data cursor, RNG states, schedule, stage extras), in one safetensors file
//! whose header metadata carries the JSON and a blake3 checksum of the data.
//!
//! One file means one atomic rename: a checkpoint is written to a temporary
//! file, fsynced, the current one is kept as `checkpoint.prev.safetensors`,
//! the new one renamed into place and the directory fsynced. A crash at any
//! point leaves either the new or the previous checkpoint loadable. A file
//! that does not verify is an error, never a silent restart from scratch.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use miette::Diagnostic;
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::data_order::Cursor;
use super::schedule::Schedule;

/// The checkpoint file in a work directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// The checkpoint before the latest, kept until the next one is in place.
pub const PREVIOUS_FILE: &str = "checkpoint.prev.safetensors";
const TEMP_FILE: &str = "checkpoint.safetensors.tmp";
const FORMAT: &str = "poker-pipe-checkpoint/1";
const KEY_FORMAT: &str = "format";
const KEY_STATE: &str = "state";
const KEY_CHECKSUM: &str = "blake3";

/// An f32 tensor stored row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorData {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A ChaCha8 generator's exact position, so sampling and dropout continue
/// as if never interrupted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    pub seed: [u8; 32],
    pub stream: u64,
    /// The word position, a u128 written as decimal text because JSON
    /// numbers lose precision past 2^53.
    pub word_pos: String,
}

impl RngState {
    pub fn capture(rng: &ChaCha8Rng) -> Self {
        RngState {
            seed: rng.get_seed(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    /// The generator at the captured position; `None` if the position text
    /// is not a number (only a hand-edited file can do that).
    pub fn restore(&self) -> Option<ChaCha8Rng> {
        let word_pos: u128 = self.word_pos.parse().ok()?;
        let mut rng = <ChaCha8Rng as rand::SeedableRng>::from_seed(self.seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(word_pos);
        Some(rng)
    }
}

/// The scalar state of a training loop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: u64,
    /// Where the data order stands; `cursor.epoch` is the current epoch.
    pub cursor: Cursor,
    /// Named generators (for example `dropout`, `sampling`).
    pub rngs: BTreeMap<String, RngState>,
    pub schedule: Schedule,
    /// Whatever else a stage needs to continue exactly (PPO's running
    /// statistics, the best held-out loss, ...).
    pub extra: serde_json::Value,
}

/// A full checkpoint: state and tensors by name. Optimizer moments are
/// tensors too, named by the optimizer (for example `exp_avg.<param>`).
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub state: TrainState,
    pub tensors: BTreeMap<String, TensorData>,
}

/// A checkpoint found by `load`, and the file it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Resume {
    pub checkpoint: Checkpoint,
    pub path: PathBuf,
}

#[derive(Debug, Error, Diagnostic)]
pub enum CheckpointError {
    #[error("checkpoint `{}` is corrupt: {reason}", path.display())]
    #[diagnostic(code(train::checkpoint::corrupt), help("{hint}"))]
    Corrupt {
        path: PathBuf,
        reason: String,
        hint: String,
    },
    #[error(
        "cannot write checkpoint tensor `{name}`: shape {shape:?} holds {expected} values but {actual} were given"
    )]
    #[diagnostic(code(train::checkpoint::shape))]
    Shape {
        name: String,
        shape: Vec<usize>,
        expected: usize,
        actual: usize,
    },
    #[error("checkpoint I/O failed on `{}`: {source}", path.display())]
    #[diagnostic(
        code(train::checkpoint::io),
        help("check free disk space and write access to the cache directory")
    )]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `checkpoint` into `work_dir` atomically, keeping the previous one.
pub fn save(work_dir: &Path, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
    let bytes = encode(checkpoint)?;
    std::fs::create_dir_all(work_dir).map_err(io(work_dir))?;
    let temp = work_dir.join(TEMP_FILE);
    let current = work_dir.join(CHECKPOINT_FILE);
    let previous = work_dir.join(PREVIOUS_FILE);
    let mut file = File::create(&temp).map_err(io(&temp))?;
    file.write_all(&bytes).map_err(io(&temp))?;
    file.sync_all().map_err(io(&temp))?;
    drop(file);
    if current.exists() {
        std::fs::rename(&current, &previous).map_err(io(&current))?;
    }
    std::fs::rename(&temp, &current).map_err(io(&temp))?;
    File::open(work_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io(work_dir))
}

/// The latest checkpoint in `work_dir`: `None` when there is none; the
/// previous one when a crash came between the two renames of `save`; an
/// error when the latest does not verify.
pub fn load(work_dir: &Path) -> Result<Option<Resume>, CheckpointError> {
    let current = work_dir.join(CHECKPOINT_FILE);
    let previous = work_dir.join(PREVIOUS_FILE);
    let path = if current.exists() {
        current
    } else if previous.exists() {
        previous
    } else {
        return Ok(None);
    };
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    decode(&bytes)
        .map(|checkpoint| {
            Some(Resume {
                checkpoint,
                path: path.clone(),
            })
        })
        .map_err(|reason| CheckpointError::Corrupt {
            hint: corrupt_hint(work_dir, &path),
            path,
            reason,
        })
}

fn corrupt_hint(work_dir: &Path, path: &Path) -> String {
    let previous = work_dir.join(PREVIOUS_FILE);
    if path != previous && previous.exists() {
        format!(
            "move it away to resume from the checkpoint before it ({}), or delete the work \
             directory {} to restart the stage from scratch",
            previous.display(),
            work_dir.display()
        )
    } else {
        format!(
            "delete the work directory {} to restart the stage from scratch",
            work_dir.display()
        )
    }
}

fn encode(checkpoint: &Checkpoint) -> Result<Vec<u8>, CheckpointError> {
    let mut raw: Vec<(&str, &[usize], Vec<u8>)> = Vec::with_capacity(checkpoint.tensors.len());
    for (name, tensor) in &checkpoint.tensors {
        let expected: usize = tensor.shape.iter().product();
        if expected != tensor.data.len() {
            return Err(CheckpointError::Shape {
                name: name.clone(),
                shape: tensor.shape.clone(),
                expected,
                actual: tensor.data.len(),
            });
        }
        let bytes = tensor.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        raw.push((name, &tensor.shape, bytes));
    }
    let mut views = Vec::with_capacity(raw.len());
    for (name, shape, bytes) in &raw {
        let view = TensorView::new(Dtype::F32, shape.to_vec(), bytes).map_err(|_| {
            CheckpointError::Shape {
                name: name.to_string(),
                shape: shape.to_vec(),
                expected: shape.iter().product(),
                actual: bytes.len() / 4,
            }
        })?;
        views.push((*name, view));
    }
    let state = serde_json::to_string(&checkpoint.state).map_err(|err| CheckpointError::Io {
        path: PathBuf::from(CHECKPOINT_FILE),
        source: std::io::Error::other(err),
    })?;
    let metadata = HashMap::from([
        (KEY_FORMAT.to_string(), FORMAT.to_string()),
        (KEY_STATE.to_string(), state),
        (KEY_CHECKSUM.to_string(), checksum(&raw)),
    ]);
    safetensors::serialize(views, Some(metadata)).map_err(|err| CheckpointError::Io {
        path: PathBuf::from(CHECKPOINT_FILE),
        source: std::io::Error::other(err),
    })
}

/// blake3 over every tensor's name, shape and bytes, in name order.
fn checksum(tensors: &[(&str, &[usize], Vec<u8>)]) -> String {
    let mut hasher = blake3::Hasher::new();
    for (name, shape, bytes) in tensors {
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update(&(shape.len() as u64).to_le_bytes());
        for dim in *shape {
            hasher.update(&(*dim as u64).to_le_bytes());
        }
        hasher.update(bytes);
    }
    hasher.finalize().to_hex().to_string()
}

fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|err| err.to_string())?;
    let metadata = header
        .metadata()
        .as_ref()
        .ok_or("the header has no metadata")?;
    let format = metadata.get(KEY_FORMAT).map(String::as_str);
    if format != Some(FORMAT) {
        return Err(format!("format is {format:?}, expected {FORMAT:?}"));
    }
    let state: TrainState = serde_json::from_str(metadata.get(KEY_STATE).ok_or("no state")?)
        .map_err(|err| format!("state: {err}"))?;
    let want = metadata.get(KEY_CHECKSUM).ok_or("no checksum")?.clone();
    let file = SafeTensors::deserialize(bytes).map_err(|err| err.to_string())?;
    let mut raw = Vec::new();
    for (name, view) in file.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(format!("tensor `{name}` is {:?}, not F32", view.dtype()));
        }
        raw.push((name, view.shape().to_vec(), view.data().to_vec()));
    }
    raw.sort_by(|a, b| a.0.cmp(&b.0));
    let borrowed: Vec<(&str, &[usize], Vec<u8>)> = raw
        .iter()
        .map(|(name, shape, data)| (name.as_str(), shape.as_slice(), data.clone()))
        .collect();
    if checksum(&borrowed) != want {
        return Err("the tensor data does not match its checksum".to_string());
    }
    let tensors = raw
        .into_iter()
        .map(|(name, shape, data)| {
            let values = data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (
                name,
                TensorData {
                    shape,
                    data: values,
                },
            )
        })
        .collect();
    Ok(Checkpoint { state, tensors })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::train::schedule::ScheduleKind;
    use rand::{Rng, SeedableRng};

    fn sample(seed: u64, step: u64) -> Checkpoint {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut tensors = BTreeMap::new();
        for (name, shape) in [
            ("lora_A.q_proj", vec![4, 16]),
            ("exp_avg.lora_A.q_proj", vec![4, 16]),
            ("score.weight", vec![1, 16]),
            ("scalar", vec![]),
        ] {
            let count: usize = shape.iter().product();
            let data = (0..count).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            tensors.insert(name.to_string(), TensorData { shape, data });
        }
        let mut dropout = ChaCha8Rng::seed_from_u64(seed + 1);
        for _ in 0..step {
            dropout.random::<u64>();
        }
        Checkpoint {
            state: TrainState {
                step,
                cursor: Cursor {
                    epoch: 1,
                    position: 24,
                },
                rngs: BTreeMap::from([("dropout".to_string(), RngState::capture(&dropout))]),
                schedule: Schedule {
                    kind: ScheduleKind::Cosine,
                    base_lr: 5e-4,
                    warmup_steps: 3,
                    total_steps: 90,
                },
                extra: serde_json::json!({"ema_updates": step}),
            },
            tensors,
        }
    }

    #[test]
    fn round_trips_bit_exactly_and_keeps_the_previous_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let first = sample(1, 10);
        save(dir.path(), &first).unwrap();
        let loaded = load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.checkpoint, first);
        assert_eq!(loaded.path, dir.path().join(CHECKPOINT_FILE));

        let second = sample(2, 20);
        save(dir.path(), &second).unwrap();
        assert_eq!(load(dir.path()).unwrap().unwrap().checkpoint, second);
        let previous = std::fs::read(dir.path().join(PREVIOUS_FILE)).unwrap();
        assert_eq!(decode(&previous).unwrap(), first);
        assert!(!dir.path().join(TEMP_FILE).exists());
    }

    #[test]
    fn restored_rng_continues_the_same_sequence() {
        let mut rng = ChaCha8Rng::seed_from_u64(77);
        rng.set_stream(3);
        for _ in 0..13 {
            rng.random::<u32>();
        }
        let state = RngState::capture(&rng);
        let json = serde_json::to_string(&state).unwrap();
        let mut restored = serde_json::from_str::<RngState>(&json)
            .unwrap()
            .restore()
            .unwrap();
        let want: Vec<u64> = (0..5).map(|_| rng.random()).collect();
        let got: Vec<u64> = (0..5).map(|_| restored.random()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn corrupt_checkpoint_is_an_error_naming_the_fallback() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &sample(1, 10)).unwrap();
        save(dir.path(), &sample(2, 20)).unwrap();
        let path = dir.path().join(CHECKPOINT_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let err = load(dir.path()).unwrap_err();
        let text = format!("{err}");
        assert!(
            text.contains("corrupt") && text.contains("checksum"),
            "{text}"
        );
        let help = miette::Diagnostic::help(&err).unwrap().to_string();
        assert!(help.contains(PREVIOUS_FILE), "{help}");

        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(CheckpointError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_crash_between_renames_resumes_from_the_previous_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &sample(1, 10)).unwrap();
        save(dir.path(), &sample(2, 20)).unwrap();
        std::fs::remove_file(dir.path().join(CHECKPOINT_FILE)).unwrap();
        std::fs::write(dir.path().join(TEMP_FILE), b"half written").unwrap();
        let resume = load(dir.path()).unwrap().unwrap();
        assert_eq!(resume.checkpoint, sample(1, 10));
        assert_eq!(resume.path, dir.path().join(PREVIOUS_FILE));
    }

    #[test]
    fn mismatched_shape_is_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let mut bad = sample(1, 1);
        bad.tensors.insert(
            "w".into(),
            TensorData {
                shape: vec![2, 3],
                data: vec![1.0; 5],
            },
        );
        assert!(matches!(
            save(dir.path(), &bad),
            Err(CheckpointError::Shape { .. })
        ));
        assert_eq!(load(dir.path()).unwrap(), None);
    }
}
