//! The Cargo.lock entries a stage kind's code depends on, for its code
//! fingerprint (build.rs): the crates its source files name (`serde_json::`,
//! `tokenizers::`, ...) among the engine's dependencies, and everything
//! those depend on in turn. So a `cargo update` of a crate no kind uses, or
//! that only the CLI uses, re-runs nothing, while a new version of the GEMM
//! or the tokenizer re-runs the kinds that compute with it.
//!
//! Shared by build.rs and the engine's unit test of it, so it uses std only
//! and reads the lock file's simple layout itself.

use std::collections::BTreeSet;

/// One `[[package]]` entry.
struct Package {
    name: String,
    version: String,
    /// As written: `name`, `name version` or `name version (source)`.
    dependencies: Vec<String>,
    /// The entry's lines, as they stand in the file.
    text: String,
}

/// A parsed Cargo.lock.
pub struct Lock {
    packages: Vec<Package>,
}

impl Lock {
    pub fn parse(text: &str) -> Lock {
        let mut packages = Vec::new();
        for block in text.split("[[package]]").skip(1) {
            let block = block.split("\n[").next().unwrap_or(block);
            let field = |key: &str| {
                block.lines().find_map(|l| {
                    l.strip_prefix(key)
                        .and_then(|rest| rest.trim().strip_prefix('='))
                        .map(|v| v.trim().trim_matches('"').to_string())
                })
            };
            let dependencies = match block.find("dependencies = [") {
                Some(start) => block[start..]
                    .lines()
                    .skip(1)
                    .take_while(|l| !l.starts_with(']'))
                    .map(|l| l.trim().trim_end_matches(',').trim_matches('"').to_string())
                    .collect(),
                None => Vec::new(),
            };
            packages.push(Package {
                name: field("name ").unwrap_or_default(),
                version: field("version ").unwrap_or_default(),
                dependencies,
                text: block.trim().to_string(),
            });
        }
        Lock { packages }
    }

    /// The package a dependency line means.
    fn resolve(&self, dependency: &str) -> Option<usize> {
        let mut words = dependency.split_whitespace();
        let name = words.next()?;
        let version = words.next();
        self.packages
            .iter()
            .position(|p| p.name == name && version.is_none_or(|v| p.version == v))
    }

    /// The names of `package`'s dependencies (its own crates, for the
    /// engine).
    pub fn dependencies_of(&self, package: &str) -> Vec<String> {
        self.packages
            .iter()
            .find(|p| p.name == package)
            .map(|p| {
                p.dependencies
                    .iter()
                    .filter_map(|d| d.split_whitespace().next().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The entries of `roots` and of everything they depend on, each once,
    /// in the file's order.
    pub fn closure(&self, roots: &[String]) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<usize> = roots.iter().filter_map(|r| self.resolve(r)).collect();
        while let Some(i) = todo.pop() {
            if seen.insert(i) {
                todo.extend(
                    self.packages[i]
                        .dependencies
                        .iter()
                        .filter_map(|d| self.resolve(d)),
                );
            }
        }
        seen.into_iter()
            .map(|i| self.packages[i].text.as_str())
            .collect()
    }
}

/// Which of `crates` (lock names, `-` or `_`) `source` names in a path
/// (`name::`), as code that uses a crate must.
pub fn named_in(crates: &[String], source: &str) -> Vec<String> {
    crates
        .iter()
        .filter(|c| {
            let path = format!("{}::", c.replace('-', "_"));
            source.match_indices(&path).any(|(at, _)| {
                at == 0 || {
                    let before = source.as_bytes()[at - 1];
                    !(before.is_ascii_alphanumeric() || before == b'_')
                }
            })
        })
        .cloned()
        .collect()
}
