//! Stage hashing: blake3 over canonical JSON of what determines a stage's
//! outputs (kind, kind version, the kind's code fingerprint, the device
//! class, semantic config, upstream hashes, input file contents, the base
//! model's identity). Execution settings never enter it. Input files are hashed by
//! content, with a stat cache so unchanged large files are not re-read.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Everything a stage hash is made of, with the names that explain changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HashInput {
    pub kind: String,
    pub version: u32,
    /// The kind's code fingerprint (see `graph::code`): sources, kernels,
    /// Cargo.lock, compiler.
    #[serde(default)]
    pub code: String,
    /// The device class the results are computed on (`cpu`, `cuda`): the
    /// two give different numbers. Which GPU, presets, micro-batch,
    /// checkpointing and threads stay out (bit-identical on one class).
    #[serde(default)]
    pub device: String,
    /// What the stage's pretrained base model is: a hub commit, or the
    /// content hash of a local folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    pub config: Value,
    /// Params field -> the upstream output it reads.
    pub upstream: BTreeMap<String, UpstreamHash>,
    /// Params field -> an input file's content.
    pub files: BTreeMap<String, FileHash>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpstreamHash {
    pub stage: String,
    pub output: String,
    pub hash: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileHash {
    pub path: PathBuf,
    pub blake3: String,
}

impl HashInput {
    /// The stage hash (64 hex digits). Stage names and file paths are left
    /// out: renaming a stage or moving a file does not change results.
    pub fn hash(&self) -> String {
        let hashed = json!({
            "kind": self.kind,
            "version": self.version,
            "code": self.code,
            "device": self.device,
            "base": self.base,
            "config": self.config,
            "upstream": self.upstream.iter()
                .map(|(field, u)| (field.clone(), json!({"output": u.output, "hash": u.hash})))
                .collect::<serde_json::Map<_, _>>(),
            "files": self.files.iter()
                .map(|(field, f)| (field.clone(), json!(f.blake3)))
                .collect::<serde_json::Map<_, _>>(),
        });
        blake3::hash(canonical_json(&hashed).as_bytes())
            .to_hex()
            .to_string()
    }
}

/// JSON with sorted keys, no whitespace, and floats in their shortest
/// round-trip form (`-0.0` written as `0.0`), so equal values give equal bytes
/// on every machine.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => {
            out.push_str(&serde_json::to_string(value).unwrap_or_default());
        }
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => {
                let _ = write!(out, "{i}");
            }
            (None, Some(u), _) => {
                let _ = write!(out, "{u}");
            }
            (None, None, Some(f)) => {
                let f = if f == 0.0 { 0.0 } else { f };
                out.push_str(
                    &serde_json::Number::from_f64(f).map_or("null".into(), |n| n.to_string()),
                );
            }
            _ => out.push_str("null"),
        },
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(key).unwrap_or_default());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
    }
}

/// The dotted paths of fields that differ between two configs.
pub fn changed_fields(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff(old, new, String::new(), &mut out);
    out
}

fn diff(old: &Value, new: &Value, path: String, out: &mut Vec<String>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => diff(x, y, join(key), out),
                    _ => out.push(join(key)),
                }
            }
        }
        _ => {
            if canonical_json(old) != canonical_json(new) {
                out.push(if path.is_empty() {
                    "(all)".into()
                } else {
                    path
                });
            }
        }
    }
}

/// A remembered file hash, valid while size, mtime and inode are unchanged.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct StatEntry {
    size: u64,
    mtime_ns: i128,
    inode: u64,
    blake3: String,
    /// When the hash was taken: a file modified less than [`RACY_NS`] before
    /// that may change again without its mtime moving, so it is re-hashed
    /// (git's "racy clean" rule).
    hashed_ns: i128,
}

const RACY_NS: i128 = 2_000_000_000;

/// Content hashes of files, remembered across runs by (path, size, mtime, inode).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StatCache {
    entries: BTreeMap<PathBuf, StatEntry>,
    #[serde(skip)]
    dirty: bool,
}

impl StatCache {
    /// Load from `path`; a missing or unreadable cache starts empty (it is
    /// only an accelerator).
    pub fn load(path: &Path) -> Self {
        std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Write back if anything changed (best effort, atomically).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        super::store::write_atomic(path, &bytes)
    }

