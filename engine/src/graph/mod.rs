//! The pipeline as a DAG: stage hashing, the cache store, the run lock and the
//! executor. Owns the Stage trait; never names a stage kind.

pub mod code;
mod context;
mod execute;
mod hash;
mod kind;
mod plan;
mod store;

pub use context::{
    Cancel, ContextParts, ExecSettings, LOG_FILE, Outcome, ProgressLine, RanOnHost, ResolvedInput,
    StageContext, StageError, StageResult, Verbosity,
};
pub use execute::{
    Executor, RunReport, Selection, SelectionError, StageReport, StageStatus, check_stage_name,
    select,
};
pub use hash::{
    FileHash, HashInput, StatCache, UpstreamHash, canonical_json, changed_fields,
    hash_file_contents,
};
pub use kind::{
    AnyParams, ArtifactType, BatchDecl, ErasedKind, InputDecl, ModelOrigin, OutputDecl, Registry,
    StageKind,
};
pub use plan::{Plan, PlanOptions, PlannedStage, Reason, plan, topological_order};
pub use store::{
    CACHE_ENV, DEFAULT_CACHE, EntryState, LockGuard, MANIFEST, Manifest, ManifestFile,
    PipelineState, Store, cache_root, dir_size, list_files, write_atomic,
};
