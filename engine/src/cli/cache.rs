//! `poker-pipe cache ls|gc|verify`: inspect, clean and check the stage cache.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::error::{CmdResult, Exit, Failure};
use crate::graph::{MANIFEST, PlanOptions, Store, cache_root, dir_size};
use crate::stages;

use super::plan::{human_bytes, load_pipeline, make_plan};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List the cache entries.
    Ls {
        /// Cache folder [default: $POKER_PIPE_CACHE or .poker-pipe].
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Keep the entries the given pipelines use now; delete everything else.
    Gc {
        /// Pipelines whose current stages are kept.
        #[arg(required = true)]
        pipelines: Vec<PathBuf>,
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Re-hash every entry against its manifest; tampered entries are moved
    /// to quarantine/ and never used again.
    Verify {
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
}

pub fn run(command: Command) -> CmdResult {
    match command {
        Command::Ls { cache_dir } => ls(cache_root(cache_dir.as_deref())),
        Command::Gc {
            pipelines,
            cache_dir,
        } => gc(cache_root(cache_dir.as_deref()), &pipelines),
        Command::Verify { cache_dir } => verify(cache_root(cache_dir.as_deref())),
    }
}

fn io_failure(root: &std::path::Path, err: std::io::Error) -> Failure {
    Failure::runtime(miette::miette!(
        help = "check the cache folder (--cache-dir or POKER_PIPE_CACHE)",
        "cache {}: {err}",
        root.display()
    ))
}

fn ls(root: PathBuf) -> CmdResult {
    let store = Store::at(&root);
    let entries = store.entries().map_err(|e| io_failure(&root, e))?;
    println!(
        "{:12}  {:30}  {:14}  {:>10}",
        "HASH", "PIPELINE/STAGE", "KIND", "SIZE"
    );
    let mut total = 0;
    for hash in &entries {
        let size = dir_size(&store.entry_dir(hash));
        total += size;
        let (origin, kind) = match store.manifest(hash) {
            Ok(m) => (format!("{}/{}", m.pipeline, m.stage), m.input.kind),
            Err(_) => ("(unreadable manifest)".into(), String::new()),
        };
        println!(
            "{:12}  {origin:30}  {kind:14}  {:>10}",
            &hash[..12.min(hash.len())],
            human_bytes(size)
        );
    }
    println!(
        "{} entries, {} in {}",
        entries.len(),
        human_bytes(total),
        store.root().display()
    );
    Ok(Exit::Ok)
}

fn gc(root: PathBuf, pipelines: &[PathBuf]) -> CmdResult {
    let registry = stages::registry();
    let store = Store::open(&root).map_err(|e| io_failure(&root, e))?;
    let mut keep = HashSet::new();
    for file in pipelines {
        let pipeline = load_pipeline(file, &registry)?;
        let plan = make_plan(&pipeline, None, &store, &PlanOptions::default())?;
        keep.extend(plan.stages.into_iter().map(|s| s.hash));
    }
    let _lock = store.lock().map_err(|e| io_failure(&root, e))?;
    let mut freed = store.clean_tmp().map_err(|e| io_failure(&root, e))?;
    let mut removed = 0;
    let mut kept = 0;
    for (hash, dir) in store.all_dirs().map_err(|e| io_failure(&root, e))? {
        if keep.contains(&hash) {
            kept += 1;
            continue;
        }
        freed += dir_size(&dir);
        std::fs::remove_dir_all(&dir).map_err(|e| io_failure(&root, e))?;
        removed += 1;
    }
    let quarantine = store.root().join("quarantine");
    if quarantine.exists() {
        freed += dir_size(&quarantine);
        std::fs::remove_dir_all(&quarantine).map_err(|e| io_failure(&root, e))?;
    }
    println!(
        "removed {removed} folder(s), freed {} ({freed} bytes); kept {kept} folder(s) used by {} pipeline(s)",
        human_bytes(freed),
        pipelines.len()
    );
    Ok(Exit::Ok)
}

fn verify(root: PathBuf) -> CmdResult {
    let store = Store::open(&root).map_err(|e| io_failure(&root, e))?;
    let _lock = store.lock().map_err(|e| io_failure(&root, e))?;
    let entries = store.entry_folders().map_err(|e| io_failure(&root, e))?;
    let mut tampered = 0;
    for hash in &entries {
        let bad = store.verify(hash).map_err(|e| io_failure(&root, e))?;
        if bad.is_empty() {
            continue;
        }
        tampered += 1;
        let origin = store
            .manifest(hash)
            .map(|m| format!("{}/{}", m.pipeline, m.stage))
            .unwrap_or_default();
        let manifest = store.entry_dir(hash).join(MANIFEST);
        for file in &bad {
            let path = store.entry_dir(hash).join(file);
            let what = if file != MANIFEST {
                "TAMPERED"
            } else if manifest.is_file() {
                "TAMPERED MANIFEST"
            } else {
                "MISSING MANIFEST"
            };
            println!("{what} {hash} {origin}: {}", path.display());
        }
        match store.quarantine(hash) {
            Ok(moved) => println!(
                "  moved to {}; it will be rebuilt on the next run",
                moved.display()
            ),
            Err(err) => println!("  cannot move it to quarantine ({err}); delete it by hand"),
        }
    }
    println!("{} entries checked, {tampered} tampered", entries.len());
    Ok(if tampered == 0 { Exit::Ok } else { Exit::User })
}
