//! Checks a YAML node against the JSON schema that schemars generated from a
//! spec type, reporting *every* violation with a span.
//!
//! serde stops at the first error and knows nothing of value ranges, so the
//! schema (the same one editors use) is the single source of truth for
//! types, ranges, required fields and unknown fields. serde runs afterwards
//! and, on a node that passed here, only builds the typed value.
//! Supported keywords: the subset schemars emits (`$ref`, `type`, `enum`,
//! `const`, `properties`, `required`, `additionalProperties`, `items`,
//! `minItems`/`maxItems`, `minLength`/`maxLength`, `minimum`/`maximum`,
//! `exclusiveMinimum`/`exclusiveMaximum`, `format` of fixed-size integers,
//! `allOf`, `anyOf`, `oneOf`).

use serde_json::Value;

use super::diag::{Problem, did_you_mean};
use super::yaml::{Node, NodeValue};

/// Validates nodes against one schema document (which holds the `$defs`).
pub struct SchemaChecker<'a> {
    root: &'a Value,
}

impl<'a> SchemaChecker<'a> {
    pub fn new(root: &'a Value) -> Self {
        SchemaChecker { root }
    }

    /// Check `node` against the root schema. `path` names the node in
    /// messages (e.g. `stages.sft`).
    pub fn check_root(&self, node: &Node, path: &str, out: &mut Vec<Problem>) {
        self.check(self.root, node, path, out);
    }

    fn resolve(&self, reference: &str) -> Option<&'a Value> {
        let pointer = reference.strip_prefix('#')?;
        self.root.pointer(pointer)
    }

    /// Check `node` against `schema`, a part of the root document. Each
    /// problem records the path of the field it is about.
    pub fn check(&self, schema: &'a Value, node: &Node, path: &str, out: &mut Vec<Problem>) {
        let before = out.len();
        self.check_node(schema, node, path, out);
        for problem in &mut out[before..] {
            if problem.field.is_none() {
                problem.field = Some(path.to_string());
            }
        }
    }

    fn check_node(&self, schema: &'a Value, node: &Node, path: &str, out: &mut Vec<Problem>) {
        let schema = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => {
                out.push(
                    Problem::new("spec::not_allowed", format!("`{path}` is not allowed here"))
                        .at(node.span.clone(), "not allowed"),
                );
                return;
            }
            Value::Object(map) => map,
            _ => return,
        };
        if let Some(target) = keyword(schema, "$ref")
            .and_then(Value::as_str)
            .and_then(|r| self.resolve(r))
        {
            self.check(target, node, path, out);
        }
        if let Some(all) = keyword(schema, "allOf").and_then(Value::as_array) {
            for branch in all {
                self.check(branch, node, path, out);
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(branches) = keyword(schema, key).and_then(Value::as_array)
                && !self.check_alternatives(branches, node, path, out)
            {
                return;
            }
        }
        if let Some(types) = keyword(schema, "type")
            && !type_matches(types, node)
        {
            out.push(
                Problem::new(
                    "spec::wrong_type",
                    format!(
                        "`{path}` must be {}, found {}",
                        describe_types(types),
                        node.type_name()
                    ),
                )
                .at(
                    node.span.clone(),
                    format!("expected {}", describe_types(types)),
                ),
            );
            return;
        }
        if let Some(choices) = keyword(schema, "enum").and_then(Value::as_array) {
            self.check_choice(choices, node, path, out);
        }
        if let Some(constant) = keyword(schema, "const") {
            self.check_choice(std::slice::from_ref(constant), node, path, out);
        }
        match &node.value {
            NodeValue::Int(_) | NodeValue::Float(_) => check_number(schema, node, path, out),
            NodeValue::Str(s) => {
                check_length(schema, s.chars().count(), node, path, "characters", out)
            }
            NodeValue::Seq(items) => {
                check_length(schema, items.len(), node, path, "items", out);
                if let Some(item_schema) = keyword(schema, "items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item_schema, item, &format!("{path}.{i}"), out);
                    }
                }
            }
            NodeValue::Map(_) => self.check_object(schema, node, path, out),
            NodeValue::Null | NodeValue::Bool(_) => {}
        }
    }

    /// `anyOf`/`oneOf`: fine if one branch accepts the node. Otherwise report
    /// the errors of the branch that fits best. Returns whether to go on
    /// checking the other keywords.
    fn check_alternatives(
        &self,
        branches: &'a [Value],
        node: &Node,
        path: &str,
        out: &mut Vec<Problem>,
    ) -> bool {
        let mut attempts = Vec::new();
        for branch in branches {
            let mut problems = Vec::new();
            self.check(branch, node, path, &mut problems);
            if problems.is_empty() {
                return true;
            }
            attempts.push(problems);
        }
        let constants: Vec<Value> = branches
            .iter()
            .filter_map(|b| self.constant_of(b))
            .collect();
        if constants.len() == branches.len() {
            self.check_choice(&constants, node, path, out);
            return false;
        }
        let best = attempts
            .into_iter()
            .filter(|p| p.iter().all(|p| p.code != "spec::wrong_type"))
            .min_by_key(Vec::len);
        match best {
            Some(problems) => out.extend(problems),
            None => {
                let expected: Vec<String> =
                    branches.iter().filter_map(|b| self.type_of(b)).collect();
                out.push(
                    Problem::new(
                        "spec::wrong_type",
                        format!(
                            "`{path}` must be {}, found {}",
                            expected.join(" or "),
                            node.type_name()
                        ),
                    )
                    .at(node.span.clone(), "wrong type"),
                );
            }
        }
        false
    }

    /// The single value a branch allows (`const`, or a one-element `enum`).
    fn constant_of(&self, branch: &'a Value) -> Option<Value> {
        let branch = self.deref(branch);
        if let Some(c) = branch.get("const") {
            return Some(c.clone());
        }
        match branch.get("enum").and_then(Value::as_array) {
            Some(values) if values.len() == 1 => Some(values[0].clone()),
            _ => None,
        }
    }

    fn type_of(&self, branch: &'a Value) -> Option<String> {
        self.deref(branch).get("type").map(describe_types)
    }

    fn deref(&self, schema: &'a Value) -> &'a Value {
        schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| self.resolve(r))
            .unwrap_or(schema)
    }

    fn check_choice(&self, choices: &[Value], node: &Node, path: &str, out: &mut Vec<Problem>) {
        let json = node.to_json();
        if choices.contains(&json) {
            return;
        }
        let names: Vec<String> = choices.iter().map(|c| c.to_string()).collect();
        let mut problem = Problem::new(
            "spec::invalid_value",
            format!("`{path}` must be one of {}, found {json}", names.join(", ")),
        )
        .at(node.span.clone(), "not an allowed value");
        let strings = choices.iter().filter_map(Value::as_str);
        if let Some(hint) = node.as_str().and_then(|s| did_you_mean(s, strings)) {
            problem = problem.help(hint);
        }
        out.push(problem);
    }

    fn check_object(
        &self,
        schema: &'a serde_json::Map<String, Value>,
        node: &Node,
        path: &str,
        out: &mut Vec<Problem>,
    ) {
        let entries = node.entries().unwrap_or_default();
        let properties = keyword(schema, "properties").and_then(Value::as_object);
        let join = |key: &str| {
            if path.is_empty() {
                key.to_string()
            } else {
                format!("{path}.{key}")
            }
        };
        for required in keyword(schema, "required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !entries.iter().any(|e| e.key == required) {
                out.push(
                    Problem::new(
                        "spec::missing_field",
                        format!("`{}` is required", join(required)),
                    )
                    .at(node.span.clone(), format!("add `{required}` here")),
                );
            }
        }
        for entry in entries {
            if let Some(prop) = properties.and_then(|p| p.get(&entry.key)) {
                self.check(prop, &entry.value, &join(&entry.key), out);
                continue;
            }
            match keyword(schema, "additionalProperties") {
                Some(Value::Bool(false)) => {
                    let known: Vec<&str> = properties
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    let help = did_you_mean(&entry.key, known.iter().copied())
                        .unwrap_or_else(|| format!("known fields here: {}", known.join(", ")));
                    out.push(
                        Problem::new(
                            "spec::unknown_field",
                            format!("unknown field `{}`", join(&entry.key)),
                        )
                        .at(entry.key_span.clone(), "unknown field")
                        .field(join(&entry.key))
                        .help(help),
                    );
                }
                Some(extra @ Value::Object(_)) => {
                    self.check(extra, &entry.value, &join(&entry.key), out);
                }
                _ => {}
            }
        }
    }
}

