//! The `stratus` command line: one binary, three roles (operator CLI, control plane, agent),
//! and `stratus-agent`, the agent alone (`agent_main`).
//!
//! Each verb lives in `commands/<verb>.rs`; this file only parses arguments and dispatches.

mod agent_process;
mod cloud_drivers;
mod commands;
mod control_process;
mod inherited_fds;
mod precompile;
mod scalers;
mod ssh_provider;

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
    /// Launch a deployment file and follow it until RUNNING.
    Launch(commands::launch::LaunchArgs),
    /// Show deployments, their tiers, servers and services.
    Status(commands::status::StatusArgs),
    /// Print the event journal.
    Events(commands::events::EventsArgs),
    /// Print component logs or an agent's log.
    Logs(commands::logs::LogsArgs),
    /// Change a tier's target count or bounds and follow until the tier has it.
    Scale(commands::scale::ScaleArgs),
    /// Show what a changed deployment file changes, then reconcile the deployment to it.
    Apply(commands::apply::ApplyArgs),
    /// Terminate a deployment: stop services in reverse order, end its servers.
    Terminate(commands::terminate::TerminateArgs),
    /// Stop the control plane of the state directory.
    Shutdown,
    /// Work with plugin components: inspect them or call one hook locally.
    #[command(subcommand)]
    Plugin(commands::plugin::PluginCommand),
    /// Run the control plane (started for you by `launch`).
    Serve(commands::serve::ServeArgs),
    /// Run a server's agent (started by the cloud provider).
    #[command(hide = true)]
    Agent(commands::serve::AgentArgs),
}

/// Entry point used by `src/main.rs`.
pub fn main() -> ExitCode {
    inherited_fds::seal();
    exit_code(commands::run(Cli::parse()))
}

/// The agent alone (`stratus-agent`), for the local provider's servers: the same code as
/// `stratus agent`, in a binary that leaves out the control plane and the CLI.
#[derive(Debug, Parser)]
#[command(
    name = "stratus-agent",
    version,
    about = "Run a server's agent (started by the cloud provider)."
)]
struct AgentCli {
    #[command(flatten)]
    args: commands::serve::AgentArgs,
}

/// Entry point of `src/bin/stratus-agent.rs`.
pub fn agent_main() -> ExitCode {
    inherited_fds::seal();
    exit_code(commands::serve::agent(AgentCli::parse().args))
}

/// A command's result as the process's exit code, its error on stderr.
fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|err| {
        eprintln!("error: {}", error_text(&err));
        ExitCode::FAILURE
    })
}

/// The error and its causes, each once: most errors here name their cause in their own
/// message (`{path}: {source}`), which `{:#}` would print a second time.
fn error_text(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// The state directory: `--state-dir`, `STRATUS_STATE_DIR`, else `$XDG_STATE_HOME/stratus`,
/// else `/var/lib/stratus` for root (programs then run as the program user, who must be able
/// to reach the servers' directories, and root's home is closed to others) or
/// `~/.local/state/stratus`.
pub fn default_state_dir(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(dir) = explicit {
        return dir;
    }
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(xdg).join("stratus");
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/stratus");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| ".".into());
    home.join(".local/state/stratus")
}

#[cfg(test)]
mod tests {
    use super::error_text;
    use anyhow::Context;

    #[test]
    fn a_cause_the_message_already_names_is_printed_once() {
        let missing = std::path::PathBuf::from("/nonexistent/bootstrap.json");
        let err = stratus_protocol::Bootstrap::read(&missing).unwrap_err();
        let text = error_text(&anyhow::Error::from(err));
        assert_eq!(
            text.matches("No such file or directory").count(),
            1,
            "{text}"
        );
        assert!(
            text.starts_with("bootstrap file /nonexistent/bootstrap.json: "),
            "{text}"
        );
    }

    #[test]
    fn causes_the_message_does_not_name_are_appended_in_order() {
        let err = Err::<(), _>(std::io::Error::other("disk on fire"))
            .context("writing the journal")
            .context("launching web")
            .unwrap_err();
        assert_eq!(
            error_text(&err),
            "launching web: writing the journal: disk on fire"
        );
    }
}
