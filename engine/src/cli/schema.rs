//! `poker-pipe schema [--out PATH]`: the JSON schema of pipeline files, for
//! editors (`# yaml-language-server: $schema=...`) and CI's freshness check.

use std::path::PathBuf;

use crate::error::{CmdResult, Exit, Failure};
use crate::spec::pipeline_schema;
use crate::stages;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write the schema to this file instead of printing it.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> CmdResult {
    let schema = pipeline_schema(&stages::registry());
    let mut text = serde_json::to_string_pretty(&schema)
        .map_err(|err| Failure::runtime(miette::miette!("cannot print the schema: {err}")))?;
    text.push('\n');
    match args.out {
        Some(path) => std::fs::write(&path, text).map_err(|err| {
            Failure::runtime(miette::miette!("cannot write {}: {err}", path.display()))
        })?,
        None => print!("{text}"),
    }
    Ok(Exit::Ok)
}
