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

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use miette::Diagnostic;
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::View;
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

impl Resume {
    /// Move tensor `name` out of the checkpoint, with its expected shape
    /// checked: a checkpoint written under another configuration (a
    /// different LoRA rank, other target modules) is an error that says so,
    /// not a silent partial restore.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<TensorData, CheckpointError> {
        let mismatch = |found: String| CheckpointError::Mismatch {
            path: self.path.clone(),
            name: name.to_string(),
            expected: format!("{shape:?}"),
            found,
        };
        let tensor = self
            .checkpoint
            .tensors
            .remove(name)
            .ok_or_else(|| mismatch("no such tensor".to_string()))?;
        if tensor.shape != shape {
            return Err(mismatch(format!("shape {:?}", tensor.shape)));
        }
        Ok(tensor)
    }
}

#[derive(Debug, Error, Diagnostic)]
pub enum CheckpointError {
    #[error("checkpoint `{}` does not fit this stage: tensor `{name}` should have shape {expected}, found {found}", path.display())]
    #[diagnostic(
        code(train::checkpoint::mismatch),
        help(
            "the checkpoint was written by another configuration; delete its work directory to restart the stage"
        )
    )]
    Mismatch {
        path: PathBuf,
        name: String,
        expected: String,
        found: String,
    },
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
/// Tensors are streamed to disk one at a time, so saving never holds a
/// second copy of all the state in memory (an 8B LoRA with its AdamW
/// moments is about 4 GB).
pub fn save(work_dir: &Path, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
    let mut hasher = blake3::Hasher::new();
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
        hash_tensor(&mut hasher, name, &tensor.shape, &le_bytes(&tensor.data));
    }
    let state = serde_json::to_string(&checkpoint.state).map_err(|err| CheckpointError::Io {
        path: work_dir.join(CHECKPOINT_FILE),
        source: std::io::Error::other(err),
    })?;
    let metadata = HashMap::from([
        (KEY_FORMAT.to_string(), FORMAT.to_string()),
        (KEY_STATE.to_string(), state),
        (
            KEY_CHECKSUM.to_string(),
            hasher.finalize().to_hex().to_string(),
        ),
    ]);
    let views = checkpoint.tensors.iter().map(|(name, tensor)| {
        let view = F32View {
            shape: &tensor.shape,
            data: &tensor.data,
        };
        (name.as_str(), view)
    });
    std::fs::create_dir_all(work_dir).map_err(io(work_dir))?;
    let temp = work_dir.join(TEMP_FILE);
    let current = work_dir.join(CHECKPOINT_FILE);
    let previous = work_dir.join(PREVIOUS_FILE);
    safetensors::serialize_to_file(views, Some(metadata), &temp).map_err(|err| {
        CheckpointError::Io {
            path: temp.clone(),
            source: std::io::Error::other(err),
        }
    })?;
    File::open(&temp)
        .and_then(|file| file.sync_all())
        .map_err(io(&temp))?;
    if current.exists() {
        std::fs::rename(&current, &previous).map_err(io(&current))?;
    }
    std::fs::rename(&temp, &current).map_err(io(&temp))?;
    File::open(work_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io(work_dir))
}

/// An f32 tensor as safetensors sees it: little-endian bytes made when the
/// writer reaches it.
struct F32View<'a> {
    shape: &'a [usize],
    data: &'a [f32],
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(le_bytes(self.data))
    }

    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}

