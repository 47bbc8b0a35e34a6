//! The cache on disk.
//!
//! ```text
//! <cache>/CACHEDIR.TAG       marks the folder for backup tools
//! <cache>/lock               OS advisory lock held by runs, gc and verify
//! <cache>/cache/<hash>/      finished outputs + manifest.json
//! <cache>/work/<hash>/       resumable state of unfinished stages
//! <cache>/tmp/<hash>.<pid>/  outputs being written (renamed into cache/)
//! <cache>/quarantine/        entries that failed `cache verify`
//! <cache>/state/<pipeline>.json   last hash inputs per stage (for "why")
//! <cache>/stat-cache.json    input file hashes by (path, size, mtime, inode)
//! ```
//!
//! An entry counts only if `cache/<hash>/manifest.json` exists; it appears
//! by one rename of a complete folder, so a crash never leaves a half entry
//! that looks finished.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::context::ExecSettings;
use super::hash::{HashInput, hash_file_contents};

/// The environment variable naming the cache folder.
pub const CACHE_ENV: &str = "POKER_PIPE_CACHE";
/// The default cache folder, relative to the working directory.
pub const DEFAULT_CACHE: &str = ".poker-pipe";
pub const MANIFEST: &str = "manifest.json";

const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by poker-pipe.\n\
# For information about cache directory tags see https://bford.info/cachedir/\n";

/// One output file of an entry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ManifestFile {
    pub path: String,
    pub size: u64,
    pub blake3: String,
}

/// What a finished entry holds and how it was made.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub hash: String,
    pub pipeline: String,
    pub stage: String,
    pub input: HashInput,
    pub exec: ExecSettings,
    pub device: String,
    pub started_unix_s: f64,
    pub duration_s: f64,
    pub files: Vec<ManifestFile>,
    /// The stage's `summary.json`, if it wrote one.
    pub summary: Value,
    /// blake3 of this manifest's JSON text with `seal` empty: an edit
    /// anywhere in the manifest (a size, a hash, the config) breaks it.
    /// Keep it the last field (the text is unsealed at its last match).
    #[serde(default)]
    pub seal: String,
}

/// How the seal is written: the manifest's last field.
const SEAL_KEY: &str = "\"seal\": \"";

/// The manifest's text with its seal emptied, and the seal it carries.
/// Works on the text, not a parsed value: floats need not survive a parse.
fn unsealed(text: &str) -> Option<(String, &str)> {
    let start = text.rfind(SEAL_KEY)? + SEAL_KEY.len();
    let len = text[start..].find('"')?;
    let mut blank = String::with_capacity(text.len());
    blank.push_str(&text[..start]);
    blank.push_str(&text[start + len..]);
    Some((blank, &text[start..start + len]))
}

fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// What a cheap look at a cache entry finds (see [`Store::check_entry`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryState {
    /// No manifest: never finished, or removed.
    Missing,
    /// The manifest is sealed and every file it lists is there at its size.
    Intact,
    /// The entry cannot be trusted; why, for the user.
    Damaged(String),
}

/// The last hash inputs of each stage of a pipeline, to explain changes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PipelineState {
    pub stages: BTreeMap<String, HashInput>,
}

/// A handle on a cache folder.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

/// Holds the cache lock until dropped.
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
}

/// The cache folder: `--cache-dir`, else `$POKER_PIPE_CACHE`, else `.poker-pipe`.
pub fn cache_root(flag: Option<&Path>) -> PathBuf {
    if let Some(dir) = flag {
        return dir.to_path_buf();
    }
    match std::env::var_os(CACHE_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(DEFAULT_CACHE),
    }
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Write a file so that readers see the old or the new bytes, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)
}

impl Store {
    /// Open (creating if needed) a cache folder.
    pub fn open(root: &Path) -> std::io::Result<Store> {
        for sub in ["cache", "work", "tmp", "state"] {
            fs::create_dir_all(root.join(sub))?;
        }
        let tag = root.join("CACHEDIR.TAG");
        if !tag.exists() {
            fs::write(&tag, CACHEDIR_TAG)?;
        }
        let root = std::path::absolute(root)?;
        Ok(Store { root })
    }

