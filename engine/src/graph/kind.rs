//! The Stage trait every stage kind implements, its type-erased form, and the
//! registry of kinds the CLI hands to the checker and the executor.
//!
//! Adding a kind is one `impl StageKind for X` plus one `Registry::with(X)`
//! (complete examples: `stages/jsonl_data.rs`, and the test kinds in
//! `tests/src/kinds.rs`). In outline:
//!
//! ```text
//! struct Shout;
//! impl StageKind for Shout {
//!     type Params = ShoutParams;           // Deserialize + Serialize + JsonSchema,
//!                                          // #[serde(deny_unknown_fields)]
//!     const NAME: &'static str = "shout";
//!     const VERSION: u32 = 1;              // bump when outputs change meaning
//!     const DESCRIPTION: &'static str = "Upper-cases a text file.";
//!     fn outputs(&self, _: &ShoutParams) -> Vec<OutputDecl> {
//!         vec![OutputDecl::new("text", TEXT, "out.txt")]
//!     }
//!     fn inputs(&self, p: &ShoutParams) -> Vec<InputDecl> {
//!         vec![InputDecl::file("source", &p.source)]
//!     }
//!     fn run(&self, p: &ShoutParams, ctx: &mut StageContext) -> StageResult { ... }
//! }
//! ```
//!
//! The executor never names a kind: everything it needs (outputs, inputs,
//! hash config, batch size, memory estimate, run) comes through this trait.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::context::{ExecSettings, StageContext, StageResult};
use crate::model::memory::{StageMemory, Trains};
use crate::spec::from_node;
use crate::spec::yaml::Node;

/// What an output *is*, so references can be checked before anything runs
/// (a reward stage cannot be initialised from a dataset).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ArtifactType(pub &'static str);

impl fmt::Display for ArtifactType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A named output of a stage: `<stage>.<name>` in references. A kind's
/// outputs are fixed by its code, so their names are static: declaring them
/// allocates nothing, which `validate` of many stages notices.
#[derive(Clone, Copy, Debug)]
pub struct OutputDecl {
    pub name: &'static str,
    pub artifact: ArtifactType,
    /// File or folder inside the stage's output folder ("" for the folder).
    pub path: &'static str,
}

impl OutputDecl {
    pub fn new(name: &'static str, artifact: ArtifactType, path: &'static str) -> Self {
        OutputDecl {
            name,
            artifact,
            path,
        }
    }
}

/// Something a stage reads.
#[derive(Clone, Debug)]
pub enum InputDecl {
    /// An upstream output, written `stage` (its only output) or
    /// `stage.output`, found in the params at `field` (a dotted path).
    Stage {
        field: String,
        reference: String,
        accepts: Vec<ArtifactType>,
    },
    /// A user file, relative to the pipeline file's folder; hashed by content.
    File { field: String, path: PathBuf },
}

impl InputDecl {
    pub fn stage(field: impl Into<String>, reference: &str, accepts: &[ArtifactType]) -> Self {
        InputDecl::Stage {
            field: field.into(),
            reference: reference.to_string(),
            accepts: accepts.to_vec(),
        }
    }

    pub fn file(field: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        InputDecl::File {
            field: field.into(),
            path: path.into(),
        }
    }

    pub fn field(&self) -> &str {
        match self {
            InputDecl::Stage { field, .. } | InputDecl::File { field, .. } => field,
        }
    }
}

/// A global batch size the preset's micro-batch must divide.
#[derive(Clone, Debug)]
pub struct BatchDecl {
    /// Dotted path of the field, for error labels.
    pub field: String,
    pub size: u32,
}

