//! The pipeline YAML: spec types (serde + schemars), loading with spans,
//! semantic checks, presets and diagnostics.
//!
//! Data flow: [`load`] reads and parses a file into a span-carrying tree;
//! [`check`] validates it against the schema and the registered kinds and
//! resolves references, producing a [`Pipeline`] or every problem found.

mod check;
mod diag;
mod presets;
mod schema;
mod schema_check;
mod types;
pub mod yaml;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use check::{Pipeline, Stage, Upstream, check};
pub use diag::{FileProblems, JsonProblem, Problem, SpecDiagnostic, did_you_mean};
pub use presets::{PresetChoice, exec_settings, select_preset};
pub use schema::pipeline_schema;
pub use types::{Dtype, MemoryPreset, ModelDefaults, PipelineFile};

/// A pipeline file's text and YAML tree.
#[derive(Debug)]
pub struct SpecFile {
    pub path: PathBuf,
    pub source: Arc<String>,
    pub root: yaml::Node,
}

/// Read and parse a pipeline file. I/O and YAML syntax errors come back as
/// problems of that file.
pub fn load(path: &Path) -> Result<SpecFile, FileProblems> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) => {
            let mut problems = FileProblems::new(path, Arc::new(String::new()));
            problems.push(
                Problem::new("spec::io", format!("cannot read {}: {err}", path.display()))
                    .help("check the path and that the file is UTF-8 text"),
            );
            return Err(problems);
        }
    };
    let source = Arc::new(text);
    match yaml::parse(&source) {
        Ok(root) => Ok(SpecFile {
            path: path.to_path_buf(),
            source,
            root,
        }),
        Err(err) => {
            let mut problems = FileProblems::new(path, Arc::clone(&source));
            problems.push(
                Problem::new("spec::yaml", format!("YAML syntax error: {}", err.message))
                    .at(err.span, "here")
                    .help("fix the YAML syntax; indentation and unclosed brackets are the usual causes"),
            );
            Err(problems)
        }
    }
}

/// Load and check in one go.
pub fn load_and_check(
    path: &Path,
    registry: &crate::graph::Registry,
) -> Result<Pipeline, FileProblems> {
    let file = load(path)?;
    check(&file, registry)
}
