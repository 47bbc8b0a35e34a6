//! `jsonl-data`: the user's own training data in the seed's JSON formats,
//! checked line by line. Every bad line is reported as `file:line: problem`
//! and nothing is produced unless every file is entirely valid, so no stage
//! ever trains on a half-valid file.

use std::fmt;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{DATASETS, dataset_output};
use crate::graph::{
    InputDecl, Outcome, OutputDecl, StageContext, StageError, StageKind, StageResult,
};

/// Files of JSON Lines in the seed's formats. Give at least one.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonlDataParams {
    /// Supervised examples, one `{"prompt": ..., "response": ...}` per line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sft: Option<String>,
    /// Preference pairs, one `{"prompt": ..., "chosen": ..., "rejected": ...}` per line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairs: Option<String>,
    /// PPO prompts, one `{"prompt": ...}` per line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<String>,
    /// Held-out supervised examples (same format as `sft`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_sft: Option<String>,
    /// Held-out preference pairs (same format as `pairs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_pairs: Option<String>,
    /// Held-out prompts (same format as `prompts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_prompts: Option<String>,
}

impl JsonlDataParams {
    /// (output name, file) for each file given, in [`DATASETS`] order.
    fn files(&self) -> Vec<(&'static str, &str)> {
        let given = [
            &self.sft,
            &self.pairs,
            &self.prompts,
            &self.test_sft,
            &self.test_pairs,
            &self.test_prompts,
        ];
        DATASETS
            .iter()
            .zip(given)
            .filter_map(|((name, _, _), file)| file.as_deref().map(|f| (*name, f)))
            .collect()
    }
}

/// The fields each dataset's lines must have (all non-empty strings).
fn required_fields(output: &str) -> &'static [&'static str] {
    match output.trim_start_matches("test_") {
        "sft" => &["prompt", "response"],
        "pairs" => &["prompt", "chosen", "rejected"],
        _ => &["prompt"],
    }
}

/// The `jsonl-data` stage kind.
pub struct JsonlData;

impl StageKind for JsonlData {
    type Params = JsonlDataParams;
    const NAME: &'static str = "jsonl-data";
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str =
        "Your own SFT examples, preference pairs and prompts as JSON Lines, checked line by line.";

    fn outputs(&self, params: &JsonlDataParams) -> Vec<OutputDecl> {
        params
            .files()
            .into_iter()
            .filter_map(|(name, _)| dataset_output(name))
            .collect()
    }

    fn inputs(&self, params: &JsonlDataParams) -> Vec<InputDecl> {
        params
            .files()
            .into_iter()
            .map(|(name, file)| InputDecl::file(name, file))
            .collect()
    }

    fn check(&self, params: &JsonlDataParams) -> Vec<(String, String)> {
        if params.files().is_empty() {
            return vec![(
                String::new(),
                "give at least one file: sft, pairs, prompts or a test_ file".into(),
            )];
        }
        Vec::new()
    }

    fn run(&self, params: &JsonlDataParams, ctx: &mut StageContext) -> StageResult {
        let mut problems = Vec::new();
        let mut cleaned = Vec::new();
        for (name, _) in params.files() {
            if ctx.is_cancelled() {
                return Ok(Outcome::Interrupted);
            }
            let path = ctx.file(name)?.to_path_buf();
            let bytes = std::fs::read(&path).map_err(|err| {
                StageError::user(miette::miette!("cannot read {}: {err}", path.display()))
            })?;
            let cancel = ctx.cancel_flag();
            let Some((lines, bad)) = check_lines(&path, &bytes, required_fields(name), &|| {
                cancel.is_cancelled()
            }) else {
                return Ok(Outcome::Interrupted);
            };
            ctx.log(format!(
                "{name}: {} valid lines, {} bad, from {}",
                lines.len(),
                bad.len(),
                path.display()
            ));
            problems.extend(bad);
            cleaned.push((name, lines));
        }
        if !problems.is_empty() {
            return Err(StageError::user(BadLines { problems }));
        }
        let mut summary = Map::new();
        for (name, lines) in cleaned {
            let file = ctx.out_dir().join(format!("{name}.jsonl"));
            let mut body = lines.join("\n");
            body.push('\n');
            std::fs::write(&file, body).map_err(|err| {
                StageError::runtime(miette::miette!("cannot write {}: {err}", file.display()))
            })?;
            summary.insert(name.to_string(), Value::from(lines.len()));
        }
        let summary = serde_json::to_vec_pretty(&Value::Object(summary)).unwrap_or_default();
        std::fs::write(ctx.out_dir().join("summary.json"), summary).map_err(|err| {
            StageError::runtime(miette::miette!("cannot write summary.json: {err}"))
        })?;
        Ok(Outcome::Done)
    }
}

