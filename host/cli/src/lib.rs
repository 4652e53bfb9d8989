//! The `stratus` command line: one binary, three roles (operator CLI, control plane, agent).
//!
//! Each verb lives in `commands/<verb>.rs`; this file only parses arguments and dispatches.

mod commands;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Stratus launches multi-tier deployments whose service logic runs as sandboxed WebAssembly.
#[derive(Debug, Parser)]
#[command(name = "stratus", version, about)]
pub struct Cli {
    /// State directory (journal, logs, keys, servers). Defaults to a per-user location.
    #[arg(long, global = true, env = "STRATUS_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with plugin components: inspect them or call one hook locally.
    #[command(subcommand)]
    Plugin(commands::plugin::PluginCommand),
}

/// Entry point used by `src/main.rs`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The state directory: `--state-dir`, `STRATUS_STATE_DIR`, else `$XDG_STATE_HOME/stratus` or
/// `~/.local/state/stratus`.
pub fn default_state_dir(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(dir) = explicit {
        return dir;
    }
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(xdg).join("stratus");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| ".".into());
    home.join(".local/state/stratus")
}