fn le_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Feed one tensor's name, shape and bytes to the checksum; tensors go in
/// name order on both sides.
fn hash_tensor(hasher: &mut blake3::Hasher, name: &str, shape: &[usize], bytes: &[u8]) {
    hasher.update(&(name.len() as u64).to_le_bytes());
    hasher.update(name.as_bytes());
    hasher.update(&(shape.len() as u64).to_le_bytes());
    for dim in shape {
        hasher.update(&(*dim as u64).to_le_bytes());
    }
    hasher.update(bytes);
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
    let mut views = file.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hasher = blake3::Hasher::new();
    let mut tensors = BTreeMap::new();
    for (name, view) in views {
        if view.dtype() != Dtype::F32 {
            return Err(format!("tensor `{name}` is {:?}, not F32", view.dtype()));
        }
        hash_tensor(&mut hasher, &name, view.shape(), view.data());
        let data = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let shape = view.shape().to_vec();
        tensors.insert(name, TensorData { shape, data });
    }
    if hasher.finalize().to_hex().as_str() != want {
        return Err("the tensor data does not match its checksum".to_string());
    }
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
    fn taking_tensors_checks_name_and_shape() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &sample(1, 10)).unwrap();
        let mut resume = load(dir.path()).unwrap().unwrap();
        let want = resume.checkpoint.tensors["score.weight"].clone();
        assert_eq!(resume.take("score.weight", &[1, 16]).unwrap(), want);
        let err = resume.take("lora_A.q_proj", &[8, 16]).unwrap_err();
        assert!(err.to_string().contains("found shape [4, 16]"), "{err}");
        let err = resume.take("lora_B.q_proj", &[16, 4]).unwrap_err();
        assert!(err.to_string().contains("no such tensor"), "{err}");
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

    /// A whole training loop built from the harness (data order, schedule,
    /// RNG, metrics, guard, checkpoints): linear regression by AdamW with
    /// input noise, batch 4 in micro-batches of 2, three epochs.
    mod resume {
        use super::*;
        use crate::train::data_order::DataOrder;
        use crate::train::guard::LossGuard;
        use crate::train::metrics::{LOG_FILE, METRICS_FILE, MetricsLog};
        use rand::{Rng, SeedableRng};

        const DIM: usize = 5;
        const EPOCHS: u64 = 3;
        const EVERY: u64 = 5;

        fn dataset(poison: Option<usize>) -> Vec<([f32; DIM], f32)> {
            let mut rng = ChaCha8Rng::seed_from_u64(2024);
            let truth: [f32; DIM] = std::array::from_fn(|_| rng.random_range(-2.0..2.0));
            (0..37)
                .map(|i| {
                    let x: [f32; DIM] = std::array::from_fn(|_| rng.random_range(-1.0..1.0));
                    let y = x.iter().zip(&truth).map(|(a, b)| a * b).sum::<f32>();
                    (x, if Some(i) == poison { f32::NAN } else { y })
                })
                .collect()
        }

        /// Train until done (`Ok(Some(weights))`), or return `Ok(None)` right
        /// after step `kill_after` as if killed, or the guard's error.
        fn train(
            dir: &Path,
            data: &[([f32; DIM], f32)],
            kill_after: Option<u64>,
        ) -> Result<Option<Vec<f32>>, String> {
            let order = DataOrder::new(data.len(), 4, 11).map_err(|e| e.to_string())?;
            let schedule = Schedule {
                kind: ScheduleKind::Cosine,
                base_lr: 0.05,
                warmup_steps: 3,
                total_steps: order.total_steps(EPOCHS),
            };
            let resume = load(dir).map_err(|e| e.to_string())?;
            let (mut state, mut tensors) = match resume {
                Some(r) => (r.checkpoint.state, r.checkpoint.tensors),
                None => {
                    let zeros = TensorData {
                        shape: vec![DIM],
                        data: vec![0.0; DIM],
                    };
                    let noise = ChaCha8Rng::seed_from_u64(5);
                    let state = TrainState {
                        step: 0,
                        cursor: Cursor::default(),
                        rngs: BTreeMap::from([("noise".into(), RngState::capture(&noise))]),
                        schedule,
                        extra: serde_json::json!({}),
                    };
                    let names = ["w", "exp_avg.w", "exp_avg_sq.w"];
                    (state, names.map(|n| (n.to_string(), zeros.clone())).into())
                }
            };
            let mut log = if state.step == 0 {
                MetricsLog::create(dir)
            } else {
                MetricsLog::resume(dir, state.step)
            }
            .map_err(|e| e.to_string())?;
            let mut noise = state.rngs["noise"].restore().ok_or("rng")?;
            let mut guard = LossGuard {
                stage: "toy".into(),
                lr: schedule.base_lr,
                max_grad_norm: None,
                last_good_step: (state.step > 0).then_some(state.step),
            };
            let mut batches = order.batches(state.cursor, EPOCHS);
            while let Some(batch) = batches.next() {
                let step = state.step + 1;
                let w = &tensors["w"].data;
                let mut grad = [0.0f32; DIM];
                let mut loss = 0.0f32;
                for micro in batch.micro_batches(2) {
                    for &i in micro {
                        let (x, y) = &data[i];
                        let x: Vec<f32> = x
                            .iter()
                            .map(|v| v + 0.01 * noise.random_range(-1.0f32..1.0))
                            .collect();
                        let err = x.iter().zip(w).map(|(a, b)| a * b).sum::<f32>() - y;
                        loss += err * err;
                        for (g, xi) in grad.iter_mut().zip(&x) {
                            *g += 2.0 * err * xi;
                        }
                    }
                }
                let n = batch.indices.len() as f32;
                let loss = loss / n;
                guard
                    .check_loss(step, f64::from(loss))
                    .map_err(|e| e.to_string())?;
                let lr = schedule.lr(step - 1) as f32;
                let t = step as i32;
                for (k, g) in grad.iter().enumerate() {
                    let g = g / n;
                    let m = &mut tensors.get_mut("exp_avg.w").ok_or("m")?.data[k];
                    *m = 0.9 * *m + 0.1 * g;
                    let m_hat = *m / (1.0 - 0.9f32.powi(t));
                    let v = &mut tensors.get_mut("exp_avg_sq.w").ok_or("v")?.data[k];
                    *v = 0.999 * *v + 0.001 * g * g;
                    let v_hat = *v / (1.0 - 0.999f32.powi(t));
                    let w = &mut tensors.get_mut("w").ok_or("w")?.data[k];
                    *w -= lr * (m_hat / (v_hat.sqrt() + 1e-8) + 0.01 * *w);
                }
                state.step = step;
                state.cursor = batches.cursor();
                log.record(step, &[("loss", f64::from(loss)), ("lr", f64::from(lr))])
                    .map_err(|e| e.to_string())?;
                if step % EVERY == 0 {
                    state.rngs.insert("noise".into(), RngState::capture(&noise));
                    let checkpoint = Checkpoint {
                        state: state.clone(),
                        tensors: tensors.clone(),
                    };
                    save(dir, &checkpoint).map_err(|e| e.to_string())?;
                    guard.last_good_step = Some(step);
                }
                if Some(step) == kill_after {
                    return Ok(None);
                }
            }
            Ok(Some(tensors["w"].data.clone()))
        }

        #[test]
        fn killed_and_resumed_run_ends_bit_identical_to_a_straight_run() {
            let data = dataset(None);
            let straight = tempfile::tempdir().unwrap();
            let want = train(straight.path(), &data, None).unwrap().unwrap();
            assert_eq!(
                load(straight.path())
                    .unwrap()
                    .unwrap()
                    .checkpoint
                    .state
                    .step,
                30
            );

            let killed = tempfile::tempdir().unwrap();
            // Killed twice: mid-epoch after step 13, then right at step 25.
            assert_eq!(train(killed.path(), &data, Some(13)).unwrap(), None);
            assert_eq!(
                load(killed.path()).unwrap().unwrap().checkpoint.state.step,
                10
            );
            assert_eq!(train(killed.path(), &data, Some(25)).unwrap(), None);
            let got = train(killed.path(), &data, None).unwrap().unwrap();
            assert_eq!(got, want, "weights differ after resume");
            for name in [METRICS_FILE, LOG_FILE] {
                let a = std::fs::read(straight.path().join(name)).unwrap();
                let b = std::fs::read(killed.path().join(name)).unwrap();
                assert_eq!(a, b, "{name} differs after resume");
            }
            let loss = |dir: &Path| {
                let text = std::fs::read_to_string(dir.join(METRICS_FILE)).unwrap();
                let last = text.lines().last().unwrap().to_string();
                serde_json::from_str::<serde_json::Value>(&last).unwrap()["loss"]
                    .as_f64()
                    .unwrap()
            };
            assert!(loss(straight.path()) < 0.5, "the toy problem is learned");
        }

        #[test]
        fn nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint() {
            let order = DataOrder::new(37, 4, 11).unwrap();
            // Poison the first example of the batch of step 8 (epoch 0).
            let poisoned = order.permutation(0)[7 * 4];
            let dir = tempfile::tempdir().unwrap();
            let err = train(dir.path(), &dataset(Some(poisoned)), None).unwrap_err();
            assert!(err.contains("loss became NaN at step 8"), "{err}");
            let kept = load(dir.path()).unwrap().unwrap().checkpoint;
            assert_eq!(kept.state.step, 5);
            assert!(kept.tensors["w"].data.iter().all(|v| v.is_finite()));
        }
    }
}
