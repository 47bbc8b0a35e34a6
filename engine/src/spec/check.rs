//! From a YAML tree to a checked [`Pipeline`]: the top level against its
//! schema, each stage against its kind's schema, then the semantics that no
//! schema can express (references, cycles, presets, files, batch sizes).
//! Every problem is collected; nothing stops at the first.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::diag::{FileProblems, Problem, did_you_mean};
use super::presets::exec_settings;
use super::schema_check::SchemaChecker;
use super::types::{MemoryPreset, ModelDefaults, PipelineFile};
use super::yaml::{Entry, Node, NodeValue};
use super::{PresetChoice, SpecFile};
use crate::graph::{
    AnyParams, BatchDecl, ErasedKind, InputDecl, ModelOrigin, OutputDecl, Registry,
};
use crate::model::memory::{PlannedModel, StageMemory, Trains};
use petgraph::graph::DiGraph;
use rayon::prelude::*;

/// A checked pipeline, ready to plan.
#[derive(Clone)]
pub struct Pipeline {
    pub name: String,
    /// The file it came from, and the folder relative input paths start in.
    pub path: PathBuf,
    pub dir: PathBuf,
    pub model: Option<ModelDefaults>,
    pub presets: BTreeMap<String, MemoryPreset>,
    pub preset: PresetChoice,
    /// In file order; `graph::plan` orders them by dependency.
    pub stages: Vec<Stage>,
}

/// A checked stage with its references resolved.
#[derive(Clone)]
pub struct Stage {
    pub name: String,
    pub kind: Arc<dyn ErasedKind>,
    pub params: AnyParams,
    pub outputs: Vec<OutputDecl>,
    pub upstream: Vec<Upstream>,
    /// Input files: (params field, absolute path).
    pub files: Vec<(String, PathBuf)>,
    pub batch: Option<BatchDecl>,
    /// The pretrained model this stage's weights descend from, if any (see
    /// [`crate::graph::ModelOrigin`]).
    pub base_model: Option<PlannedModel>,
    /// The LoRA adapter of each upstream model this stage reads, by params
    /// field (see [`crate::graph::ErasedKind::output_adapter`]).
    pub input_adapters: BTreeMap<String, Trains>,
}

/// An upstream output this stage reads through params field `field`.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub field: String,
    pub stage: String,
    pub output: OutputDecl,
}

/// A stage that passed its own checks, before cross-stage checks.
struct Parsed<'a> {
    name: String,
    entry: &'a Entry,
    body: Node,
    kind: Arc<dyn ErasedKind>,
    params: AnyParams,
}

