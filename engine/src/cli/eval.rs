//! `poker-pipe eval`: try a trained model. `interactive` answers prompts
//! read from stdin (a terminal or a pipe), `batch` answers every prompt of a
//! file into `<stem>_results.txt` beside it, `score` prints the
//! log-likelihood of each line of a file.
//!
//! A prompt is encoded exactly as training encoded it
//! (`train::dataset::encode_prompt`), so a model answers in the form it
//! learned; generation stops at the model's EOS.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use miette::{IntoDiagnostic, miette};

use super::device::on_device;
use crate::backend::{Backend, Device, Dtype, OnBackend, Sampling};
use crate::error::{CmdResult, Exit, Failure};
use crate::model::generate::{GenerateOptions, generate};
use crate::model::load::load_dir;
use crate::model::score::score_text;
use crate::train::dataset::encode_prompt;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model directory: HF layout (config.json, safetensors, tokenizer.json),
    /// optionally with a PEFT LoRA adapter in it; or `hf:owner/name` or
    /// `gguf:FILE`.
    #[arg(long)]
    pub model: String,
    /// What to do with the model.
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Input file (modes batch and score): one text per line, or JSON lines
    /// with a `prompt` field (batch).
    #[arg(long)]
    pub test_file: Option<PathBuf>,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Longest prompt + answer, in tokens.
    #[arg(long, default_value_t = 512)]
    pub max_length: usize,
    /// Seeds sampling: the same seed gives the same answers.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Send prompts bare, without the model's chat template (by default a
    /// model whose tokenizer_config.json has one is prompted in it).
    #[arg(long)]
    pub no_chat_template: bool,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// Storage of the model's weights: `f32`, or `bf16` (frozen weights in
    /// bfloat16, rounding as the CUDA kernels do, on any device).
    #[arg(long, default_value = "f32")]
    pub dtype: Dtype,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Prompt loop on stdin: one answer per line read.
    Interactive,
    /// Answers for every prompt of --test-file, into `<stem>_results.txt`.
    Batch,
    /// One JSON line per input line: {"text", "tokens", "logprob"}.
    Score,
}

pub fn run(args: Args) -> CmdResult {
    on_device(args.device, args.dtype, Command(args))
}

/// The command, waiting for the backend its model runs on.
struct Command(Args);

impl OnBackend for Command {
    type Output = CmdResult;

    fn run<B: Backend>(self, be: &B) -> CmdResult {
        run_on(be, self.0)
    }
}

fn run_on<B: Backend>(be: &B, args: Args) -> CmdResult {
    let model = crate::model::source::local_dir(&args.model).map_err(Failure::user)?;
    let need_file = |mode: &str| {
        args.test_file.as_deref().ok_or_else(|| {
            Failure::user(miette!(
                code = "eval::missing_test_file",
                help = "pass --test-file FILE with one text per line",
                "--mode {mode} needs a test file"
            ))
        })
    };
    let opts = AnswerOptions {
        temperature: args.temperature,
        max_length: args.max_length,
        seed: args.seed,
        chat_template: !args.no_chat_template,
    };
    match args.mode {
        Mode::Score => {
            let file = need_file("score")?;
            let stdout = std::io::stdout();
            score(be, &model, file, &mut stdout.lock())
        }
        Mode::Batch => {
            let file = need_file("batch")?;
            let out = batch(be, &model, file, &opts)?;
            eprintln!("wrote {}", out.display());
            Ok(Exit::Ok)
        }
        Mode::Interactive => {
            let stdin = std::io::stdin();
            let stdout = std::io::stdout();
            let prompt_marker = std::io::IsTerminal::is_terminal(&stdin);
            interactive(
                be,
                &model,
                &opts,
                stdin.lock(),
                &mut stdout.lock(),
                prompt_marker,
            )
        }
    }
}

/// How answers are generated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnswerOptions {
    pub temperature: f32,
    pub max_length: usize,
    pub seed: u64,
    pub chat_template: bool,
}

/// A loaded model that answers prompts.
struct Answerer<'a, B: Backend> {
    be: &'a B,
    loaded: crate::model::load::Loaded<B>,
    opts: AnswerOptions,
    asked: u64,
}

impl<'a, B: Backend> Answerer<'a, B> {
    fn open(be: &'a B, dir: &Path, opts: &AnswerOptions) -> Result<Self, Failure> {
        let mut loaded = load_dir(be, dir).map_err(Failure::user)?;
        loaded.tokenizer.keep_chat_template(opts.chat_template);
        if loaded.adapter.is_some() {
            crate::model::lora::set_merged(be, &mut loaded.model, true);
        }
        Ok(Answerer {
            be,
            loaded,
            opts: *opts,
            asked: 0,
        })
    }

