//! `stratus logs [COMPONENT|SERVER]`: the control plane's component logs and the agents' logs.
//! A server on this machine (the local provider) has its agent log read from disk, so it can
//! be read with its agent dead; a server elsewhere (SSH hosts, cloud instances) keeps its log
//! there, and the running control plane asks its connected agent for the end of it.

use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use stratus_control::client::ControlClient;
use stratus_control::status as view;
use stratus_model::state::AgentState;
use stratus_protocol::{OperatorReply, OperatorRequest};

const COMPONENTS: [&str; 6] = [
    "scaling-worker",
    "configuration-worker",
    "monitor-server",
    "monitor-deployment",
    "monitor-scaling-event",
    "dispatcher",
];

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// A component (scaling-worker, configuration-worker, monitor-server, monitor-deployment,
    /// monitor-scaling-event, dispatcher) or a server id (`app-1`); none lists what exists.
    pub target: Option<String>,
    /// The deployment of the server, when several have a server of that id.
    #[arg(long)]
    pub deployment: Option<String>,
}

/// A server with an agent log: its deployment, its id, and the log's path when it is on this
/// machine (`None`: on the server's own host).
struct AgentLogOf {
    deployment: String,
    server: String,
    path: Option<PathBuf>,
}

pub fn run(args: LogsArgs, state_dir: &Path) -> anyhow::Result<ExitCode> {
    let logs = state_dir.join("logs");
    let servers = agent_logs(state_dir, args.deployment.as_deref())?;
    let Some(target) = args.target else {
        list(&logs, &servers);
        return Ok(ExitCode::SUCCESS);
    };
    if COMPONENTS.contains(&target.as_str()) {
        return print_file(&logs.join(format!("{target}.log")), false);
    }
    match servers.iter().find(|s| s.server == target) {
        Some(AgentLogOf { path: Some(p), .. }) => print_file(p, true),
        Some(s) => print_remote(state_dir, &s.deployment, &s.server),
        None => {
            eprintln!("no log named {target}; run `stratus logs` to list them");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn list(logs: &Path, servers: &[AgentLogOf]) {
    println!("component logs ({}):", logs.display());
    for c in COMPONENTS {
        println!("  {c}");
    }
    println!("agent logs (one per server):");
    for s in servers {
        let at = match &s.path {
            Some(p) => p.display().to_string(),
            None => "on its host, read through its agent".into(),
        };
        println!("  {:<14} deployment {}  {at}", s.server, s.deployment);
    }
    println!("hook output: {}", logs.join("hooks").display());
}

/// Prints the file at `path`, escaping control characters when it holds what agents wrote.
fn print_file(path: &Path, escape: bool) -> anyhow::Result<ExitCode> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            match escape {
                true => print!("{}", terminal_safe(&text)),
                false => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Asks the running control plane for the end of the agent log of a server on another host.
fn print_remote(state_dir: &Path, deployment: &str, server: &str) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new()?;
    let reply = rt.block_on(async {
        let mut client = ControlClient::connect(state_dir).await?;
        client
            .request(OperatorRequest::AgentLog {
                deployment: deployment.to_string(),
                server: server.to_string(),
            })
            .await
    });
    match reply {
        Ok(OperatorReply::AgentLog { text, cut }) => {
            if cut {
                eprintln!("(the end of the agent log of {server}; earlier lines are on its host)");
            }
            print!("{}", terminal_safe(&text));
            Ok(ExitCode::SUCCESS)
        }
        Ok(OperatorReply::Error { message, .. }) => {
            eprintln!("error: {}", terminal_safe(&message));
            Ok(ExitCode::FAILURE)
        }
        Ok(other) => anyhow::bail!("unexpected answer from the control plane: {other:?}"),
        Err(e) => {
            eprintln!(
                "error: {e}; the agent log of {server} is on its host and is read through \
                 the control plane"
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `text` with every control character but newline and tab escaped (`\u{1b}`): an agent's log
/// carries plugins' text, which must not drive the operator's terminal.
fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

fn agent_logs(state_dir: &Path, only: Option<&str>) -> anyhow::Result<Vec<AgentLogOf>> {
    let mut out = Vec::new();
    let Some(store) = view::open_store(state_dir)? else {
        return Ok(out);
    };
    for d in store.deployments::<serde_json::Value>()? {
        if only.is_some_and(|o| o != d.name) {
            continue;
        }
        for s in store.servers::<AgentState>(&d.name)? {
            // Only servers on this machine have their log here.
            let path = view::agent_dir(&store, &s).map(|dir| dir.join("agent.log"));
            out.push(AgentLogOf {
                deployment: d.name.clone(),
                server: s.id.clone(),
                path,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::terminal_safe;

    #[test]
    fn control_characters_are_escaped_but_lines_and_tabs_kept() {
        let text = "a\tb\n\x1b]0;owned\x07c\r\u{9b}31m\u{fffd}é\n";
        assert_eq!(
            terminal_safe(text),
            "a\tb\n\\u{1b}]0;owned\\u{7}c\\r\\u{9b}31m\u{fffd}é\n"
        );
    }
}