    /// A handle that creates nothing (for read-only commands on a cache
    /// that may not exist yet).
    pub fn at(root: &Path) -> Store {
        Store {
            root: std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn entry_dir(&self, hash: &str) -> PathBuf {
        self.root.join("cache").join(hash)
    }

    pub fn work_dir(&self, hash: &str) -> PathBuf {
        self.root.join("work").join(hash)
    }

    pub fn stat_cache_path(&self) -> PathBuf {
        self.root.join("stat-cache.json")
    }

    /// Whether an entry can be reused, cheaply: its manifest is sealed and
    /// every file it lists exists with its size (contents are re-hashed only
    /// by `cache verify`).
    pub fn check_entry(&self, hash: &str) -> EntryState {
        let dir = self.entry_dir(hash);
        if !dir.join(MANIFEST).is_file() {
            return EntryState::Missing;
        }
        let manifest = match self.sealed_manifest(hash) {
            Ok(m) => m,
            Err(err) if err.kind() == std::io::ErrorKind::InvalidData => {
                return EntryState::Damaged(err.to_string());
            }
            Err(err) => return EntryState::Damaged(format!("{MANIFEST} unreadable: {err}")),
        };
        for file in &manifest.files {
            match fs::metadata(dir.join(&file.path)) {
                Ok(meta) if meta.len() == file.size => {}
                Ok(meta) => {
                    return EntryState::Damaged(format!(
                        "{} has {} bytes, not {}",
                        file.path,
                        meta.len(),
                        file.size
                    ));
                }
                Err(_) => return EntryState::Damaged(format!("{} is missing", file.path)),
            }
        }
        EntryState::Intact
    }

    /// Take the cache lock. If another process holds it, say so on stderr
    /// and wait for it.
    pub fn lock(&self) -> std::io::Result<LockGuard> {
        let path = self.root.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            // A read-only cache: a lock taken on a read-only handle still
            // keeps writers (who can write elsewhere) out while we read.
            .or_else(|err| File::open(&path).map_err(|_| err))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                eprintln!(
                    "waiting: another poker-pipe process is using the cache {} (lock {}); \
                     this run continues when it finishes",
                    self.root.display(),
                    path.display()
                );
                file.lock()?;
            }
            Err(fs::TryLockError::Error(err)) => return Err(err),
        }
        Ok(LockGuard { _file: file })
    }

