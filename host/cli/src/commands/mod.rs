//! One module per verb.

pub mod apply;
pub mod events;
pub mod launch;
pub mod logs;
pub mod plugin;
pub mod scale;
pub mod serve;
pub mod status;
pub mod terminate;

use crate::{Cli, Command, default_state_dir};
use std::process::ExitCode;

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let state_dir = default_state_dir(cli.state_dir.clone());
    match cli.command {
        Command::Plugin(cmd) => plugin::run(cmd, cli.state_dir),
        Command::Launch(args) => launch::run(args, &state_dir),
        Command::Status(args) => status::run(args, &state_dir),
        Command::Events(args) => events::run(args, &state_dir),
        Command::Logs(args) => logs::run(args, &state_dir),
        Command::Scale(args) => scale::run(args, &state_dir),
        Command::Apply(args) => apply::run(args, &state_dir),
        Command::Terminate(args) => terminate::run(args, &state_dir),
        Command::Shutdown => terminate::shutdown(&state_dir),
        Command::Serve(args) => serve::serve(args, state_dir),
        Command::Agent(args) => serve::agent(args),
    }
}
