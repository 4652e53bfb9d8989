//! `stratus plugin inspect|call`: the plugin author's inner loop.

use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum PluginCommand {}

pub fn run(cmd: PluginCommand, _state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    match cmd {}
}