    /// A fresh temporary output folder for a stage. Left-overs of killed
    /// runs are removed by [`Store::clean_tmp`] under the lock.
    pub fn tmp_dir(&self, hash: &str) -> std::io::Result<PathBuf> {
        let dir = self
            .root
            .join("tmp")
            .join(format!("{hash}.{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Remove temporary folders of runs that died. Call with the lock held.
    pub fn clean_tmp(&self) -> std::io::Result<u64> {
        let mut freed = 0;
        for entry in read_dir_or_empty(&self.root.join("tmp"))? {
            freed += dir_size(&entry);
            fs::remove_dir_all(&entry)?;
        }
        Ok(freed)
    }

    /// Hash the outputs, write the manifest, and rename `tmp` into the cache.
    /// An existing entry for the hash (a forced re-run) is replaced.
    pub fn commit(&self, tmp: &Path, mut manifest: Manifest) -> std::io::Result<PathBuf> {
        manifest.files = list_files(tmp)?
            .into_iter()
            .map(|rel| {
                let full = tmp.join(&rel);
                Ok(ManifestFile {
                    size: fs::metadata(&full)?.len(),
                    blake3: hash_file_contents(&full)?,
                    path: rel,
                })
            })
            .collect::<std::io::Result<_>>()?;
        manifest.summary = fs::read(tmp.join("summary.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        manifest.seal = String::new();
        let blank = serde_json::to_string_pretty(&manifest).map_err(std::io::Error::other)?;
        if unsealed(&blank).is_none() {
            return Err(std::io::Error::other("the manifest has no seal field"));
        }
        manifest.seal = blake3_hex(blank.as_bytes());
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
        write_atomic(&tmp.join(MANIFEST), &bytes)?;
        let dest = self.entry_dir(&manifest.hash);
        if dest.exists() {
            let old = self.root.join("tmp").join(format!(
                "{}.replaced.{}",
                manifest.hash,
                std::process::id()
            ));
            fs::rename(&dest, &old)?;
            fs::remove_dir_all(&old)?;
        }
        fs::rename(tmp, &dest)?;
        Ok(dest)
    }

    pub fn manifest(&self, hash: &str) -> std::io::Result<Manifest> {
        let bytes = fs::read(self.entry_dir(hash).join(MANIFEST))?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }

    /// The manifest if its seal holds; an `InvalidData` error if it was
    /// edited (or never sealed).
    pub fn sealed_manifest(&self, hash: &str) -> std::io::Result<Manifest> {
        let text = fs::read_to_string(self.entry_dir(hash).join(MANIFEST))?;
        let holds = unsealed(&text)
            .is_some_and(|(blank, seal)| !seal.is_empty() && blake3_hex(blank.as_bytes()) == seal);
        if !holds {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{MANIFEST} was edited"),
            ));
        }
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }

    /// Hashes of all finished entries.
    pub fn entries(&self) -> std::io::Result<Vec<String>> {
        let mut hashes: Vec<String> = read_dir_or_empty(&self.root.join("cache"))?
            .into_iter()
            .filter(|p| p.join(MANIFEST).is_file())
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        hashes.sort();
        Ok(hashes)
    }

    /// Every folder under cache/ and work/ (finished or not), by hash.
    pub fn all_dirs(&self) -> std::io::Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        for sub in ["cache", "work"] {
            for path in read_dir_or_empty(&self.root.join(sub))? {
                if let Some(name) = path.file_name() {
                    out.push((name.to_string_lossy().into_owned(), path));
                }
            }
        }
        Ok(out)
    }

    /// Every folder under cache/, finished-looking or not (an entry whose
    /// manifest was deleted is one `cache verify` must report).
    pub fn entry_folders(&self) -> std::io::Result<Vec<String>> {
        let mut hashes: Vec<String> = read_dir_or_empty(&self.root.join("cache"))?
            .into_iter()
            .filter(|p| p.is_dir())
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        hashes.sort();
        Ok(hashes)
    }

    /// Re-hash an entry's files against its manifest: the files that differ
    /// (missing, resized, changed, or not in the manifest), and the manifest
    /// itself when it is missing, unreadable or edited.
    pub fn verify(&self, hash: &str) -> std::io::Result<Vec<String>> {
        let dir = self.entry_dir(hash);
        let Ok(manifest) = self.sealed_manifest(hash) else {
            return Ok(vec![MANIFEST.to_string()]);
        };
        let mut bad = Vec::new();
        for file in &manifest.files {
            let full = dir.join(&file.path);
            let ok = fs::metadata(&full).is_ok_and(|m| m.len() == file.size)
                && hash_file_contents(&full).is_ok_and(|h| h == file.blake3);
            if !ok {
                bad.push(file.path.clone());
            }
        }
        for rel in list_files(&dir)? {
            if rel != MANIFEST && !manifest.files.iter().any(|f| f.path == rel) {
                bad.push(rel);
            }
        }
        Ok(bad)
    }

    /// Move an entry out of the cache so it is never used again, keeping its
    /// files for inspection.
    pub fn quarantine(&self, hash: &str) -> std::io::Result<PathBuf> {
        let dir = self.root.join("quarantine");
        fs::create_dir_all(&dir)?;
        let dest = dir.join(format!("{hash}.{}", unix_now() as u64));
        fs::rename(self.entry_dir(hash), &dest)?;
        Ok(dest)
    }

    pub fn state(&self, pipeline: &str) -> PipelineState {
        fs::read(self.state_path(pipeline))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save_state(&self, pipeline: &str, state: &PipelineState) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        write_atomic(&self.state_path(pipeline), &bytes)
    }

    fn state_path(&self, pipeline: &str) -> PathBuf {
        self.root.join("state").join(format!("{pipeline}.json"))
    }
}

fn read_dir_or_empty(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    match fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.map(|e| e.path())).collect(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(err),
    }
}

/// Files under `dir`, as sorted relative paths with `/` separators.
pub fn list_files(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in fs::read_dir(&current)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if let Ok(rel) = entry.path().strip_prefix(dir) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Bytes under a path (0 where it cannot be read).
pub fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| dir_size(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seal_is_checked_on_the_text_so_floats_need_not_round_trip() {
        let blank = "{\n  \"summary\": {\"seal\": \"x\"},\n  \"duration_s\": 0.30000000000000004,\n  \"seal\": \"\"\n}";
        let seal = blake3_hex(blank.as_bytes());
        let sealed = blank.replace("\"seal\": \"\"\n", &format!("\"seal\": \"{seal}\"\n"));
        assert_eq!(unsealed(&sealed), Some((blank.to_string(), seal.as_str())));
        let edited = sealed.replace("0.30000000000000004", "0.3");
        assert!(unsealed(&edited).is_some_and(|(b, s)| blake3_hex(b.as_bytes()) != s));
    }
}