/// Check a loaded file against the registry.
pub fn check(file: &SpecFile, registry: &Registry) -> Result<Pipeline, FileProblems> {
    let mut problems = Vec::new();
    let root = &file.root;
    if root.entries().is_none() {
        let mut report = FileProblems::new(&file.path, Arc::clone(&file.source));
        report.push(
            Problem::new(
                "spec::not_a_mapping",
                format!("a pipeline file is a mapping, found {}", root.type_name()),
            )
            .at(root.span.clone(), "expected `name:`, `stages:` ...")
            .help("start from pipelines/tiny.yaml"),
        );
        return Err(report);
    }
    let top_schema = serde_json::to_value(schemars::schema_for!(PipelineFile)).unwrap_or_default();
    SchemaChecker::new(&top_schema).check_root(root, "", &mut problems);
    let top: Option<PipelineFile> = if problems.is_empty() {
        serde_json::from_value(top_level_json(root)).ok()
    } else {
        None
    };
    if let Some(name_entry) = root.get("name")
        && let Some(name) = name_entry.value.as_str()
        && !is_plain_name(name)
    {
        problems.push(
            Problem::new(
                "spec::bad_name",
                format!("pipeline name `{name}` cannot name a folder"),
            )
            .at(name_entry.value.span.clone(), "not a plain name")
            .help("use letters, digits, `-`, `_` and `.` only"),
        );
    }

    let model_node = root.get("model").map(|e| &e.value);
    let stage_entries = root
        .get("stages")
        .and_then(|e| e.value.entries())
        .unwrap_or_default();
    // Made at most once per kind, by whichever stage needs it first:
    // generating a schema costs more than checking a stage against it.
    let schemas: HashMap<&str, OnceLock<serde_json::Value>> = registry
        .names()
        .map(|name| (name, OnceLock::new()))
        .collect();
    // Stages are independent until their references are resolved.
    let parsed: Vec<Parsed> = each_on_every_core(stage_entries, &mut problems, |entry, found| {
        check_stage(entry, registry, model_node, &schemas, found)
    })
    .into_iter()
    .flatten()
    .collect();

    let base_dir = file
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let declared: Vec<&str> = stage_entries.iter().map(|e| e.key.as_str()).collect();
    let stages = resolve(&parsed, &declared, &base_dir, &mut problems);
    check_cycles(&parsed, &stages, &mut problems);
    // Presets are checked on their own so that a mistake elsewhere at the
    // top level does not hide preset and batch-size problems.
    if let Some(presets) = valid_presets(root, &top_schema) {
        let preset = root.get("preset").and_then(|e| e.value.as_str());
        check_preset(root, preset, &presets, &mut problems);
        check_batches(root, &presets, &parsed, &stages, &mut problems);
        if problems.is_empty() {
            check_memory(&presets, &parsed, &stages, &mut problems);
        }
    }

    match top {
        Some(top) if problems.is_empty() => Ok(Pipeline {
            name: top.name,
            path: file.path.clone(),
            dir: base_dir,
            model: top.model,
            presets: top.memory_presets,
            preset: PresetChoice::parse(top.preset.as_deref()),
            stages,
        }),
        _ => {
            let mut report = FileProblems::new(&file.path, Arc::clone(&file.source));
            for problem in problems {
                report.push(problem);
            }
            Err(report)
        }
    }
}

/// The top level as JSON with each stage's body left out: stages are
/// checked and parsed one by one, and converting 60,000 of them here too
/// would double the work of `validate`.
fn top_level_json(root: &Node) -> serde_json::Value {
    let entries = root.entries().unwrap_or_default();
    serde_json::Value::Object(
        entries
            .iter()
            .map(|e| {
                let value = if e.key == "stages" {
                    serde_json::Value::Object(serde_json::Map::new())
                } else {
                    e.value.to_json()
                };
                (e.key.clone(), value)
            })
            .collect(),
    )
}

/// Letters, digits, `-`, `_`, `.`; not `.`/`..`. Safe as a folder name.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `work` on each item, on every core, with the problems each finds kept
/// in the items' order, so that a report reads the same on any machine.
fn each_on_every_core<'a, T: Sync, R: Send>(
    items: &'a [T],
    problems: &mut Vec<Problem>,
    work: impl Fn(&'a T, &mut Vec<Problem>) -> R + Sync,
) -> Vec<R> {
    let done: Vec<(R, Vec<Problem>)> = items
        .par_iter()
        .map(|item| {
            let mut found = Vec::new();
            (work(item, &mut found), found)
        })
        .collect();
    let mut results = Vec::with_capacity(done.len());
    for (result, found) in done {
        results.push(result);
        problems.extend(found);
    }
    results
}