/// A stage kind, written against its own typed parameters.
pub trait StageKind: Send + Sync + 'static {
    /// The parameters of a stage of this kind (every field except `kind`).
    /// Use `#[serde(deny_unknown_fields)]` and schemars ranges: the schema is
    /// what `validate` checks and editors complete.
    type Params: DeserializeOwned + Serialize + JsonSchema + Send + Sync + 'static;
    /// The `kind:` value in pipeline files.
    const NAME: &'static str;
    /// Part of every stage hash: bump it when the kind's outputs change
    /// meaning, so old cache entries stop being reused.
    const VERSION: u32;
    /// One line for the schema and `plan`.
    const DESCRIPTION: &'static str;
    /// A params field that takes the pipeline's top-level `model` when the
    /// stage leaves it out (None: the kind does not use model defaults).
    const MODEL_FIELD: Option<&'static str> = None;
    /// A params field that takes the pipeline's `model.dtype` when the stage
    /// leaves it out (None: the kind has no dtype).
    const DTYPE_FIELD: Option<&'static str> = None;

    /// The named outputs and their artifact types.
    fn outputs(&self, params: &Self::Params) -> Vec<OutputDecl>;

    /// Upstream outputs and files this stage reads.
    fn inputs(&self, _params: &Self::Params) -> Vec<InputDecl> {
        Vec::new()
    }

    /// The semantic configuration that goes into the hash. The default is the
    /// params themselves; exclude nothing that changes the outputs.
    fn semantic_config(&self, params: &Self::Params) -> Value {
        serde_json::to_value(params).unwrap_or(Value::Null)
    }

    /// The global batch size, if the stage trains in batches.
    fn global_batch(&self, _params: &Self::Params) -> Option<BatchDecl> {
        None
    }

    /// Peak device memory in bytes under these execution settings, if known.
    /// Defaults to the total of [`StageKind::memory`].
    fn memory_estimate(&self, _params: &Self::Params, _exec: &ExecSettings) -> Option<u64> {
        None
    }

    /// The memory planner's breakdown under these execution settings, shown
    /// by `plan` and checked against presets by `validate`. A training kind
    /// implements it with one call to `model::memory::plan_stage`.
    fn memory(&self, _params: &Self::Params, _exec: &ExecSettings) -> StageMemory {
        StageMemory::NotApplicable
    }

    /// Where this stage's model comes from (see [`ModelOrigin`]).
    fn model_origin(&self, _params: &Self::Params) -> ModelOrigin {
        ModelOrigin::Unknown
    }

    /// The most tokens the tokenizer this stage makes can have, for planning
    /// a model started from random weights over it.
    fn vocabulary(&self, _params: &Self::Params) -> Option<usize> {
        None
    }

    /// The LoRA adapter this stage's output model carries (`None`: full
    /// weights, or no model), so a downstream stage that continues or
    /// copies it can plan its memory. `inputs`: the adapters of this
    /// stage's own upstream models, by params field.
    fn output_adapter(
        &self,
        _params: &Self::Params,
        _inputs: &BTreeMap<String, Trains>,
    ) -> Option<Trains> {
        None
    }

    /// Kind-specific semantic checks beyond the schema: (dotted field, message).
    fn check(&self, _params: &Self::Params) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Produce the outputs into `ctx.out_dir()`.
    fn run(&self, params: &Self::Params, ctx: &mut StageContext) -> StageResult;
}

/// Parsed params of some kind, opaque to everything but that kind.
pub type AnyParams = Arc<dyn Any + Send + Sync>;

/// Where the weights a stage trains come from, so the memory planner can
/// size stages whose model is another stage's output: `graph` follows
/// `Input` links through the pipeline to the pretrained model at the root
/// and hands it to [`StageKind::memory`] as `ExecSettings::base_model`.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelOrigin {
    /// No model to plan.
    Unknown,
    /// A pretrained model: `hf:org/repo` or a folder.
    Pretrained(String),
    /// Random weights of this `config.json`, whose vocabulary comes from
    /// the tokenizer stage named by params field `vocabulary` (its
    /// [`StageKind::vocabulary`] bound).
    Random {
        config: Value,
        vocabulary: &'static str,
    },
    /// The model of the upstream stage named by this params field (an
    /// [`InputDecl::Stage`] field).
    Input(&'static str),
}

/// The object-safe face of a [`StageKind`], used by the checker and executor.
pub trait ErasedKind: Send + Sync {
    fn name(&self) -> &'static str;
    fn version(&self) -> u32;
    fn description(&self) -> &'static str;
    fn model_field(&self) -> Option<&'static str>;
    fn dtype_field(&self) -> Option<&'static str>;
    /// The params' JSON schema (a standalone document with its `$defs`).
    fn params_schema(&self) -> Value;
    /// The params written in the pipeline (a stage's YAML mapping, less
    /// `kind`), deserialized straight from the tree.
    fn parse(&self, params: &Node) -> Result<AnyParams, serde_json::Error>;
    fn outputs(&self, params: &AnyParams) -> Vec<OutputDecl>;
    fn inputs(&self, params: &AnyParams) -> Vec<InputDecl>;
    fn semantic_config(&self, params: &AnyParams) -> Value;
    fn global_batch(&self, params: &AnyParams) -> Option<BatchDecl>;
    fn memory_estimate(&self, params: &AnyParams, exec: &ExecSettings) -> Option<u64>;
    fn memory(&self, params: &AnyParams, exec: &ExecSettings) -> StageMemory;
    fn model_origin(&self, params: &AnyParams) -> ModelOrigin;
    fn vocabulary(&self, params: &AnyParams) -> Option<usize>;
    fn output_adapter(
        &self,
        params: &AnyParams,
        inputs: &BTreeMap<String, Trains>,
    ) -> Option<Trains>;
    fn check(&self, params: &AnyParams) -> Vec<(String, String)>;
    fn run(&self, params: &AnyParams, ctx: &mut StageContext) -> StageResult;
}