    /// The blake3 of a file's bytes.
    pub fn hash_file(&mut self, path: &Path) -> std::io::Result<String> {
        let meta = std::fs::metadata(path)?;
        let stat = file_stat(&meta);
        if let Some(entry) = self.entries.get(path)
            && (entry.size, entry.mtime_ns, entry.inode) == stat
            && entry.mtime_ns + RACY_NS < entry.hashed_ns
        {
            return Ok(entry.blake3.clone());
        }
        let blake3 = hash_file_contents(path)?;
        self.entries.insert(
            path.to_path_buf(),
            StatEntry {
                size: stat.0,
                mtime_ns: stat.1,
                inode: stat.2,
                blake3: blake3.clone(),
                hashed_ns: now_ns(),
            },
        );
        self.dirty = true;
        Ok(blake3)
    }
}

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

fn file_stat(meta: &std::fs::Metadata) -> (u64, i128, u64) {
    use std::os::unix::fs::MetadataExt;
    let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    (meta.len(), mtime_ns, meta.ino())
}

/// blake3 of a file, memory-mapped and hashed on all cores when large.
pub fn hash_file_contents(path: &Path) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap_rayon(path)?;
    Ok(hasher.finalize().to_hex().to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_normalises_numbers() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": -0.0, "x": 5e-4}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a": {"x": 0.0005, "y": 0.0}, "b": 1}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&b), r#"{"a":{"x":0.0005,"y":0.0},"b":1}"#);
    }

    #[test]
    fn hash_of_a_fixed_input_is_a_constant() {
        let input = HashInput {
            kind: "k".into(),
            version: 1,
            code: "c0de".into(),
            device: "cpu".into(),
            base: Some("hf:o/n@0123".into()),
            config: json!({"lr": 5.0e-4, "epochs": 3}),
            upstream: BTreeMap::from([(
                "data".into(),
                UpstreamHash {
                    stage: "d".into(),
                    output: "sft".into(),
                    hash: "ab".into(),
                },
            )]),
            files: BTreeMap::new(),
        };
        // The format: code fingerprint, device class and base identity
        // joined the hash in format 2 (stage names and paths stay out).
        let canonical = r#"{"base":"hf:o/n@0123","code":"c0de","config":{"epochs":3,"lr":0.0005},"device":"cpu","files":{},"kind":"k","upstream":{"data":{"hash":"ab","output":"sft"}},"version":1}"#;
        assert_eq!(
            input.hash(),
            blake3::hash(canonical.as_bytes()).to_hex().as_str()
        );
        assert_eq!(
            input.hash(),
            "b48d59855e4cc4fcc62a43997b088b45a24d6456d8794de1fade9536a5f9579a"
        );
    }

    #[test]
    fn changed_fields_names_the_paths() {
        let old = json!({"optim": {"lr": 1.0, "wd": 0.0}, "epochs": 3});
        let new = json!({"optim": {"lr": 2.0, "wd": 0.0}, "epochs": 3, "seed": 1});
        assert_eq!(changed_fields(&old, &new), ["optim.lr", "seed"]);
    }

    #[test]
    fn stat_cache_skips_reading_files_whose_stat_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("old.bin");
        std::fs::write(&file, b"aaaa").unwrap();
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        let set_mtime = || {
            std::fs::File::options()
                .write(true)
                .open(&file)
                .unwrap()
                .set_modified(past)
                .unwrap();
        };
        set_mtime();
        let mut cache = StatCache::default();
        let first = cache.hash_file(&file).unwrap();
        // Same size, same mtime, same inode: the cache answers without reading.
        std::fs::write(&file, b"bbbb").unwrap();
        set_mtime();
        assert_eq!(cache.hash_file(&file).unwrap(), first);
        // Any stat change makes it read again.
        std::fs::write(&file, b"bbbbb").unwrap();
        set_mtime();
        assert_eq!(
            cache.hash_file(&file).unwrap(),
            blake3::hash(b"bbbbb").to_hex().to_string()
        );
    }

    #[test]
    fn stat_cache_rehashes_only_changed_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.txt");
        std::fs::write(&file, b"one").unwrap();
        let mut cache = StatCache::default();
        let first = cache.hash_file(&file).unwrap();
        assert_eq!(first, blake3::hash(b"one").to_hex().to_string());
        // Same size, written at once: the mtime may not even move, but a
        // freshly modified file is never trusted from the cache.
        std::fs::write(&file, b"two").unwrap();
        let second = cache.hash_file(&file).unwrap();
        assert_eq!(second, blake3::hash(b"two").to_hex().to_string());
    }
}
