//! The poker-pipe command line with one more test kind, `lm-train`: a
//! pretend training stage whose memory comes from the real planner
//! (`model::memory::plan_stage`) and which can fail the way the CUDA backend
//! fails when a GPU runs out of memory: it unwinds with the driver's typed
//! error as the panic's payload. The memory tests drive it.

use cudarc::driver::DriverError;
use cudarc::driver::sys::CUresult;
use poker_pipe::backend::{CudaError, Dtype};
use poker_pipe::graph::{
    BatchDecl, ExecSettings, InputDecl, Outcome, OutputDecl, StageContext, StageError, StageKind,
    StageResult,
};
use poker_pipe::model::memory::{PlannedModel, StageMemory, Task, Trains, plan_stage};
use poker_pipe_tests::kinds::{MODEL, TEXT};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A pretend SFT stage over a real model shape.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct LmTrainParams {
    /// Upstream text (`stage`).
    input: String,
    /// Model source: `hf:owner/name` or a folder with `config.json`.
    model: String,
    /// LoRA rank; full fine-tuning when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lora_rank: Option<usize>,
    /// Global batch size.
    #[schemars(range(min = 1))]
    batch_size: u32,
    /// Tokens per sequence.
    #[schemars(range(min = 1))]
    max_seq_len: usize,
    /// Fail as a GPU allocation would.
    #[serde(default)]
    out_of_memory: bool,
}

struct LmTrain;

impl StageKind for LmTrain {
    type Params = LmTrainParams;
    const NAME: &'static str = "lm-train";
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "Test kind: a training stage the memory planner sizes.";
    const MODEL_FIELD: Option<&'static str> = Some("model");

    fn outputs(&self, _: &LmTrainParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("model", MODEL, "model.txt")]
    }

    fn inputs(&self, params: &LmTrainParams) -> Vec<InputDecl> {
        vec![InputDecl::stage("input", &params.input, &[TEXT])]
    }

    fn global_batch(&self, params: &LmTrainParams) -> Option<BatchDecl> {
        Some(BatchDecl {
            field: "batch_size".into(),
            size: params.batch_size,
        })
    }

    fn memory(&self, params: &LmTrainParams, exec: &ExecSettings) -> StageMemory {
        let trains = params.lora_rank.map_or(Trains::Full, Trains::lora_all);
        plan_stage(
            &PlannedModel::Source(params.model.clone()),
            std::path::Path::new("."),
            Task::Sft,
            trains,
            params.max_seq_len,
            exec,
            Dtype::F32,
        )
    }

    fn run(&self, params: &LmTrainParams, ctx: &mut StageContext) -> StageResult {
        if params.out_of_memory {
            std::panic::panic_any(CudaError::Driver {
                op: "allocating the activations of block 3".into(),
                status: DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY),
            });
        }
        std::fs::write(ctx.out_dir().join("model.txt"), "trained")
            .map_err(|e| StageError::runtime(miette::miette!("cannot write: {e}")))?;
        Ok(Outcome::Done)
    }
}

fn main() -> std::process::ExitCode {
    poker_pipe::stages::install(poker_pipe_tests::kinds::registry().with(LmTrain));
    poker_pipe::cli::main()
}