/// One stage on its own: its name, kind, params schema, serde, kind checks.
fn check_stage<'a>(
    entry: &'a Entry,
    registry: &Registry,
    model: Option<&Node>,
    schemas: &HashMap<&str, OnceLock<serde_json::Value>>,
    problems: &mut Vec<Problem>,
) -> Option<Parsed<'a>> {
    let name = &entry.key;
    if !is_plain_name(name) || name.contains('.') {
        problems.push(
            Problem::new(
                "spec::bad_name",
                format!("stage name `{name}` is not a plain name"),
            )
            .at(entry.key_span.clone(), "bad stage name")
            .help(
                "use letters, digits, `-` and `_` (a `.` separates stage and output in references)",
            ),
        );
    }
    let entries = entry.value.entries()?;
    let kind_entry = entries.iter().find(|e| e.key == "kind")?;
    let kind_name = kind_entry.value.as_str()?;
    let Some(kind) = registry.get(kind_name) else {
        let help = did_you_mean(kind_name, registry.names()).unwrap_or_else(|| {
            format!(
                "known kinds: {}",
                registry.names().collect::<Vec<_>>().join(", ")
            )
        });
        problems.push(
            Problem::new(
                "spec::unknown_kind",
                format!("stage `{name}` has unknown kind `{kind_name}`"),
            )
            .at(kind_entry.value.span.clone(), "unknown kind")
            .help(help),
        );
        return None;
    };
    let mut body_entries: Vec<Entry> = entries
        .iter()
        .filter(|e| e.key != "kind")
        .cloned()
        .collect();
    // The pipeline's `model` (and its `dtype`) stand in for fields the
    // stage leaves out, located where the pipeline wrote them.
    let model_dtype = model
        .and_then(|m| m.entries())
        .and_then(|entries| entries.iter().find(|e| e.key == "dtype"));
    let defaults = [
        (kind.model_field(), model.map(|m| (&m.span, m))),
        (
            kind.dtype_field(),
            model_dtype.map(|d| (&d.key_span, &d.value)),
        ),
    ];
    for (field, default) in defaults {
        if let (Some(field), Some((span, value))) = (field, default)
            && !body_entries.iter().any(|e| e.key == field)
        {
            body_entries.push(Entry {
                key: field.to_string(),
                key_span: span.clone(),
                value: value.clone(),
            });
        }
    }
    let body = Node {
        span: entry.value.span.clone(),
        value: NodeValue::Map(body_entries),
    };
    // The table has every registered kind, and `kind_name` is one.
    let schema = schemas.get(kind_name)?.get_or_init(|| kind.params_schema());
    let before = problems.len();
    let prefix = format!("stages.{name}");
    SchemaChecker::new(schema).check_root(&body, &prefix, problems);
    if problems.len() > before {
        // Already invalid; still parse what is left without the bad fields,
        // so that its references get checked too (all errors at once).
        let bad: Vec<&str> = problems[before..]
            .iter()
            .filter_map(|p| p.field.as_deref()?.strip_prefix(&prefix)?.strip_prefix('.'))
            .map(|rest| rest.split('.').next().unwrap_or(rest))
            .collect();
        let rest = match &body.value {
            NodeValue::Map(entries) => entries
                .iter()
                .filter(|e| !bad.contains(&e.key.as_str()))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        let lenient = Node {
            span: body.span.clone(),
            value: NodeValue::Map(rest),
        };
        return kind.parse(&lenient).ok().map(|params| Parsed {
            name: name.clone(),
            entry,
            body,
            kind: Arc::clone(kind),
            params,
        });
    }
    let params = match kind.parse(&body) {
        Ok(params) => params,
        Err(err) => {
            problems.push(
                Problem::new("spec::invalid_stage", format!("stage `{name}`: {err}"))
                    .at(entry.key_span.clone(), "in this stage"),
            );
            return None;
        }
    };
    for (field, message) in kind.check(&params) {
        problems.push(
            Problem::new("spec::invalid_value", format!("stage `{name}`: {message}"))
                .at(body.span_of(&field), format!("`{field}`")),
        );
    }
    Some(Parsed {
        name: name.clone(),
        entry,
        body,
        kind: Arc::clone(kind),
        params,
    })
}

