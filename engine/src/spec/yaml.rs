//! A YAML document as a tree of nodes that remember where they came from.
//!
//! serde-saphyr's `Spanned<T>` cannot pass through the stage map (its shape
//! depends on `kind`), so we parse the event stream ourselves into a tree with
//! byte spans. Every later check (schema, references, files) works on this
//! tree, so every error can point at the exact key or value that caused it.
//! Scalars are resolved with the YAML 1.2 core schema.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

use serde_json::{Map, Number, Value};
use serde_saphyr::granit_parser::{Event, Marker, Parser, ScalarStyle, Span};

/// A byte range in the source text.
pub type ByteSpan = Range<usize>;

/// One YAML node and the bytes it was written with.
#[derive(Clone, Debug)]
pub struct Node {
    pub span: ByteSpan,
    pub value: NodeValue,
}

/// The resolved value of a node.
#[derive(Clone, Debug)]
pub enum NodeValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// A mapping entry; the key is kept as text with its own span so that
/// "unknown field" errors can point at the key itself.
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: String,
    pub key_span: ByteSpan,
    pub value: Node,
}

/// A syntax-level problem found while building the tree.
#[derive(Clone, Debug)]
pub struct SyntaxError {
    pub span: ByteSpan,
    pub message: String,
    /// What went wrong, so the report can name it and advise for it.
    pub kind: SyntaxKind,
}

/// The classes of [`SyntaxError`] that get their own code and advice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyntaxKind {
    /// The text is not YAML (indentation, brackets, tabs, ...).
    Syntax,
    /// `.nan` or `.inf`: valid YAML, never a valid setting.
    NotFinite,
    /// A number too large for a 64-bit integer or float.
    Overflow,
    /// Valid YAML that a pipeline file may not use (duplicate keys,
    /// several documents, alias bombs, ...).
    Structure,
}

impl SyntaxError {
    fn new(span: ByteSpan, kind: SyntaxKind, message: impl Into<String>) -> Self {
        SyntaxError {
            span,
            message: message.into(),
            kind,
        }
    }
}

impl Node {
    /// The entries of a mapping node, or `None` for any other node.
    pub fn entries(&self) -> Option<&[Entry]> {
        match &self.value {
            NodeValue::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The value under `key` of a mapping node.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries()?.iter().find(|e| e.key == key)
    }

    /// The text of a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The number of nodes in this subtree.
    pub fn count(&self) -> usize {
        1 + match &self.value {
            NodeValue::Seq(items) => items.iter().map(Node::count).sum(),
            NodeValue::Map(entries) => entries.iter().map(|e| e.value.count()).sum(),
            _ => 0,
        }
    }

    /// A short name of the node's type for error messages.
    pub fn type_name(&self) -> &'static str {
        match &self.value {
            NodeValue::Null => "null",
            NodeValue::Bool(_) => "a boolean",
            NodeValue::Int(_) => "an integer",
            NodeValue::Float(_) => "a number",
            NodeValue::Str(_) => "a string",
            NodeValue::Seq(_) => "a list",
            NodeValue::Map(_) => "a mapping",
        }
    }

