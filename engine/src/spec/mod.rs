//! The pipeline YAML: spec types (serde + schemars), loading with spans,
//! semantic checks, presets and diagnostics.
//!
//! Data flow: [`load`] reads and parses a file into a span-carrying tree;
//! [`check`] validates it against the schema and the registered kinds and
//! resolves references, producing a [`Pipeline`] or every problem found.

mod check;
mod diag;
mod node_de;
mod presets;
mod schema;
mod schema_check;
mod types;
pub mod yaml;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use check::{Pipeline, Stage, Upstream, check};
pub use diag::{FileProblems, JsonProblem, Problem, SpecDiagnostic, cut, did_you_mean};
pub use node_de::from_node;
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

/// Read and parse a pipeline file. I/O, encoding and YAML syntax errors come
/// back as problems of that file, located where they can be.
pub fn load(path: &Path) -> Result<SpecFile, FileProblems> {
    let bytes = match read_regular(path) {
        Ok(bytes) => bytes,
        Err(message) => {
            let mut problems = FileProblems::new(path, Arc::new(String::new()));
            problems.push(
                Problem::new("spec::io", message)
                    .help("check the path and that the file is UTF-8 text"),
            );
            return Err(problems);
        }
    };
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => {
            let at = err.utf8_error().valid_up_to();
            let source = Arc::new(String::from_utf8_lossy(err.as_bytes()).into_owned());
            let (line, column) = diag::line_column(&source, at);
            let mut problems = FileProblems::new(path, Arc::clone(&source));
            problems.push(
                Problem::new(
                    "spec::utf8",
                    format!("invalid UTF-8 at line {line}, column {column}"),
                )
                .at(at..at + 1, "this byte is not UTF-8")
                .help("save the file as UTF-8"),
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
            problems.push(syntax_problem(err));
            Err(problems)
        }
    }
}

/// The whole of a regular file, or why not ("does not exist", "not a
/// regular file" for a directory or a device such as /dev/zero).
fn read_regular(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("{shown} does not exist"));
        }
        Err(err) => return Err(format!("cannot read {shown}: {err}")),
        Ok(meta) if !meta.is_file() => return Err(format!("{shown} is not a regular file")),
        Ok(_) => {}
    }
    std::fs::read(path).map_err(|err| format!("cannot read {shown}: {err}"))
}

/// A YAML-level error as a problem with its own code and advice.
fn syntax_problem(err: yaml::SyntaxError) -> Problem {
    let (code, message, help) = match err.kind {
        yaml::SyntaxKind::Syntax => (
            "spec::yaml",
            format!("YAML syntax error: {}", err.message),
            "fix the YAML syntax; indentation and unclosed brackets are the usual causes",
        ),
        yaml::SyntaxKind::NotFinite => (
            "spec::not_finite",
            err.message,
            "write a finite number: NaN and infinity are never valid settings",
        ),
        yaml::SyntaxKind::Overflow => (
            "spec::overflow",
            err.message,
            "write a number in range; no setting needs one this large",
        ),
        yaml::SyntaxKind::Structure => (
            "spec::yaml",
            err.message,
            "a pipeline file is one YAML document of plain keys, without duplicates",
        ),
    };
    Problem::new(code, message).at(err.span, "here").help(help)
}

/// Load and check in one go.
pub fn load_and_check(
    path: &Path,
    registry: &crate::graph::Registry,
) -> Result<Pipeline, FileProblems> {
    let file = load(path)?;
    check(&file, registry)
}
