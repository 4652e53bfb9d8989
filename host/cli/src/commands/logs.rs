//! `stratus logs [COMPONENT|SERVER]`: the control plane's component logs and the agents' logs.

use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use stratus_control::status as view;
use stratus_model::state::AgentState;

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

pub fn run(args: LogsArgs, state_dir: &Path) -> anyhow::Result<ExitCode> {
    let logs = state_dir.join("logs");
    let servers = agent_logs(state_dir, args.deployment.as_deref())?;
    let Some(target) = args.target else {
        println!("component logs ({}):", logs.display());
        for c in COMPONENTS {
            println!("  {c}");
        }
        println!("agent logs (one per server):");
        for (dep, id, path) in &servers {
            println!("  {id:<14} deployment {dep}  {}", path.display());
        }
        println!("hook output: {}", logs.join("hooks").display());
        return Ok(ExitCode::SUCCESS);
    };
    let path = if COMPONENTS.contains(&target.as_str()) {
        logs.join(format!("{target}.log"))
    } else if let Some((_, _, p)) = servers.iter().find(|(_, id, _)| *id == target) {
        p.clone()
    } else {
        eprintln!("no log named {target}; run `stratus logs` to list them");
        return Ok(ExitCode::FAILURE);
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => print!("{text}"),
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn agent_logs(
    state_dir: &Path,
    only: Option<&str>,
) -> anyhow::Result<Vec<(String, String, PathBuf)>> {
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
            if let Some(dir) = view::agent_dir(&store, &s) {
                out.push((d.name.clone(), s.id.clone(), dir.join("agent.log")));
            }
        }
    }
    Ok(out)
}