    /// The model's answer to `prompt` (its special tokens removed).
    fn answer(&mut self, prompt: &str) -> Result<String, Failure> {
        let ids = encode_prompt(&self.loaded.tokenizer, prompt)
            .map_err(|e| Failure::user(miette!("cannot encode the prompt: {e}")))?;
        let cfg = &self.loaded.model.cfg;
        check_ids(&ids, cfg.vocab_size)?;
        let room = self.opts.max_length.min(cfg.max_position_embeddings);
        if ids.len() >= room {
            let help = format!(
                "shorten the prompt or raise --max-length (at most the model's {} positions)",
                cfg.max_position_embeddings
            );
            return Err(Failure::user(miette!(
                code = "eval::prompt_too_long",
                help = help,
                "the prompt has {} tokens, --max-length leaves no room for an answer",
                ids.len()
            )));
        }
        let opts = GenerateOptions {
            max_new_tokens: room - ids.len(),
            sampling: Sampling {
                temperature: self.opts.temperature,
                top_k: 0,
                top_p: 1.0,
            },
            seed: self.opts.seed.wrapping_add(self.asked),
            eos: cfg.eos_token_ids.clone(),
            pad_id: cfg.pad_token_id.unwrap_or(0),
        };
        self.asked += 1;
        let out = generate(self.be, &self.loaded.model, &[ids], &opts);
        let mut tokens = out.into_iter().next().unwrap_or_default();
        // The answer ends before EOS, whether or not the tokenizer marks
        // EOS as special (decode only drops tokens marked special).
        if let Some(end) = tokens.iter().position(|t| cfg.eos_token_ids.contains(t)) {
            tokens.truncate(end);
        }
        let text = self
            .loaded
            .tokenizer
            .decode(&tokens)
            .map_err(|e| Failure::runtime(miette::Report::new(e)))?;
        Ok(text.trim().to_string())
    }
}

/// Token ids the model can take: at least one, each below its vocabulary
/// (a tokenizer larger than the model would index past the embedding).
fn check_ids(ids: &[u32], vocab_size: usize) -> Result<(), Failure> {
    if ids.is_empty() {
        return Err(Failure::user(miette!(
            code = "eval::empty_prompt",
            help = "give a prompt with some text the tokenizer knows",
            "the prompt encodes to no tokens"
        )));
    }
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab_size) {
        return Err(Failure::user(miette!(
            code = "eval::token_out_of_vocabulary",
            help =
                "the tokenizer does not belong to this model: use the model's own tokenizer.json",
            "token id {id} is beyond the model's vocabulary of {vocab_size}"
        )));
    }
    Ok(())
}

/// The prompt of a batch input line: a JSON object's `prompt` (which must
/// be a string), or the line itself.
fn prompt_of(line: &str) -> Result<String, String> {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(object)) => match object.get("prompt") {
            Some(serde_json::Value::String(prompt)) => Ok(prompt.clone()),
            Some(other) => Err(format!("\"prompt\" must be a string, found {other}")),
            None => Err("a JSON object line needs a string \"prompt\"".into()),
        },
        _ => Ok(line.to_string()),
    }
}

/// The lines of `bytes` (1-based numbers), each as text or why not.
fn numbered_lines(bytes: &[u8]) -> impl Iterator<Item = (usize, Result<&str, String>)> {
    bytes.split(|&b| b == b'\n').enumerate().map(|(i, line)| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = std::str::from_utf8(line)
            .map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to() + 1));
        (i + 1, text)
    })
}

/// A failure as one line of text (its message, code and help).
fn one_line(failure: &Failure) -> String {
    let report = &failure.report;
    match report.help() {
        Some(help) => format!("{report} ({help})"),
        None => report.to_string(),
    }
}