    /// The node as JSON (what serde deserializes the typed specs from).
    pub fn to_json(&self) -> Value {
        match &self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(b) => Value::Bool(*b),
            NodeValue::Int(i) => Value::Number((*i).into()),
            NodeValue::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            NodeValue::Str(s) => Value::String(s.clone()),
            NodeValue::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeValue::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect::<Map<_, _>>(),
            ),
        }
    }

    /// Follow a dotted path of mapping keys and list indices (`optim.lr`,
    /// `targets.2`) and return the span of the value found there, or of the
    /// deepest node that exists on the way.
    pub fn span_of(&self, path: &str) -> ByteSpan {
        let mut node = self;
        for segment in path.split('.').filter(|s| !s.is_empty()) {
            let next = match &node.value {
                NodeValue::Map(entries) => {
                    entries.iter().find(|e| e.key == segment).map(|e| &e.value)
                }
                NodeValue::Seq(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.span.clone()
    }
}

/// Parse one YAML document. An empty file is a null document. All syntax
/// problems found are returned; the tree is `None` when the text is unusable.
pub fn parse(source: &str) -> Result<Node, SyntaxError> {
    let offsets = LineOffsets::new(source);
    let mut builder = Builder {
        offsets: &offsets,
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        documents: 0,
        expanded: 0,
    };
    for event in Parser::new_from_str(source) {
        match event {
            Ok((event, span)) => builder.event(event, span)?,
            Err(err) => {
                let message = err.info();
                let mut at = offsets.byte(err.marker());
                if message.to_lowercase().contains("tab") {
                    at = offsets.tab_near(at).unwrap_or(at);
                }
                return Err(SyntaxError::new(at..at, SyntaxKind::Syntax, message));
            }
        }
    }
    Ok(builder.root.unwrap_or(Node {
        span: 0..0,
        value: NodeValue::Null,
    }))
}

/// Converts parser markers (line, char column) into byte offsets.
struct LineOffsets<'a> {
    source: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> LineOffsets<'a> {
    fn new(source: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        LineOffsets {
            source,
            line_starts,
        }
    }

    fn byte(&self, marker: &Marker) -> usize {
        if let Some(b) = marker.byte_offset() {
            return b.min(self.source.len());
        }
        let line = marker
            .line()
            .saturating_sub(1)
            .min(self.line_starts.len() - 1);
        let start = self.line_starts[line];
        let rest = &self.source[start..];
        start
            + rest
                .char_indices()
                .nth(marker.col())
                .map_or(rest.len(), |(i, _)| i)
    }

    /// The tab a tab-related parser error is about: the parser reports it
    /// at the end of the line before (where the indentation began), so look
    /// at the indentation of that line and the next one.
    fn tab_near(&self, at: usize) -> Option<usize> {
        let line = self
            .line_starts
            .partition_point(|&s| s <= at)
            .saturating_sub(1);
        let from = self.line_starts[line];
        let to = self
            .line_starts
            .get(line + 2)
            .copied()
            .unwrap_or(self.source.len());
        self.source[from..to].find('\t').map(|i| from + i)
    }

    fn span(&self, span: &Span) -> ByteSpan {
        let start = self.byte(&span.start);
        let end = self.byte(&span.end).max(start);
        start..end
    }
}

/// A collection being filled while its events stream in.
enum Open {
    Seq {
        start: usize,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        start: usize,
        anchor: usize,
        entries: Vec<Entry>,
        /// Where each key was written, once the mapping has
        /// [`SCAN_KEYS`] entries: duplicates are then found in O(1), so a
        /// mapping of 60,000 stages parses in linear time. Smaller mappings
        /// (every stage's own) scan their entries and allocate nothing.
        keys: HashMap<String, usize>,
        pending_key: Option<(String, ByteSpan)>,
    },
}

struct Builder<'a> {
    offsets: &'a LineOffsets<'a>,
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    documents: usize,
    /// Nodes copied by aliases so far (bounded against "billion laughs").
    expanded: usize,
}

/// Mappings up to this many entries find a duplicate key by scanning.
const SCAN_KEYS: usize = 16;

/// More alias expansion than any real pipeline needs.
const MAX_ALIAS_NODES: usize = 100_000;

