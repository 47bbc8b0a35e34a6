//! `poker-pipe fetch SOURCE`: download a model into the hub cache (or check
//! a local directory) ahead of a run, so that later runs, including offline
//! ones (`HF_HUB_OFFLINE=1`), find it there. Prints where it is and the
//! exact commit, never the token.

use std::path::PathBuf;

use crate::error::{CmdResult, Exit, Failure};
use crate::model::hub::HubError;
use crate::model::source::{self, ResolveOptions, ResolvedModel, SourceError};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `hf:owner/name[@revision]` or a model directory.
    pub source: String,
    /// Use only the hub cache (as HF_HUB_OFFLINE=1 does).
    #[arg(long)]
    pub offline: bool,
    /// Print one JSON object instead of text.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub fn run(args: Args) -> CmdResult {
    let source = source::parse(&args.source).map_err(Failure::user)?;
    let mut options = ResolveOptions::from_env();
    options.offline |= args.offline;
    let resolved = source::resolve(&source, &options).map_err(failure)?;
    match args.format {
        Format::Json => println!("{}", report(&resolved)),
        Format::Text => {
            println!(
                "{} -> {}",
                resolved.identity.canonical(),
                resolved.dir.display()
            );
            for file in resolved.files() {
                println!("  {}", relative(&resolved, file).display());
            }
        }
    }
    Ok(Exit::Ok)
}

/// Wrong names, refused access and missing files are the user's to fix
/// (exit 1); a network, server or disk failure is a runtime one (exit 3).
fn failure(err: SourceError) -> Failure {
    let runtime = matches!(
        err,
        SourceError::Io { .. }
            | SourceError::Hub(
                HubError::Network { .. } | HubError::Http { .. } | HubError::Download { .. }
            )
    );
    if runtime {
        Failure::runtime(err)
    } else {
        Failure::user(err)
    }
}

fn relative(resolved: &ResolvedModel, file: PathBuf) -> PathBuf {
    file.strip_prefix(&resolved.dir)
        .map(PathBuf::from)
        .unwrap_or(file)
}

/// `{"identity": {...}, "dir": "...", "files": ["config.json", ...]}`.
fn report(resolved: &ResolvedModel) -> serde_json::Value {
    let files: Vec<String> = resolved
        .files()
        .into_iter()
        .map(|file| relative(resolved, file).display().to_string())
        .collect();
    serde_json::json!({
        "identity": resolved.identity,
        "dir": resolved.dir.display().to_string(),
        "files": files,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::source::{ModelIdentity, inspect_dir};

    #[test]
    fn json_report_names_the_commit_and_relative_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["config.json", "tokenizer.json", "model.safetensors"] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        let identity = ModelIdentity::Hub {
            repo: "o/n".into(),
            revision: "main".into(),
            commit: "abc".into(),
        };
        let resolved = inspect_dir(dir.path(), identity).unwrap();
        let json = report(&resolved);
        assert_eq!(
            json["identity"],
            serde_json::json!({"source": "hub", "repo": "o/n", "revision": "main", "commit": "abc"})
        );
        assert_eq!(
            json["files"],
            serde_json::json!(["config.json", "tokenizer.json", "model.safetensors"])
        );
    }

    #[test]
    fn refused_access_is_a_user_error_and_a_dead_network_a_runtime_one() {
        let gated = SourceError::Hub(HubError::Gated {
            repo: "o/n".into(),
            url: "u".into(),
            endpoint: "e".into(),
            status: 401,
            with_token: false,
        });
        assert_eq!(failure(gated).exit, Exit::User);
        let network = SourceError::Hub(HubError::Network {
            repo: "o/n".into(),
            endpoint: "e".into(),
            reason: "refused".into(),
        });
        assert_eq!(failure(network).exit, Exit::Runtime);
    }
}
