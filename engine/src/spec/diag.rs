//! Problems found in a pipeline file, rendered as miette diagnostics (with
//! the YAML snippet and a label on the offending value) or as JSON records.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};
use serde::Serialize;

use super::yaml::ByteSpan;

/// One thing wrong with a pipeline file.
#[derive(Clone, Debug)]
pub struct Problem {
    /// Stable machine-readable code, e.g. `spec::unknown_field`.
    pub code: &'static str,
    pub message: String,
    pub help: Option<String>,
    /// Where it is: the primary label.
    pub span: Option<ByteSpan>,
    pub label: String,
    /// Other places that explain it (e.g. each edge of a cycle).
    pub related: Vec<(ByteSpan, String)>,
    /// The dotted path of the offending field, when the problem is about one.
    pub field: Option<String>,
}

impl Problem {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Problem {
            code,
            message: message.into(),
            help: None,
            span: None,
            label: String::new(),
            related: Vec::new(),
            field: None,
        }
    }

    pub fn at(mut self, span: ByteSpan, label: impl Into<String>) -> Self {
        self.span = Some(span);
        self.label = label.into();
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn also(mut self, span: ByteSpan, label: impl Into<String>) -> Self {
        self.related.push((span, label.into()));
        self
    }
}

/// "did you mean `x`?" for the closest candidate, if any is close enough.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

/// Every problem of one file, with its text for snippets.
#[derive(Clone, Debug)]
pub struct FileProblems {
    pub path: PathBuf,
    pub source: Arc<String>,
    pub problems: Vec<Problem>,
}

/// A problem bound to its file, ready for miette.
#[derive(Debug)]
pub struct SpecDiagnostic {
    problem: Problem,
    source: NamedSource<Arc<String>>,
}

impl fmt::Display for SpecDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problem.message)
    }
}

impl std::error::Error for SpecDiagnostic {}

impl Diagnostic for SpecDiagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.problem.code))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.problem
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.problem
            .span
            .as_ref()
            .map(|_| &self.source as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.problem.span.clone()?;
        let primary = LabeledSpan::new_primary_with_span(
            Some(self.problem.label.clone()).filter(|l| !l.is_empty()),
            span,
        );
        let related = self
            .problem
            .related
            .iter()
            .map(|(s, l)| LabeledSpan::new_with_span(Some(l.clone()), s.clone()));
        Some(Box::new(std::iter::once(primary).chain(related)))
    }
}

/// The JSON record of `validate --format json`.
#[derive(Debug, Serialize)]
pub struct JsonProblem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub code: String,
    pub message: String,
    pub help: Option<String>,
}

impl FileProblems {
    pub fn new(path: &Path, source: Arc<String>) -> Self {
        FileProblems {
            path: path.to_path_buf(),
            source,
            problems: Vec::new(),
        }
    }

    pub fn push(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// The problems as miette diagnostics.
    pub fn diagnostics(&self) -> Vec<SpecDiagnostic> {
        let name = self.path.display().to_string();
        self.problems
            .iter()
            .map(|p| SpecDiagnostic {
                problem: p.clone(),
                source: NamedSource::new(&name, Arc::clone(&self.source)).with_language("yaml"),
            })
            .collect()
    }

    /// The problems as JSON records with 1-based line and column.
    pub fn json(&self) -> Vec<JsonProblem> {
        self.problems
            .iter()
            .map(|p| {
                let (line, column) = p
                    .span
                    .as_ref()
                    .map_or((1, 1), |s| line_column(&self.source, s.start));
                JsonProblem {
                    file: self.path.display().to_string(),
                    line,
                    column,
                    code: p.code.to_string(),
                    message: p.message.clone(),
                    help: p.help.clone(),
                }
            })
            .collect()
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_in_characters() {
        let text = "ab\né: x\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 1), (1, 2));
        let x = text.find('x').unwrap_or_default();
        assert_eq!(line_column(text, x), (2, 4));
    }

    #[test]
    fn suggests_only_close_names() {
        assert_eq!(
            did_you_mean("epochz", ["epochs", "lr"]).as_deref(),
            Some("did you mean `epochs`?")
        );
        assert_eq!(did_you_mean("zzz", ["epochs", "lr"]), None);
    }
}