/// Resolve references and files; wrong kinds of input and missing files are
/// reported here.
/// `declared` holds every stage name in the file, including stages whose own
/// errors kept them out of `parsed`: references to those are not reported
/// again.
fn resolve(
    parsed: &[Parsed<'_>],
    declared: &[&str],
    base_dir: &Path,
    problems: &mut Vec<Problem>,
) -> Vec<Stage> {
    let mut own_outputs: Vec<Vec<OutputDecl>> = parsed
        .par_iter()
        .map(|p| p.kind.outputs(&p.params))
        .collect();
    let outputs: HashMap<&str, &[OutputDecl]> = parsed
        .iter()
        .zip(&own_outputs)
        .map(|(p, o)| (p.name.as_str(), o.as_slice()))
        .collect();
    // Each stage's references are resolved on its own.
    let mut stages = each_on_every_core(parsed, problems, |p, found| {
        resolve_stage(p, parsed, &outputs, declared, base_dir, found)
    });
    drop(outputs);
    for (stage, own) in stages.iter_mut().zip(own_outputs.iter_mut()) {
        stage.outputs = std::mem::take(own);
    }
    let (bases, adapters) = lineage(&stages);
    for ((stage, base), adapters) in stages.iter_mut().zip(bases).zip(adapters) {
        stage.base_model = base;
        stage.input_adapters = adapters;
    }
    check_vocabularies(parsed, &stages, problems);
    stages
}

/// One stage's references to other stages' outputs and to files.
fn resolve_stage(
    p: &Parsed<'_>,
    parsed: &[Parsed<'_>],
    outputs: &HashMap<&str, &[OutputDecl]>,
    declared: &[&str],
    base_dir: &Path,
    problems: &mut Vec<Problem>,
) -> Stage {
    let mut upstream = Vec::new();
    let mut files = Vec::new();
    for input in p.kind.inputs(&p.params) {
        let span = p.body.span_of(input.field());
        match input {
            InputDecl::Stage {
                field,
                reference,
                accepts,
            } => {
                let (stage, output) = match reference.split_once('.') {
                    Some((s, o)) => (s, Some(o)),
                    None => (reference.as_str(), None),
                };
                let Some(candidates) = outputs.get(stage) else {
                    if declared.contains(&stage) {
                        continue;
                    }
                    let help = did_you_mean(stage, declared.iter().copied())
                        .unwrap_or_else(|| format!("stages in this file: {}", declared.join(", ")));
                    problems.push(
                        Problem::new(
                            "spec::unknown_stage",
                            format!("stage `{}` refers to unknown stage `{stage}`", p.name),
                        )
                        .at(span, "no stage by this name")
                        .help(help),
                    );
                    continue;
                };
                let found = match output {
                    Some(o) => candidates.iter().find(|c| c.name == o),
                    None if candidates.len() == 1 => candidates.first(),
                    None => None,
                };
                let Some(found) = found else {
                    let listed: Vec<String> = candidates
                        .iter()
                        .map(|c| format!("`{stage}.{}`", c.name))
                        .collect();
                    let message = match output {
                        Some(o) => format!("stage `{stage}` has no output `{o}`"),
                        None => format!("stage `{stage}` has several outputs; name one"),
                    };
                    let help = output
                        .and_then(|o| did_you_mean(o, candidates.iter().map(|c| c.name)))
                        .unwrap_or_else(|| format!("outputs: {}", listed.join(", ")));
                    problems.push(
                        Problem::new("spec::unknown_output", message)
                            .at(span, "unknown output")
                            .help(help),
                    );
                    continue;
                };
                if !accepts.contains(&found.artifact) {
                    let wanted: Vec<String> = accepts.iter().map(|a| a.to_string()).collect();
                    let fitting: Vec<String> = parsed
                        .iter()
                        .flat_map(|q| {
                            outputs[q.name.as_str()]
                                .iter()
                                .filter(|o| accepts.contains(&o.artifact))
                                .map(move |o| format!("`{}.{}`", q.name, o.name))
                        })
                        .collect();
                    let help = if fitting.is_empty() {
                        format!("add a stage that produces {}", wanted.join(" or "))
                    } else {
                        format!("outputs of that type here: {}", fitting.join(", "))
                    };
                    problems.push(
                        Problem::new(
                            "spec::wrong_input_kind",
                            format!(
                                "`{}.{field}` needs {}, but `{reference}` is {} (from a `{}` stage)",
                                p.name,
                                wanted.join(" or "),
                                found.artifact,
                                parsed
                                    .iter()
                                    .find(|q| q.name == stage)
                                    .map_or("?", |q| q.kind.name()),
                            ),
                        )
                        .at(span, format!("this is {}", found.artifact))
                        .help(help),
                    );
                    continue;
                }
                upstream.push(Upstream {
                    field,
                    stage: stage.to_string(),
                    output: *found,
                });
            }
            InputDecl::File { field, path } => {
                let full = base_dir.join(&path);
                if !full.is_file() {
                    let (code, what, label, help) = if full.exists() {
                        (
                            "spec::not_a_file",
                            "is not a regular file",
                            "not a regular file",
                            "give a file of data, not a folder or a device",
                        )
                    } else {
                        (
                            "spec::missing_file",
                            "does not exist",
                            "file not found",
                            "paths are relative to the pipeline file's folder",
                        )
                    };
                    problems.push(
                        Problem::new(
                            code,
                            format!(
                                "input file `{}` of stage `{}` {what}",
                                full.display(),
                                p.name
                            ),
                        )
                        .at(span, label)
                        .help(help),
                    );
                    continue;
                }
                // Canonical so logs and reasons show a clean path.
                let full = std::fs::canonicalize(&full)
                    .or_else(|_| std::path::absolute(&full))
                    .unwrap_or(full);
                files.push((field, full));
            }
        }
    }
    Stage {
        name: p.name.clone(),
        kind: Arc::clone(&p.kind),
        params: Arc::clone(&p.params),
        // Moved in by `resolve`, once no reference needs the table.
        outputs: Vec::new(),
        upstream,
        files,
        batch: p.kind.global_batch(&p.params),
        base_model: None,
        input_adapters: BTreeMap::new(),
    }
}

/// A stage that fine-tunes a local pretrained model with a tokenizer stage's
/// vocabulary: the tokenizer may make ids up to its vocabulary size, which
/// must fit the model's embedding (else training indexes past it).
fn check_vocabularies(parsed: &[Parsed<'_>], stages: &[Stage], problems: &mut Vec<Problem>) {
    let index: HashMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    for (p, stage) in parsed.iter().zip(stages) {
        let ModelOrigin::Pretrained(source) = stage.kind.model_origin(&stage.params) else {
            continue;
        };
        let Some(model_vocab) = local_vocabulary(&source) else {
            continue;
        };
        for u in &stage.upstream {
            let Some(&from) = index.get(u.stage.as_str()) else {
                continue;
            };
            let up = &stages[from];
            let Some(vocab) = up.kind.vocabulary(&up.params) else {
                continue;
            };
            if vocab > model_vocab {
                problems.push(
                    Problem::new(
                        "spec::vocabulary_too_large",
                        format!(
                            "stage `{}` reads tokenizer `{}` of up to {vocab} tokens, but its base model `{source}` has a vocabulary of {model_vocab}",
                            p.name, u.stage
                        ),
                    )
                    .at(p.body.span_of(&u.field), "this tokenizer")
                    .help("use the base model's own tokenizer (leave out `tokenizer`), or a smaller vocab_size"),
                );
            }
        }
    }
}

/// `vocab_size` of a local model folder's config.json, when there is one.
fn local_vocabulary(source: &str) -> Option<usize> {
    let crate::model::source::ModelSource::Local(dir) = crate::model::source::parse(source).ok()?
    else {
        return None;
    };
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    usize::try_from(config.get("vocab_size")?.as_u64()?).ok()
}

/// Each stage's root model and the adapters of the models it reads, worked
/// out once per stage in dependency order (linear in the stages and edges;
/// a stage on a cycle, reported elsewhere, gets neither).
///
/// The root model is the stage's own, or the one of the upstream stage its
/// origin names, and so on; a random model takes its vocabulary bound from
/// its tokenizer stage. The adapters are each upstream stage's
/// `output_adapter`, given that stage's own inputs.
#[allow(clippy::type_complexity)]
fn lineage(stages: &[Stage]) -> (Vec<Option<PlannedModel>>, Vec<BTreeMap<String, Trains>>) {
    let index: HashMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let upstream_of = |stage: &Stage, field: &str| {
        let name = &stage.upstream.iter().find(|u| u.field == field)?.stage;
        index.get(name.as_str()).copied()
    };
    let mut bases: Vec<Option<PlannedModel>> = vec![None; stages.len()];
    let mut adapters: Vec<BTreeMap<String, Trains>> = vec![BTreeMap::new(); stages.len()];
    for at in dependency_order(stages, &index) {
        let stage = &stages[at];
        bases[at] = match stage.kind.model_origin(&stage.params) {
            ModelOrigin::Unknown => None,
            ModelOrigin::Pretrained(source) => Some(PlannedModel::Source(source)),
            ModelOrigin::Random {
                mut config,
                vocabulary,
            } => upstream_of(stage, vocabulary).and_then(|t| {
                let tokenizer = &stages[t];
                config["vocab_size"] = tokenizer.kind.vocabulary(&tokenizer.params)?.into();
                Some(PlannedModel::Config(config))
            }),
            ModelOrigin::Input(field) => upstream_of(stage, field).and_then(|u| bases[u].clone()),
        };
        adapters[at] = stage
            .upstream
            .iter()
            .filter_map(|u| {
                let from = *index.get(u.stage.as_str())?;
                let up = &stages[from];
                let adapter = up.kind.output_adapter(&up.params, &adapters[from])?;
                Some((u.field.clone(), adapter))
            })
            .collect();
    }
    (bases, adapters)
}

/// Stage indices with every stage after its upstream stages (Kahn's
/// algorithm); stages on a cycle are left out.
fn dependency_order(stages: &[Stage], index: &HashMap<&str, usize>) -> Vec<usize> {
    let mut waiting: Vec<usize> = vec![0; stages.len()];
    let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); stages.len()];
    for (i, stage) in stages.iter().enumerate() {
        for u in &stage.upstream {
            if let Some(&from) = index.get(u.stage.as_str()) {
                waiting[i] += 1;
                downstream[from].push(i);
            }
        }
    }
    let mut order: Vec<usize> = (0..stages.len()).filter(|&i| waiting[i] == 0).collect();
    let mut next = 0;
    while next < order.len() {
        let at = order[next];
        next += 1;
        for &d in &downstream[at] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                order.push(d);
            }
        }
    }
    order
}

