//! The pipeline YAML: spec types (serde + schemars), loading with spans,
//! semantic checks, presets and diagnostics.
