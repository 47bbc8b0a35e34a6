//! Stage kinds that exist only for the engine's tests: they shuffle short
//! texts, so a whole pipeline runs in milliseconds, and they can be told
//! (through environment variables, which are not part of any hash) to be
//! slow, hang, fail or crash in a chosen stage.
//!
//! - `PP_TEST_STEP_MS=N`: sleep N ms per step.
//! - `PP_TEST_HANG=<stage>`: that stage steps forever until cancelled.
//! - `PP_TEST_FAIL=<stage>`: that stage returns a runtime error.
//! - `PP_TEST_CRASH=<stage>`: that stage aborts the process after step 1.
//! - `PP_TEST_PANIC=<stage>`: that stage panics (a bug in a kind).

use std::path::Path;
use std::time::Duration;

use poker_pipe::graph::{
    ArtifactType, BatchDecl, ExecSettings, InputDecl, Outcome, OutputDecl, Registry, StageContext,
    StageError, StageKind, StageResult,
};
use poker_pipe::spec::ModelDefaults;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A text file.
pub const TEXT: ArtifactType = ArtifactType("test-text");
/// A pretend model.
pub const MODEL: ArtifactType = ArtifactType("test-model");

/// The built-in kinds plus the test kinds.
pub fn registry() -> Registry {
    poker_pipe::stages::builtin()
        .with(TextSource)
        .with(TextStep)
        .with(TextJudge)
}

/// Makes a text from a literal and optionally a file.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextSourceParams {
    /// The text.
    pub text: String,
    /// A file whose bytes are appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

pub struct TextSource;

impl StageKind for TextSource {
    type Params = TextSourceParams;
    const NAME: &'static str = "text-source";
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "Test kind: a text from a literal and a file.";

    fn outputs(&self, _: &TextSourceParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("text", TEXT, "out.txt")]
    }

    fn inputs(&self, params: &TextSourceParams) -> Vec<InputDecl> {
        params
            .file
            .iter()
            .map(|f| InputDecl::file("file", f))
            .collect()
    }

    fn run(&self, params: &TextSourceParams, ctx: &mut StageContext) -> StageResult {
        let mut text = params.text.clone();
        if params.file.is_some() {
            let path = ctx.file("file")?.to_path_buf();
            text.push_str(&read(&path)?);
        }
        write(&ctx.out_dir().join("out.txt"), &text)?;
        Ok(Outcome::Done)
    }
}

/// A "training" step: appends a suffix over a number of resumable steps.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextStepParams {
    /// Upstream text or model (`stage` or `stage.output`).
    pub input: String,
    /// Appended once per step.
    pub suffix: String,
    /// Number of steps.
    #[schemars(range(min = 1))]
    #[serde(default = "one")]
    pub steps: u32,
    /// Global batch size.
    #[schemars(range(min = 1))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// A learning rate (must be > 0).
    #[schemars(extend("exclusiveMinimum" = 0))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// A probability.
    #[schemars(range(min = 0.0, max = 1.0))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
}

fn one() -> u32 {
    1
}

pub struct TextStep;

impl StageKind for TextStep {
    type Params = TextStepParams;
    const NAME: &'static str = "text-step";
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "Test kind: appends a suffix in resumable steps.";

