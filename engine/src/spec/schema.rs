//! The published JSON schema of pipeline files: the top-level types with one
//! `oneOf` branch per registered kind for the stage bodies.

use serde_json::{Map, Value, json};

use super::types::PipelineFile;
use crate::graph::Registry;

const STAGES_DOC: &str = "The stages by name, in any order: each has a `kind` and that kind's \
parameters. References between stages (`data.sft`, `sft`) define the order they run in.";

/// The schema `poker-pipe schema` prints and schemas/pipeline.schema.json holds.
pub fn pipeline_schema(registry: &Registry) -> Value {
    let mut root = serde_json::to_value(schemars::schema_for!(PipelineFile)).unwrap_or_default();
    let mut branches = Vec::new();
    let mut defs = root
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for kind in registry.kinds() {
        let mut schema = kind.params_schema();
        let prefix = format!("{}.", kind.name());
        if let Some(Value::Object(kind_defs)) =
            schema.as_object_mut().and_then(|s| s.remove("$defs"))
        {
            for (name, def) in kind_defs {
                let mut def = def;
                prefix_refs(&mut def, &prefix);
                defs.insert(format!("{prefix}{name}"), def);
            }
        }
        prefix_refs(&mut schema, &prefix);
        let Value::Object(mut branch) = schema else {
            continue;
        };
        branch.remove("$schema");
        branch.remove("title");
        branch.insert("title".into(), json!(kind.name()));
        branch.insert("description".into(), json!(kind.description()));
        let properties = branch
            .entry("properties")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(properties) = properties {
            properties.insert(
                "kind".into(),
                json!({"const": kind.name(), "description": "The stage kind."}),
            );
        }
        let required = branch
            .entry("required")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(required) = required {
            required.insert(0, json!("kind"));
        }
        branches.push(Value::Object(branch));
    }
    if let Some(stages) = root.pointer_mut("/properties/stages") {
        *stages = json!({
            "description": STAGES_DOC,
            "type": "object",
            "additionalProperties": { "oneOf": branches }
        });
    }
    if !defs.is_empty() {
        root["$defs"] = Value::Object(defs);
    }
    root
}

/// Rewrite `#/$defs/X` to `#/$defs/<prefix>X` so kinds' definitions of the
/// same name do not collide.
fn prefix_refs(value: &mut Value, prefix: &str) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "$ref" {
                    if let Value::String(r) = v
                        && let Some(name) = r.strip_prefix("#/$defs/")
                    {
                        *r = format!("#/$defs/{prefix}{name}");
                    }
                } else {
                    prefix_refs(v, prefix);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| prefix_refs(v, prefix)),
        _ => {}
    }
}