/// Report each dependency cycle once, naming every stage on it.
fn check_cycles(parsed: &[Parsed<'_>], stages: &[Stage], problems: &mut Vec<Problem>) {
    let mut graph = DiGraph::<usize, String>::new();
    let nodes: Vec<_> = (0..stages.len()).map(|i| graph.add_node(i)).collect();
    let index: HashMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    for (i, stage) in stages.iter().enumerate() {
        for up in &stage.upstream {
            if let Some(&j) = index.get(up.stage.as_str()) {
                graph.add_edge(nodes[i], nodes[j], up.field.clone());
            }
        }
    }
    for scc in petgraph::algo::tarjan_scc(&graph) {
        let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        let members: Vec<usize> = {
            let mut m: Vec<usize> = scc.iter().map(|n| graph[*n]).collect();
            m.sort_unstable();
            m
        };
        // Walk the cycle from the first stage in file order.
        let mut order = vec![members[0]];
        let mut labels = Vec::new();
        loop {
            let current = order[order.len() - 1];
            let Some(edge) = graph
                .edges(nodes[current])
                .find(|e| members.contains(&graph[petgraph::visit::EdgeRef::target(e)]))
            else {
                break;
            };
            let next = graph[petgraph::visit::EdgeRef::target(&edge)];
            labels.push((current, edge.weight().clone()));
            if order.contains(&next) {
                order.push(next);
                break;
            }
            order.push(next);
        }
        let path: Vec<&str> = order.iter().map(|&i| stages[i].name.as_str()).collect();
        let first = &parsed[order[0]];
        let mut problem = Problem::new(
            "spec::cycle",
            format!("dependency cycle: {}", path.join(" -> ")),
        )
        .help("a stage cannot depend on its own outputs; break one of these references");
        for (n, (stage, field)) in labels.iter().enumerate() {
            let span = parsed[*stage].body.span_of(field);
            let label = format!("`{}` reads `{}`", parsed[*stage].name, path[n + 1]);
            problem = if n == 0 {
                problem.at(span, label)
            } else {
                problem.also(span, label)
            };
        }
        if problem.span.is_none() {
            problem = problem.at(first.entry.key_span.clone(), "in this stage");
        }
        problems.push(problem);
    }
}

/// The memory presets, if that part of the file is valid on its own.
fn valid_presets(
    root: &Node,
    top_schema: &serde_json::Value,
) -> Option<BTreeMap<String, MemoryPreset>> {
    let Some(entry) = root.get("memory_presets") else {
        return Some(BTreeMap::new());
    };
    let schema = top_schema.pointer("/properties/memory_presets")?;
    let mut problems = Vec::new();
    SchemaChecker::new(top_schema).check(schema, &entry.value, "memory_presets", &mut problems);
    if !problems.is_empty() {
        return None;
    }
    serde_json::from_value(entry.value.to_json()).ok()
}

fn check_preset(
    root: &Node,
    preset: Option<&str>,
    presets: &BTreeMap<String, MemoryPreset>,
    problems: &mut Vec<Problem>,
) {
    let Some(preset) = preset else {
        return;
    };
    if preset == "auto" || presets.contains_key(preset) {
        return;
    }
    let names = presets.keys().map(String::as_str);
    let help = did_you_mean(preset, names.clone()).unwrap_or_else(|| {
        let known: Vec<&str> = names.collect();
        if known.is_empty() {
            "define it under `memory_presets`, or use `auto`".to_string()
        } else {
            format!("known presets: {}, or `auto`", known.join(", "))
        }
    });
    problems.push(
        Problem::new("spec::unknown_preset", format!("unknown preset `{preset}`"))
            .at(root.span_of("preset"), "not in memory_presets")
            .help(help),
    );
}

/// A stage the planner puts beyond any device under every preset (and with
/// none) cannot run anywhere: a shape typed wrong. `run` would abort
/// allocating it, so it is rejected here.
fn check_memory(
    presets: &BTreeMap<String, MemoryPreset>,
    parsed: &[Parsed<'_>],
    stages: &[Stage],
    problems: &mut Vec<Problem>,
) {
    for (p, stage) in parsed.iter().zip(stages) {
        let choices = presets.iter().map(|(n, p)| Some((n.clone(), p.clone())));
        let notes: Option<Vec<String>> = std::iter::once(None)
            .chain(choices)
            .map(|preset| {
                let exec = exec_settings(stage, preset.as_ref());
                match stage.kind.memory(&stage.params, &exec) {
                    StageMemory::BeyondAnyDevice(note) => Some(note),
                    _ => None,
                }
            })
            .collect();
        if let Some(note) = notes.and_then(|n| n.into_iter().next()) {
            problems.push(
                Problem::new(
                    "spec::beyond_any_device",
                    format!("stage `{}` {note}", p.name),
                )
                .at(p.entry.key_span.clone(), "this stage")
                .help(
                    "check the model's shape (`hidden_size`, `intermediate_size`, layers, \
                     vocabulary) and the stage's `max_seq_len` and `batch_size`; \
                     `poker-pipe plan` shows a stage's estimate part by part",
                ),
            );
        }
    }
}

/// Each global batch size must be a multiple of every preset's micro-batch,
/// or switching presets would change the optimisation.
fn check_batches(
    root: &Node,
    presets: &BTreeMap<String, MemoryPreset>,
    parsed: &[Parsed<'_>],
    stages: &[Stage],
    problems: &mut Vec<Problem>,
) {
    for (p, stage) in parsed.iter().zip(stages) {
        let Some(batch) = &stage.batch else { continue };
        for (preset_name, preset) in presets {
            if preset.micro_batch == 0 || batch.size % preset.micro_batch == 0 {
                continue;
            }
            problems.push(
                Problem::new(
                    "spec::batch_not_divisible",
                    format!(
                        "stage `{}`: global batch size {} is not a multiple of preset `{preset_name}`'s micro_batch {}",
                        p.name, batch.size, preset.micro_batch
                    ),
                )
                .at(p.body.span_of(&batch.field), "global batch size")
                .also(
                    root.span_of(&format!("memory_presets.{preset_name}.micro_batch")),
                    "micro-batch of this preset",
                )
                .help(format!(
                    "use a batch size that is a multiple of {}",
                    preset.micro_batch
                )),
            );
        }
    }
}