/// Check every line; return the normalised valid lines and one message per
/// bad line (`file:line: problem`), invalid UTF-8 included. Blank lines are
/// skipped. `None` once `stop` says so (polled every [`STOP_EVERY`] lines,
/// so Ctrl-C on a huge file is seen at once).
pub fn check_lines(
    path: &Path,
    bytes: &[u8],
    fields: &[&str],
    stop: &dyn Fn() -> bool,
) -> Option<(Vec<String>, Vec<String>)> {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if i % STOP_EVERY == 0 && stop() {
            return None;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let line = match std::str::from_utf8(line.strip_suffix(b"\r").unwrap_or(line)) {
            Ok(line) => line,
            Err(err) => {
                let column = String::from_utf8_lossy(&line[..err.valid_up_to()])
                    .chars()
                    .count()
                    + 1;
                bad.push(format!("{at}: invalid UTF-8 at column {column}"));
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match check_line(line, fields) {
            Ok(normalised) => good.push(normalised),
            Err(problem) => bad.push(format!("{at}: {}", crate::spec::cut(&problem, 300))),
        }
    }
    if good.is_empty() && bad.is_empty() {
        bad.push(format!("{}: the file has no examples", path.display()));
    }
    Some((good, bad))
}

/// Lines between two looks at the stop flag.
const STOP_EVERY: usize = 4096;

fn check_line(line: &str, fields: &[&str]) -> Result<String, String> {
    let value: Value =
        serde_json::from_str(line).map_err(|err| format!("not valid JSON: {err}"))?;
    let Value::Object(object) = value else {
        return Err("expected a JSON object".into());
    };
    let mut problems = Vec::new();
    for field in fields {
        match object.get(*field) {
            None => problems.push(format!("missing \"{field}\"")),
            Some(Value::String(s)) if s.trim().is_empty() => {
                problems.push(format!("\"{field}\" is empty"));
            }
            Some(Value::String(_)) => {}
            Some(other) => problems.push(format!(
                "\"{field}\" must be a string, found {}",
                json_type(other)
            )),
        }
    }
    for key in object.keys() {
        if !fields.contains(&key.as_str()) {
            problems.push(format!(
                "unknown field \"{key}\" (expected {})",
                fields.join(", ")
            ));
        }
    }
    if let (Some(chosen), Some(rejected)) = (object.get("chosen"), object.get("rejected"))
        && chosen == rejected
        && problems.is_empty()
    {
        problems.push("\"chosen\" and \"rejected\" are the same".into());
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let ordered: Map<String, Value> = fields
        .iter()
        .filter_map(|f| object.get(*f).map(|v| (f.to_string(), v.clone())))
        .collect();
    serde_json::to_string(&Value::Object(ordered)).map_err(|err| err.to_string())
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Bad lines in the user's data; nothing was produced.
#[derive(Debug)]
pub struct BadLines {
    pub problems: Vec<String>,
}

/// How many bad lines to list before summarising the rest.
const SHOWN: usize = 50;

impl fmt::Display for BadLines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} bad line(s) in the data files; nothing was produced:",
            self.problems.len()
        )?;
        for problem in self.problems.iter().take(SHOWN) {
            writeln!(f, "  {problem}")?;
        }
        if self.problems.len() > SHOWN {
            writeln!(f, "  ... and {} more", self.problems.len() - SHOWN)?;
        }
        Ok(())
    }
}

impl std::error::Error for BadLines {}

impl miette::Diagnostic for BadLines {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("jsonl_data::bad_lines"))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(
            "each line must be one JSON object with exactly the listed string fields; fix or delete the lines named",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_lines_are_normalised() {
        let text = "{\"response\": \"call\", \"prompt\": \"p\"}\n\n{\"prompt\":\"q\",\"response\":\"fold\"}\n";
        let (good, bad) = check_lines(
            Path::new("a.jsonl"),
            text.as_bytes(),
            &["prompt", "response"],
            &|| false,
        )
        .unwrap_or_default();
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(good[0], r#"{"prompt":"p","response":"call"}"#);
        assert_eq!(good.len(), 2);
    }

    #[test]
    fn every_bad_line_is_named() {
        let text = [
            r#"{"prompt": "p", "chosen": "call", "rejected": "fold"}"#,
            r#"{"prompt": "p", "chosen": "call"}"#,
            "not json",
            r#"{"prompt": 3, "chosen": "a", "rejected": "b"}"#,
            r#"{"prompt": "p", "chosen": "a", "rejected": "a"}"#,
            r#"{"prompt": "p", "chosen": "a", "rejected": "b", "extra": 1}"#,
            "[1, 2]",
        ]
        .join("\n");
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(
            b"\n{\"prompt\": \"p\xff\", \"chosen\": \"a\", \"rejected\": \"b\"}",
        );
        let long = format!("{{\"prompt\": \"p\", \"{}\": 1}}", "k".repeat(100_000));
        bytes.extend_from_slice(format!("\n{long}").as_bytes());
        let (good, bad) = check_lines(
            Path::new("pairs.jsonl"),
            &bytes,
            &["prompt", "chosen", "rejected"],
            &|| false,
        )
        .unwrap_or_default();
        assert_eq!(good.len(), 1);
        let lines: Vec<&str> = bad
            .iter()
            .map(|b| b.split(": ").next().unwrap_or(""))
            .collect();
        assert_eq!(
            lines,
            [
                "pairs.jsonl:2",
                "pairs.jsonl:3",
                "pairs.jsonl:4",
                "pairs.jsonl:5",
                "pairs.jsonl:6",
                "pairs.jsonl:7",
                "pairs.jsonl:8",
                "pairs.jsonl:9"
            ]
        );
        assert!(bad[6].ends_with("invalid UTF-8 at column 14"), "{}", bad[6]);
        assert!(bad[7].len() < 400, "{} bytes", bad[7].len());
        assert!(bad[0].contains("missing \"rejected\""), "{}", bad[0]);
        assert!(bad[2].contains("must be a string"), "{}", bad[2]);
        assert!(bad[4].contains("unknown field \"extra\""), "{}", bad[4]);
    }

    #[test]
    fn an_empty_file_is_an_error() {
        let (_, bad) =
            check_lines(Path::new("e.jsonl"), b"\n\n", &["prompt"], &|| false).unwrap_or_default();
        assert_eq!(bad.len(), 1);
        assert!(check_lines(Path::new("e.jsonl"), b"{}\n", &["prompt"], &|| true).is_none());
    }
}
