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

    /// Add a problem, its texts cut to [`MAX_TEXT`] characters and its
    /// related places to [`MAX_RELATED`], so that one problem stays small
    /// whatever values the file holds.
    pub fn push(&mut self, mut problem: Problem) {
        problem.message = cut(&problem.message, MAX_TEXT);
        problem.label = cut(&problem.label, MAX_TEXT);
        problem.help = problem.help.map(|h| cut(&h, MAX_TEXT));
        problem.related.truncate(MAX_RELATED);
        for (_, label) in &mut problem.related {
            *label = cut(label, MAX_TEXT);
        }
        self.problems.push(problem);
    }

    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// The problems as miette diagnostics. A problem on a long line (a
    /// 200 KB flow mapping) shows an excerpt of that line, not all of it.
    pub fn diagnostics(&self) -> Vec<SpecDiagnostic> {
        let name = self.path.display().to_string();
        self.problems
            .iter()
            .map(|p| {
                let mut problem = p.clone();
                let source = match excerpt(&self.source, &mut problem) {
                    Some(text) => Arc::new(text),
                    None => Arc::clone(&self.source),
                };
                SpecDiagnostic {
                    problem,
                    source: NamedSource::new(&name, source).with_language("yaml"),
                }
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

/// Longest message, label or help a problem keeps, in characters.
const MAX_TEXT: usize = 300;
/// Most related places a problem shows.
const MAX_RELATED: usize = 20;
/// Longest source line shown whole in a snippet, in bytes.
const MAX_LINE: usize = 400;

/// `text` if it has at most `max` characters, else its start and a note of
/// how much was cut.
pub fn cut(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_string();
    }
    let keep: String = text.chars().take(max.saturating_sub(40).max(1)).collect();
    let left = count - keep.chars().count();
    format!("{keep}… ({left} more characters)")
}

/// When the lines around a problem are too long to show, a stand-in source
/// that keeps the line numbers (earlier lines become empty) and shows only
/// a window of the problem's line; the problem's spans move into it and
/// related places outside the window are dropped. `None` when the real
/// source is fine to show.
fn excerpt(source: &str, problem: &mut Problem) -> Option<String> {
    let span = problem.span.clone()?;
    let line_start = source[..span.start.min(source.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line_end = source[line_start..]
        .find('\n')
        .map_or(source.len(), |i| line_start + i);
    let context_end = source[line_end.min(source.len())..]
        .char_indices()
        .skip(1)
        .find(|(_, c)| *c == '\n')
        .map_or(source.len(), |(i, _)| line_end + i);
    let context_start = source[..line_start.saturating_sub(1)]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    if context_end - context_start <= 3 * MAX_LINE {
        return None;
    }
    let from = floor_char(
        source,
        span.start.saturating_sub(MAX_LINE / 4).max(line_start),
    );
    let to = floor_char(source, (from + MAX_LINE).min(line_end));
    let newlines = source[..line_start].matches('\n').count();
    let mut text = "\n".repeat(newlines);
    let shift = text.len() as isize - from as isize;
    text.push_str(&source[from..to]);
    text.push_str(" …");
    let inside = |s: &ByteSpan| s.start >= from && s.start <= to;
    let moved = |s: &ByteSpan| {
        let start = (s.start as isize + shift) as usize;
        let end = (s.end.min(to) as isize + shift) as usize;
        start..end.max(start)
    };
    problem.span = Some(moved(&span));
    problem.related.retain(|(s, _)| inside(s));
    for (s, _) in &mut problem.related {
        *s = moved(s);
    }
    Some(text)
}

/// The largest char boundary of `text` at or before `at`.
fn floor_char(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
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
#[allow(clippy::unwrap_used)]
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
    fn long_values_and_lines_are_cut() {
        let long = "v".repeat(10_000);
        let shortened = cut(&format!("unknown value `{long}`"), MAX_TEXT);
        assert!(shortened.chars().count() < MAX_TEXT + 30, "{shortened}");
        assert!(shortened.contains("more characters"));

        let source = format!("a: 1\nb: {{x: {long}, bad: 2}}\nc: 3\n");
        let bad = source.find("bad").unwrap();
        let mut file = FileProblems::new(Path::new("p.yaml"), Arc::new(source.clone()));
        file.push(Problem::new("spec::x", long.clone()).at(bad..bad + 3, "here"));
        let shown: Vec<String> = file
            .diagnostics()
            .into_iter()
            .map(|d| format!("{:?}", miette::Report::new(d)))
            .collect();
        assert!(shown[0].len() < 10_000, "{} bytes", shown[0].len());
        assert!(shown[0].contains("bad"), "{}", shown[0]);
        assert_eq!(file.json()[0].line, 2);
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
