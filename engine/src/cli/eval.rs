//! `poker-pipe eval`: evaluate a trained model. Mode `score` prints the
//! log-likelihood of each line of a file; further modes (interactive,
//! batch) plug in as variants of [`Mode`] with their own function.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use miette::{IntoDiagnostic, miette};

use crate::backend::{Backend, Cpu, Device};
use crate::error::{CmdResult, Exit, Failure};
use crate::model::load::load_dir;
use crate::model::score::score_text;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model directory: HF layout (config.json, safetensors, tokenizer.json),
    /// optionally with a PEFT LoRA adapter in it.
    #[arg(long)]
    pub model: PathBuf,
    /// What to do with the model.
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Input file, one text per line (mode score).
    #[arg(long)]
    pub test_file: Option<PathBuf>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// One JSON line per input line: {"text", "tokens", "logprob"}.
    Score,
}

pub fn run(args: Args) -> CmdResult {
    let be = backend(args.device)?;
    match args.mode {
        Mode::Score => {
            let file = args.test_file.as_deref().ok_or_else(|| {
                Failure::user(miette!(
                    code = "eval::missing_test_file",
                    help = "pass --test-file FILE with one text per line",
                    "--mode score needs a test file"
                ))
            })?;
            let stdout = std::io::stdout();
            score(&be, &args.model, file, &mut stdout.lock())
        }
    }
}

/// The backend for a device; CUDA is a separate backend not in this build.
fn backend(device: Device) -> Result<Cpu, Failure> {
    match device {
        Device::Cpu => Ok(Cpu),
        Device::Cuda(n) => Err(Failure::user(miette!(
            code = "device::unavailable",
            help = "run with --device cpu",
            "device cuda:{n} is not available: this build has no CUDA backend"
        ))),
    }
}

/// Scores every line of `file` with the model in `dir`, writing one JSON
/// object per line to `out`.
pub fn score<B: Backend>(be: &B, dir: &Path, file: &Path, out: &mut impl Write) -> CmdResult {
    let loaded = load_dir(be, dir).map_err(Failure::user)?;
    let input = std::fs::File::open(file).map_err(|e| {
        Failure::user(miette!(
            code = "eval::test_file",
            help = "check the --test-file path",
            "cannot read {}: {e}",
            file.display()
        ))
    })?;
    for (n, line) in std::io::BufReader::new(input).lines().enumerate() {
        let line = line.map_err(|e| {
            Failure::user(miette!(
                code = "eval::test_file",
                help = "the test file must be UTF-8 text, one input per line",
                "{}:{}: {e}",
                file.display(),
                n + 1
            ))
        })?;
        let scored = score_text(be, &loaded.model, &loaded.tokenizer, &line).map_err(|e| {
            Failure::user(miette::Report::new(e).wrap_err(format!("{}:{}", file.display(), n + 1)))
        })?;
        let json =
            serde_json::json!({"text": line, "tokens": scored.tokens, "logprob": scored.logprob});
        writeln!(out, "{json}")
            .into_diagnostic()
            .map_err(Failure::runtime)?;
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::weights::load_file;

    fn golden() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/llama")
    }

    #[test]
    fn score_lines_match_transformers() {
        let mut out = Vec::new();
        let input = golden().join("score_input.txt");
        score(&Cpu, &golden().join("mha"), &input, &mut out).unwrap();
        let expected = load_file(&golden().join("score_expected.safetensors")).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let inputs = std::fs::read_to_string(&input).unwrap();
        assert_eq!(lines.len(), inputs.lines().count());
        for (i, (line, input)) in lines.iter().zip(inputs.lines()).enumerate() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["text"], input);
            assert_eq!(
                v["tokens"].as_f64().unwrap() as f32,
                expected["tokens"].data[i]
            );
            let (got, want) = (
                v["logprob"].as_f64().unwrap(),
                expected["logprob"].data[i] as f64,
            );
            assert!(
                (got - want).abs() < 1e-4 * want.abs(),
                "line {i}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn cuda_and_missing_files_are_clear_errors() {
        let err = backend(Device::Cuda(0)).unwrap_err();
        assert_eq!(err.exit, Exit::User);
        assert!(format!("{:?}", err.report).contains("--device cpu"));
        let err = score(
            &Cpu,
            &golden().join("nope"),
            &golden().join("score_input.txt"),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(format!("{:?}", err.report).contains("config.json"));
    }

    #[test]
    fn an_adapter_beside_the_model_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::copy(golden().join("mha").join(f), dir.path().join(f)).unwrap();
        }
        let input = golden().join("score_input.txt");
        let mut plain = Vec::new();
        score(&Cpu, dir.path(), &input, &mut plain).unwrap();
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::copy(golden().join("rust_adapter").join(f), dir.path().join(f)).unwrap();
        }
        let mut adapted = Vec::new();
        score(&Cpu, dir.path(), &input, &mut adapted).unwrap();
        assert_ne!(plain, adapted);
        // The adapter-only directory finds its base through base_model_name_or_path.
        let mut via_base = Vec::new();
        score(&Cpu, &golden().join("rust_adapter"), &input, &mut via_base).unwrap();
        assert_eq!(adapted, via_base);
    }
}