/// A keyword of a schema object. schemars writes a handful per object, so a
/// scan is faster than hashing the key, and `validate` of a pipeline with
/// many stages looks up a few dozen keywords per stage.
fn keyword<'v>(schema: &'v serde_json::Map<String, Value>, key: &str) -> Option<&'v Value> {
    schema.iter().find_map(|(k, v)| (k == key).then_some(v))
}

fn type_matches(types: &Value, node: &Node) -> bool {
    let one = |t: &str| {
        matches!(
            (&node.value, t),
            (NodeValue::Null, "null")
                | (NodeValue::Bool(_), "boolean")
                | (NodeValue::Int(_), "integer" | "number")
                | (NodeValue::Float(_), "number")
                | (NodeValue::Str(_), "string")
                | (NodeValue::Seq(_), "array")
                | (NodeValue::Map(_), "object")
        )
    };
    match types {
        Value::String(t) => one(t),
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(one),
        _ => true,
    }
}

fn describe_types(types: &Value) -> String {
    let one = |t: &str| match t {
        "null" => "null",
        "boolean" => "a boolean",
        "integer" => "an integer",
        "number" => "a number",
        "string" => "a string",
        "array" => "a list",
        "object" => "a mapping",
        _ => "a value",
    };
    match types {
        Value::String(t) => one(t).to_string(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .map(one)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "a value".to_string(),
    }
}

/// Range keywords, plus the bounds implied by fixed-size integer formats.
fn check_number(
    schema: &serde_json::Map<String, Value>,
    node: &Node,
    path: &str,
    out: &mut Vec<Problem>,
) {
    let value = match node.value {
        NodeValue::Int(i) => i as f64,
        NodeValue::Float(f) => f,
        _ => return,
    };
    let format_max = match keyword(schema, "format").and_then(Value::as_str) {
        Some("uint8") => Some(f64::from(u8::MAX)),
        Some("uint16") => Some(f64::from(u16::MAX)),
        Some("uint32") => Some(f64::from(u32::MAX)),
        Some("int32") => Some(f64::from(i32::MAX)),
        _ => None,
    };
    let bound = |key: &str| keyword(schema, key).and_then(Value::as_f64);
    let checks: [(Option<f64>, bool, &str); 5] = [
        (
            bound("minimum"),
            value >= bound("minimum").unwrap_or(f64::MIN),
            ">=",
        ),
        (
            bound("maximum"),
            value <= bound("maximum").unwrap_or(f64::MAX),
            "<=",
        ),
        (
            bound("exclusiveMinimum"),
            value > bound("exclusiveMinimum").unwrap_or(f64::MIN),
            ">",
        ),
        (
            bound("exclusiveMaximum"),
            value < bound("exclusiveMaximum").unwrap_or(f64::MAX),
            "<",
        ),
        (format_max, value <= format_max.unwrap_or(f64::MAX), "<="),
    ];
    for (limit, ok, op) in checks {
        if let (Some(limit), false) = (limit, ok) {
            out.push(
                Problem::new(
                    "spec::out_of_range",
                    format!("`{path}` must be {op} {limit}, found {value}"),
                )
                .at(node.span.clone(), format!("must be {op} {limit}")),
            );
            return;
        }
    }
}

fn check_length(
    schema: &serde_json::Map<String, Value>,
    len: usize,
    node: &Node,
    path: &str,
    unit: &str,
    out: &mut Vec<Problem>,
) {
    let (min_key, max_key) = if unit == "items" {
        ("minItems", "maxItems")
    } else {
        ("minLength", "maxLength")
    };
    let min = keyword(schema, min_key).and_then(Value::as_u64);
    let max = keyword(schema, max_key).and_then(Value::as_u64);
    let len = len as u64;
    let problem = match (min, max) {
        (Some(min), _) if len < min => Some(format!("at least {min} {unit}")),
        (_, Some(max)) if len > max => Some(format!("at most {max} {unit}")),
        _ => None,
    };
    if let Some(expected) = problem {
        out.push(
            Problem::new(
                "spec::out_of_range",
                format!("`{path}` must have {expected}, found {len}"),
            )
            .at(node.span.clone(), format!("needs {expected}")),
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::spec::yaml;
    use schemars::JsonSchema;

    /// A test type using every kind of check.
    #[derive(JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        #[schemars(range(min = 1))]
        epochs: u32,
        #[schemars(extend("exclusiveMinimum" = 0))]
        lr: f64,
        #[schemars(range(min = 0.0, max = 1.0))]
        dropout: Option<f64>,
        schedule: Schedule,
        #[schemars(length(min = 1))]
        targets: Vec<String>,
    }

    #[derive(JsonSchema)]
    #[serde(rename_all = "kebab-case")]
    #[allow(dead_code)]
    enum Schedule {
        /// Flat.
        Constant,
        /// Cosine decay.
        Cosine,
    }

    fn problems(doc: &str) -> Vec<Problem> {
        let schema = serde_json::to_value(schemars::schema_for!(Sample)).unwrap();
        let node = yaml::parse(doc).unwrap();
        let mut out = Vec::new();
        SchemaChecker::new(&schema).check_root(&node, "", &mut out);
        out
    }

    #[test]
    fn a_valid_node_has_no_problems() {
        let out = problems("epochs: 3\nlr: 5.0e-4\ndropout: 0.1\nschedule: cosine\ntargets: [q]\n");
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn reports_every_violation_with_its_span() {
        let doc = "epochs: 0\nlr: -1\ndropout: 1.5\nschedule: cosin\ntargets: []\nepohcs: 2\n";
        let out = problems(doc);
        let codes: Vec<&str> = out.iter().map(|p| p.code).collect();
        assert_eq!(
            codes,
            [
                "spec::out_of_range",
                "spec::out_of_range",
                "spec::out_of_range",
                "spec::invalid_value",
                "spec::out_of_range",
                "spec::unknown_field"
            ],
            "{out:?}"
        );
        let schedule = &out[3];
        assert_eq!(&doc[schedule.span.clone().unwrap()], "cosin");
        assert_eq!(schedule.help.as_deref(), Some("did you mean `cosine`?"));
        let unknown = &out[5];
        assert_eq!(&doc[unknown.span.clone().unwrap()], "epohcs");
    }

    #[test]
    fn reports_wrong_types_and_missing_fields() {
        let out = problems("epochs: three\nlr: 0.1\nschedule: cosine\n");
        let codes: Vec<&str> = out.iter().map(|p| p.code).collect();
        assert_eq!(
            codes,
            ["spec::missing_field", "spec::wrong_type"],
            "{out:?}"
        );
        assert!(out[1].message.contains("an integer"), "{}", out[1].message);
    }
}
