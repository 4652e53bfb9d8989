//! Starting a local server's agent process: its command line, output file, process group and
//! cgroup, and the thread that reaps it.

use crate::AgentProgram;
use crate::process::ROOT_MARKER;
use crate::{LaunchRequest, ProviderError};
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;

/// What one agent is started with.
pub(crate) struct AgentSpawn<'a> {
    pub program: &'a AgentProgram,
    pub req: &'a LaunchRequest,
    pub root: &'a Path,
    /// The server's bootstrap file (`--bootstrap`): control address, pin, identity, credential.
    pub bootstrap_file: &'a Path,
    /// The server's own program uid (`--program-user`), when the provider gives one.
    pub program_uid: Option<u32>,
}

/// Starts the agent in its own process group and answers its pid. The agent moves itself into
/// the cgroup named here (made by the provider) as its first act: joining in the child before
/// exec would need a `pre_exec` hook, which makes std fork the whole control plane instead of
/// using `posix_spawn`, and at a thousand servers that fork was a third of the launch.
pub(crate) fn spawn_agent(
    agent: AgentSpawn<'_>,
    cgroup: Option<String>,
) -> Result<u32, ProviderError> {
    let AgentSpawn {
        program,
        req,
        root,
        bootstrap_file,
        program_uid,
    } = agent;
    let out_path = root.join("agent/agent.out");
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&out_path)
        .map_err(ProviderError::io(format!("opening {}", out_path.display())))?;
    let err = out
        .try_clone()
        .map_err(ProviderError::io("duplicating agent output"))?;
    let mut cmd = program.command();
    cmd.arg("--bootstrap")
        .arg(bootstrap_file)
        .arg("--root")
        .arg(root)
        .args(&req.agent_args)
        .args(program_uid.map(|uid| format!("--program-user={uid}:{uid}")))
        .env(ROOT_MARKER, root)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own group: terminal signals to the control plane do not reach it, and
        // terminate can signal the agent together with everything it started.
        .process_group(0);
    if let Some(name) = cgroup {
        cmd.env(stratus_containment::AGENT_CGROUP_ENV, name);
    }
    let spawn_error = |source| ProviderError::Spawn {
        program: program.path().to_path_buf(),
        source,
    };
    // Within a runtime, tokio reaps the agent once it exits (its child is dropped, not
    // killed, so the agent outlives a control plane restart): no thread per agent.
    if tokio::runtime::Handle::try_current().is_ok() {
        let child = tokio::process::Command::from(cmd)
            .spawn()
            .map_err(spawn_error)?;
        return child
            .id()
            .ok_or_else(|| ProviderError::Task("the agent exited at once".into()));
    }
    let mut child = cmd.spawn().map_err(spawn_error)?;
    let pid = child.id();
    std::thread::Builder::new()
        .name(format!("reap-{pid}"))
        .spawn(move || {
            let _ = child.wait();
        })
        .map_err(ProviderError::io("starting reaper thread"))?;
    Ok(pid)
}