    fn outputs(&self, _: &TextStepParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("model", MODEL, "model.txt")]
    }

    fn inputs(&self, params: &TextStepParams) -> Vec<InputDecl> {
        vec![InputDecl::stage("input", &params.input, &[TEXT, MODEL])]
    }

    fn global_batch(&self, params: &TextStepParams) -> Option<BatchDecl> {
        params.batch_size.map(|size| BatchDecl {
            field: "batch_size".into(),
            size,
        })
    }

    fn memory_estimate(&self, params: &TextStepParams, exec: &ExecSettings) -> Option<u64> {
        Some(u64::from(exec.micro_batch) * 1024 + u64::from(params.steps))
    }

    fn run(&self, params: &TextStepParams, ctx: &mut StageContext) -> StageResult {
        let input = ctx.input("input")?.path.clone();
        let base = read(&input)?;
        let state = ctx.work_dir().join("step.txt");
        let mut step: u32 = std::fs::read_to_string(&state)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if step > 0 {
            ctx.log(format!("resuming from step {step}"));
        }
        let stage = ctx.stage.clone();
        let chosen = |var: &str| std::env::var(var).is_ok_and(|s| s == stage);
        if chosen("PP_TEST_PANIC") {
            panic!("a bug in stage {}", ctx.stage);
        }
        if chosen("PP_TEST_FAIL") {
            return Err(StageError::runtime(miette::miette!("failing on purpose")));
        }
        let pause = std::env::var("PP_TEST_STEP_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(Duration::ZERO, Duration::from_millis);
        let hang = chosen("PP_TEST_HANG");
        while hang || step < params.steps {
            if ctx.is_cancelled() {
                ctx.log(format!("interrupted at step {step}; state saved"));
                return Ok(Outcome::Interrupted);
            }
            std::thread::sleep(if hang {
                Duration::from_millis(20)
            } else {
                pause
            });
            if !hang {
                step += 1;
                write_state(&state, &step.to_string())?;
                ctx.log(format!("step {step}/{}", params.steps));
                ctx.progress(u64::from(step), u64::from(params.steps));
            }
            if step == 1 && chosen("PP_TEST_CRASH") {
                std::process::abort();
            }
        }
        let text = format!("{base}{}", params.suffix.repeat(params.steps as usize));
        write(&ctx.out_dir().join("model.txt"), &text)?;
        write(
            &ctx.out_dir().join("summary.json"),
            &format!("{{\"steps\": {}}}", params.steps),
        )?;
        Ok(Outcome::Done)
    }
}

/// Reads a model and a text: lets tests wire a wrong kind of input.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextJudgeParams {
    /// A model stage (`text-step`).
    pub init: String,
    /// A text.
    pub data: String,
    /// The base model; the pipeline's `model` when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<ModelDefaults>,
}

pub struct TextJudge;

impl StageKind for TextJudge {
    type Params = TextJudgeParams;
    const NAME: &'static str = "text-judge";
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "Test kind: compares a model with a text.";
    const MODEL_FIELD: Option<&'static str> = Some("base");

    fn outputs(&self, _: &TextJudgeParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("score", TEXT, "score.txt")]
    }

    fn inputs(&self, params: &TextJudgeParams) -> Vec<InputDecl> {
        vec![
            InputDecl::stage("init", &params.init, &[MODEL]),
            InputDecl::stage("data", &params.data, &[TEXT]),
        ]
    }

    fn run(&self, _: &TextJudgeParams, ctx: &mut StageContext) -> StageResult {
        let model = read(&ctx.input("init")?.path.clone())?;
        let data = read(&ctx.input("data")?.path.clone())?;
        let score = model.len() as i64 - data.len() as i64;
        write(&ctx.out_dir().join("score.txt"), &score.to_string())?;
        Ok(Outcome::Done)
    }
}

fn read(path: &Path) -> Result<String, StageError> {
    std::fs::read_to_string(path).map_err(|err| {
        StageError::runtime(miette::miette!("cannot read {}: {err}", path.display()))
    })
}

fn write(path: &Path, text: &str) -> Result<(), StageError> {
    std::fs::write(path, text).map_err(|err| {
        StageError::runtime(miette::miette!("cannot write {}: {err}", path.display()))
    })
}

/// Resume state is written to a temporary file and renamed over the old one,
/// as real stages checkpoint: a SIGKILL between truncating and writing must
/// never leave an empty state that silently restarts from step 0.
fn write_state(path: &Path, text: &str) -> Result<(), StageError> {
    let temp = path.with_extension("tmp");
    write(&temp, text)?;
    std::fs::rename(&temp, path).map_err(|err| {
        StageError::runtime(miette::miette!("cannot replace {}: {err}", path.display()))
    })
}