/// Adapts a typed kind to [`ErasedKind`].
struct Erased<K>(K);

impl<K: StageKind> Erased<K> {
    /// Params always come from `parse` of the same kind, so the downcast
    /// cannot fail; a mismatch is a programming error reported, not a panic.
    fn typed<'a>(&self, params: &'a AnyParams) -> Option<&'a K::Params> {
        params.downcast_ref::<K::Params>()
    }
}

impl<K: StageKind> ErasedKind for Erased<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }
    fn version(&self) -> u32 {
        K::VERSION
    }
    fn description(&self) -> &'static str {
        K::DESCRIPTION
    }
    fn model_field(&self) -> Option<&'static str> {
        K::MODEL_FIELD
    }
    fn dtype_field(&self) -> Option<&'static str> {
        K::DTYPE_FIELD
    }
    fn params_schema(&self) -> Value {
        serde_json::to_value(schemars::schema_for!(K::Params)).unwrap_or(Value::Bool(true))
    }
    fn parse(&self, params: &Node) -> Result<AnyParams, serde_json::Error> {
        let typed: K::Params = from_node(params)?;
        Ok(Arc::new(typed))
    }
    fn outputs(&self, params: &AnyParams) -> Vec<OutputDecl> {
        self.typed(params)
            .map(|p| self.0.outputs(p))
            .unwrap_or_default()
    }
    fn inputs(&self, params: &AnyParams) -> Vec<InputDecl> {
        self.typed(params)
            .map(|p| self.0.inputs(p))
            .unwrap_or_default()
    }
    fn semantic_config(&self, params: &AnyParams) -> Value {
        self.typed(params)
            .map_or(Value::Null, |p| self.0.semantic_config(p))
    }
    fn global_batch(&self, params: &AnyParams) -> Option<BatchDecl> {
        self.typed(params).and_then(|p| self.0.global_batch(p))
    }
    fn memory_estimate(&self, params: &AnyParams, exec: &ExecSettings) -> Option<u64> {
        self.typed(params).and_then(|p| {
            self.0
                .memory_estimate(p, exec)
                .or_else(|| self.0.memory(p, exec).total())
        })
    }
    fn memory(&self, params: &AnyParams, exec: &ExecSettings) -> StageMemory {
        self.typed(params)
            .map_or(StageMemory::NotApplicable, |p| self.0.memory(p, exec))
    }
    fn model_origin(&self, params: &AnyParams) -> ModelOrigin {
        self.typed(params)
            .map_or(ModelOrigin::Unknown, |p| self.0.model_origin(p))
    }
    fn vocabulary(&self, params: &AnyParams) -> Option<usize> {
        self.typed(params).and_then(|p| self.0.vocabulary(p))
    }
    fn output_adapter(
        &self,
        params: &AnyParams,
        inputs: &BTreeMap<String, Trains>,
    ) -> Option<Trains> {
        self.typed(params)
            .and_then(|p| self.0.output_adapter(p, inputs))
    }
    fn check(&self, params: &AnyParams) -> Vec<(String, String)> {
        self.typed(params)
            .map(|p| self.0.check(p))
            .unwrap_or_default()
    }
    fn run(&self, params: &AnyParams, ctx: &mut StageContext) -> StageResult {
        match self.typed(params) {
            Some(p) => self.0.run(p, ctx),
            None => Err(super::context::StageError::runtime(miette::miette!(
                "internal error: params of another kind handed to `{}`",
                K::NAME
            ))),
        }
    }
}

/// The stage kinds a pipeline may use, by `kind:` name.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn ErasedKind>>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// Add a kind (replacing one of the same name).
    pub fn with<K: StageKind>(mut self, kind: K) -> Self {
        self.kinds.insert(K::NAME, Arc::new(Erased(kind)));
        self
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn ErasedKind>> {
        self.kinds.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }

    pub fn kinds(&self) -> impl Iterator<Item = &Arc<dyn ErasedKind>> {
        self.kinds.values()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.kinds.keys()).finish()
    }
}