impl Builder<'_> {
    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), SyntaxError> {
        let bytes = self.offsets.span(&span);
        match event {
            Event::DocumentStart(..) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(SyntaxError::new(
                        bytes,
                        SyntaxKind::Structure,
                        "a pipeline file holds exactly one YAML document",
                    ));
                }
            }
            Event::Scalar(text, style, anchor, _) => {
                let value = resolve_scalar(&text, style);
                if self.expects_value()
                    && let Some((kind, message)) = number_problem(&text, &value)
                {
                    return Err(SyntaxError::new(bytes, kind, message));
                }
                let node = Node { span: bytes, value };
                self.finish(node, anchor, text)?;
            }
            Event::Alias(id) => {
                let node = self.anchors.get(&id).cloned().ok_or_else(|| {
                    SyntaxError::new(
                        bytes.clone(),
                        SyntaxKind::Structure,
                        "alias to an unknown anchor",
                    )
                })?;
                self.expanded += node.count();
                if self.expanded > MAX_ALIAS_NODES {
                    return Err(SyntaxError::new(
                        bytes,
                        SyntaxKind::Structure,
                        format!(
                            "aliases expand to more than {MAX_ALIAS_NODES} nodes; a pipeline needs far fewer"
                        ),
                    ));
                }
                let text = match &node.value {
                    NodeValue::Str(s) => Cow::Owned(s.clone()),
                    _ => Cow::Borrowed(""),
                };
                let node = Node {
                    span: bytes,
                    value: node.value,
                };
                self.finish(node, 0, text)?;
            }
            Event::SequenceStart(_, anchor, _) => self.stack.push(Open::Seq {
                start: bytes.start,
                anchor,
                items: Vec::new(),
            }),
            Event::MappingStart(_, anchor, _) => self.stack.push(Open::Map {
                start: bytes.start,
                anchor,
                entries: Vec::new(),
                keys: HashMap::new(),
                pending_key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let end = bytes.end;
                match self.stack.pop() {
                    Some(Open::Seq {
                        start,
                        anchor,
                        items,
                    }) => {
                        let end = items.last().map_or(end, |n| n.span.end.max(end));
                        let node = Node {
                            span: start..end.max(start),
                            value: NodeValue::Seq(items),
                        };
                        self.finish(node, anchor, Cow::Borrowed(""))?;
                    }
                    Some(Open::Map {
                        start,
                        anchor,
                        entries,
                        ..
                    }) => {
                        let end = entries.last().map_or(end, |e| e.value.span.end.max(end));
                        let node = Node {
                            span: start..end.max(start),
                            value: NodeValue::Map(entries),
                        };
                        self.finish(node, anchor, Cow::Borrowed(""))?;
                    }
                    None => {}
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether the next finished node is a value (not a mapping key).
    fn expects_value(&self) -> bool {
        !matches!(
            self.stack.last(),
            Some(Open::Map {
                pending_key: None,
                ..
            })
        )
    }

    /// Attach a finished node to its parent (or make it the root).
    /// `key_text` is the node's text, owned only if it becomes a key.
    fn finish(
        &mut self,
        node: Node,
        anchor: usize,
        key_text: Cow<'_, str>,
    ) -> Result<(), SyntaxError> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Open::Seq { items, .. }) => items.push(node),
            Some(Open::Map {
                entries,
                keys,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => {
                    if matches!(node.value, NodeValue::Seq(_) | NodeValue::Map(_)) {
                        return Err(SyntaxError::new(
                            node.span,
                            SyntaxKind::Structure,
                            "mapping keys must be plain text",
                        ));
                    }
                    let first = if entries.len() < SCAN_KEYS {
                        entries
                            .iter()
                            .find(|e| e.key == key_text)
                            .map(|e| e.key_span.start)
                    } else {
                        if keys.is_empty() {
                            keys.extend(entries.iter().map(|e| (e.key.clone(), e.key_span.start)));
                        }
                        keys.get(key_text.as_ref()).copied()
                    };
                    if let Some(first) = first {
                        return Err(SyntaxError::new(
                            node.span,
                            SyntaxKind::Structure,
                            format!("duplicate key `{key_text}` (first written at byte {first})"),
                        ));
                    }
                    let key_text = key_text.into_owned();
                    if entries.len() >= SCAN_KEYS {
                        keys.insert(key_text.clone(), node.span.start);
                    }
                    *pending_key = Some((key_text, node.span));
                }
                Some((key, key_span)) => entries.push(Entry {
                    key,
                    key_span,
                    value: node,
                }),
            },
        }
        Ok(())
    }
}

/// A plain number that cannot be a setting: NaN and infinity, and numbers
/// that overflow (an integer beyond i64 resolves to a float, a float beyond
/// f64 to infinity).
fn number_problem(text: &str, value: &NodeValue) -> Option<(SyntaxKind, String)> {
    let short = super::diag::cut(text, 60);
    match value {
        NodeValue::Float(f) if f.is_nan() || (f.is_infinite() && text.contains(['i', 'I'])) => {
            Some((
                SyntaxKind::NotFinite,
                format!("`{short}` is not a finite number"),
            ))
        }
        NodeValue::Float(f) if f.is_infinite() => Some((
            SyntaxKind::Overflow,
            format!("`{short}` overflows a 64-bit float"),
        )),
        NodeValue::Float(_) if is_core_int(text) => Some((
            SyntaxKind::Overflow,
            format!(
                "`{short}` overflows a 64-bit integer (at most {})",
                i64::MAX
            ),
        )),
        _ => None,
    }
}

/// YAML 1.2 core schema resolution of a scalar; quoted and block scalars
/// are always strings.
fn resolve_scalar(text: &str, style: ScalarStyle) -> NodeValue {
    if style != ScalarStyle::Plain {
        return NodeValue::Str(text.to_string());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return NodeValue::Null,
        "true" | "True" | "TRUE" => return NodeValue::Bool(true),
        "false" | "False" | "FALSE" => return NodeValue::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return NodeValue::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return NodeValue::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return NodeValue::Float(f64::NAN),
        _ => {}
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return NodeValue::Int(i);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return NodeValue::Int(i);
    }
    if is_core_int(text)
        && let Ok(i) = text.parse::<i64>()
    {
        return NodeValue::Int(i);
    }
    if is_core_float(text)
        && let Ok(f) = text.parse::<f64>()
    {
        return NodeValue::Float(f);
    }
    NodeValue::Str(text.to_string())
}