/// Answers every non-empty line of `file`; writes one JSON object
/// `{"prompt", "response"}` per line to `<stem>_results.txt` beside it and
/// returns that path.
pub fn batch<B: Backend>(
    be: &B,
    dir: &Path,
    file: &Path,
    opts: &AnswerOptions,
) -> Result<PathBuf, Failure> {
    let mut model = Answerer::open(be, dir, opts)?;
    let bytes = std::fs::read(file).map_err(|e| {
        Failure::user(miette!(
            code = "eval::test_file",
            help = "check the --test-file path",
            "cannot read {}: {e}",
            file.display()
        ))
    })?;
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "test".into());
    let out_path = file.with_file_name(format!("{stem}_results.txt"));
    let cannot_write = |e: std::io::Error| {
        Failure::runtime(miette!(
            code = "eval::write",
            help = "the results go beside the test file: check that folder is writable",
            "cannot write {}: {e}",
            out_path.display()
        ))
    };
    // A line at a time, each flushed: a Ctrl-C keeps the answers so far.
    let mut out = std::io::LineWriter::new(std::fs::File::create(&out_path).map_err(cannot_write)?);
    let mut failed = Vec::new();
    for (number, line) in numbered_lines(&bytes) {
        let answered = line.and_then(|line| {
            if line.trim().is_empty() {
                return Ok(None);
            }
            let prompt = prompt_of(line)?;
            let response = model.answer(&prompt).map_err(|f| one_line(&f))?;
            Ok(Some((prompt, response)))
        });
        match answered {
            Ok(Some((prompt, response))) => {
                let json = serde_json::json!({"prompt": prompt, "response": response});
                writeln!(out, "{json}").map_err(cannot_write)?;
            }
            Ok(None) => {}
            Err(message) => failed.push(format!("{}:{number}: {message}", file.display())),
        }
    }
    out.flush().map_err(cannot_write)?;
    if !failed.is_empty() {
        for line in &failed {
            eprintln!("{line}");
        }
        return Err(Failure::user(miette!(
            code = "eval::bad_lines",
            help = "the other lines were answered; fix the lines named above",
            "{} of the test file's lines could not be answered (results in {})",
            failed.len(),
            out_path.display()
        )));
    }
    Ok(out_path)
}

/// Reads prompts line by line from `input` and writes each answer to `out`
/// (after a `> ` marker on terminals) until end of input or `/quit`.
pub fn interactive<B: Backend>(
    be: &B,
    dir: &Path,
    opts: &AnswerOptions,
    input: impl BufRead,
    out: &mut impl Write,
    show_marker: bool,
) -> CmdResult {
    let mut model = Answerer::open(be, dir, opts)?;
    let write_err = |e: std::io::Error| Failure::runtime(miette!("cannot write the answer: {e}"));
    if show_marker {
        write!(out, "> ").map_err(write_err)?;
        out.flush().map_err(write_err)?;
    }
    for (number, line) in input.split(b'\n').enumerate() {
        let line = line.map_err(|e| Failure::user(miette!("cannot read stdin: {e}")))?;
        let answered = match std::str::from_utf8(&line) {
            Ok(text) if text.trim() == "/quit" => break,
            Ok(text) if text.trim().is_empty() => None,
            Ok(text) => Some(model.answer(text.trim()).map_err(|f| one_line(&f))),
            Err(e) => Some(Err(format!(
                "invalid UTF-8 at byte {}",
                e.valid_up_to() + 1
            ))),
        };
        match answered {
            Some(Ok(answer)) => writeln!(out, "{answer}").map_err(write_err)?,
            // A bad line is reported and the session goes on.
            Some(Err(message)) => eprintln!("line {}: {message}", number + 1),
            None => {}
        }
        if show_marker {
            write!(out, "> ").map_err(write_err)?;
        }
        out.flush().map_err(write_err)?;
    }
    Ok(Exit::Ok)
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
    use crate::backend::Cpu;
    use crate::model::weights::load_file;

    #[test]
    fn prompts_need_tokens_inside_the_vocabulary() {
        assert!(check_ids(&[0, 5, 9], 10).is_ok());
        let empty = check_ids(&[], 10).unwrap_err();
        assert!(empty.report.to_string().contains("no tokens"));
        let beyond = check_ids(&[3, 10], 10).unwrap_err();
        assert!(beyond.report.to_string().contains("token id 10"));
        assert_eq!(beyond.exit, Exit::User);
    }

    #[test]
    fn json_lines_need_a_string_prompt() {
        assert_eq!(prompt_of("plain text").unwrap(), "plain text");
        assert_eq!(prompt_of(r#"{"prompt": "hi"}"#).unwrap(), "hi");
        assert_eq!(prompt_of("42").unwrap(), "42");
        assert!(prompt_of(r#"{"prompt": 3}"#).is_err());
        assert!(prompt_of(r#"{"text": "hi"}"#).is_err());
    }

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
    fn missing_files_are_clear_errors() {
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