/// `[-+]?[0-9]+`
fn is_core_int(text: &str) -> bool {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_core_float(text: &str) -> bool {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (!int.is_empty() || !frac.is_empty())
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
                && !(int.is_empty() && frac.is_empty())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    let exponent_ok = exponent.is_none_or(is_core_int);
    mantissa_ok && exponent_ok
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn resolves_core_schema_scalars() {
        let doc = "a: 1\nb: 5.0e-4\nc: true\nd: ~\ne: '1'\nf: hello world\ng: [1, x]\nh: 1e3\n";
        let root = parse(doc).unwrap();
        let json = root.to_json();
        assert_eq!(json["a"], 1);
        assert_eq!(json["b"], 5.0e-4);
        assert_eq!(json["c"], true);
        assert!(json["d"].is_null());
        assert_eq!(json["e"], "1");
        assert_eq!(json["f"], "hello world");
        assert_eq!(json["g"][1], "x");
        assert_eq!(json["h"], 1000.0);
    }

    #[test]
    fn spans_point_at_values_and_keys() {
        let doc = "stages:\n  sft:\n    optim: {lr: 0.5}\n    list: [a, bb]\n";
        let root = parse(doc).unwrap();
        let span = root.span_of("stages.sft.optim.lr");
        assert_eq!(&doc[span], "0.5");
        let span = root.span_of("stages.sft.list.1");
        assert_eq!(&doc[span], "bb");
        let sft = root.get("stages").unwrap().value.get("sft").unwrap();
        assert_eq!(&doc[sft.key_span.clone()], "sft");
    }

    #[test]
    fn spans_count_bytes_after_multibyte_text() {
        let doc = "name: \"é€\"\nx: 42\n";
        let root = parse(doc).unwrap();
        assert_eq!(&doc[root.span_of("x")], "42");
    }

    #[test]
    fn rejects_duplicates_and_bad_syntax() {
        assert!(parse("a: 1\na: 2\n").is_err());
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(!err.message.is_empty());
        assert_eq!(parse("a: .nan\n").unwrap_err().kind, SyntaxKind::NotFinite);
        assert_eq!(parse("a: -.inf\n").unwrap_err().kind, SyntaxKind::NotFinite);
        let err = parse("a: 99999999999999999999\n").unwrap_err();
        assert_eq!(err.kind, SyntaxKind::Overflow);
        assert!(err.message.contains("64-bit integer"), "{}", err.message);
        assert_eq!(parse("a: 1e400\n").unwrap_err().kind, SyntaxKind::Overflow);
        assert_eq!(parse("a: 1e300\n").unwrap().to_json()["a"], 1e300);
    }

    /// Small mappings scan their keys, large ones index them: a duplicate
    /// is found, at the first writing's byte, on either side of the switch
    /// and across it.
    #[test]
    fn duplicate_keys_are_found_in_small_and_large_mappings() {
        for size in [1, SCAN_KEYS - 1, SCAN_KEYS, SCAN_KEYS + 1, 3 * SCAN_KEYS] {
            let mut text: String = (0..size).map(|i| format!("k{i}: {i}\n")).collect();
            assert!(parse(&text).is_ok(), "{size} distinct keys");
            for dup in [0, size - 1] {
                let mut doubled = text.clone();
                doubled.push_str(&format!("k{dup}: again\n"));
                let err = parse(&doubled).unwrap_err();
                let first = doubled.find(&format!("k{dup}:")).unwrap();
                assert!(
                    err.message
                        .contains(&format!("first written at byte {first}")),
                    "{size} keys, k{dup} again: {}",
                    err.message
                );
            }
            text.push_str("last: 1\n");
            assert!(parse(&text).is_ok());
        }
    }

    #[test]
    fn a_tab_error_points_at_the_tab() {
        let doc = "name: x\nstages:\n\tsrc: 1\n";
        let err = parse(doc).unwrap_err();
        assert_eq!(err.span.start, doc.find('\t').unwrap(), "{err:?}");
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            doc.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let err = parse(&doc).unwrap_err();
        assert!(err.message.contains("aliases expand"), "{}", err.message);
    }

    #[test]
    fn aliases_copy_the_anchored_value() {
        let root = parse("base: &b {lr: 0.1}\nother: *b\n").unwrap();
        assert_eq!(root.to_json()["other"]["lr"], 0.1);
    }
}
