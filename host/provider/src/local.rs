//! The built-in local provider: a "server" is an agent process on this machine, in its own
//! process group and (where the host has cgroups) its own cgroup, with its own root directory
//! and its own loopback address.

use crate::leases::{Lease, Leases};
use crate::process::{group_alive, marked_groups, signal_group};
use crate::{
    AgentProgram, BoxFuture, Capacity, CloudProvider, LaunchRequest, LaunchedServer, LocalHandle,
    Presence, ProviderError, ProviderHandle,
};
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often terminate checks whether the group is gone.
const POLL: Duration = Duration::from_millis(50);
/// How long to wait for the kernel to finish a SIGKILL before reporting failure.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long an earlier agent of a relaunched server gets to exit on SIGTERM.
const STALE_GRACE: Duration = Duration::from_secs(2);

/// Servers as local agent processes under `<state_dir>/servers/<deployment>/<server_id>/root`.
///
/// Each agent runs as `stratus-agent --bootstrap <root>/agent/bootstrap.json --root <root>
/// <agent_args…>` (or `stratus agent …`: [`AgentProgram`]; the bootstrap, mode 0600, holds the
/// control address, the certificate fingerprint to pin, the server's identity and credential),
/// in its own process group, with cwd `<root>`, stdout/stderr appended to
/// `<root>/agent/agent.out`, and `STRATUS_SERVER_ROOT=<root>` in its environment (how the
/// provider recognises its processes after a restart and never signals a recycled pid).
#[derive(Debug, Clone)]
pub struct LocalProvider {
    state_dir: PathBuf,
    agent_program: AgentProgram,
    leases: Leases,
    /// Launches under way per deployment. A launch runs on a blocking thread that outlives an
    /// aborted caller, so terminate waits for these before it sweeps unrecorded servers.
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
    blocking: crate::blocking::BlockingGate,
}

/// Counts one launch of a deployment as in flight until dropped.
struct InFlight {
    map: Arc<Mutex<HashMap<String, usize>>>,
    deployment: String,
}

impl InFlight {
    fn start(map: &Arc<Mutex<HashMap<String, usize>>>, deployment: &str) -> InFlight {
        *map.lock()
            .unwrap()
            .entry(deployment.to_string())
            .or_default() += 1;
        InFlight {
            map: map.clone(),
            deployment: deployment.to_string(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap();
        if let Some(n) = map.get_mut(&self.deployment) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.deployment);
            }
        }
    }
}

/// Longest terminate waits for launches in flight before sweeping: a launch blocks on a
/// directory setup and one fork/exec, seconds at most.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(60);

impl LocalProvider {
    /// Agents run as `agent_program`; a bare path is the `stratus` binary (`<path> agent …`).
    pub fn new(state_dir: PathBuf, agent_program: impl Into<AgentProgram>) -> LocalProvider {
        let agent_program = agent_program.into();
        // Created now so that its canonical path, which picks the address range, is stable;
        // a failure here resurfaces with context at the first launch.
        let _ = std::fs::create_dir_all(&state_dir);
        let leases = Leases::new(&state_dir);
        LocalProvider {
            state_dir,
            agent_program,
            leases,
            in_flight: Arc::default(),
            blocking: Default::default(),
        }
    }

    /// The root directory a server of `deployment` with `server_id` gets.
    pub fn server_root(&self, deployment: &str, server_id: &str) -> PathBuf {
        self.deployment_dir(deployment).join(server_id).join("root")
    }

    /// The directory of every server of `deployment`.
    fn deployment_dir(&self, deployment: &str) -> PathBuf {
        self.state_dir.join("servers").join(deployment)
    }

    /// The addresses currently leased in this state directory, with their holders
    /// as `(deployment, server_id)`.
    pub fn leased_addresses(
        &self,
    ) -> Result<Vec<(std::net::Ipv4Addr, String, String)>, ProviderError> {
        let leases = self.leases.list()?;
        Ok(leases
            .into_iter()
            .map(|(a, l)| (a, l.deployment, l.server_id))
            .collect())
    }

    fn launch_blocking(&self, req: LaunchRequest) -> Result<LaunchedServer, ProviderError> {
        check_name("deployment", &req.deployment)?;
        check_name("server id", &req.server_id)?;
        let root = self.server_root(&req.deployment, &req.server_id);
        self.clear_leftover_disk(&req, &root)?;
        // Only a root that exists can have an earlier agent: a new one skips the scan of
        // every process (which made launching N servers cost N scans of N processes).
        let retried = root.exists();
        let agent_dir = root.join("agent");
        let deployment_dir = self.deployment_dir(&req.deployment);
        crate::create_spreading_dir(&deployment_dir).map_err(ProviderError::io(format!(
            "creating {}",
            deployment_dir.display()
        )))?;
        for dir in [root.join("mnt/services"), agent_dir.clone()] {
            std::fs::create_dir_all(&dir)
                .map_err(ProviderError::io(format!("creating {}", dir.display())))?;
        }
        // A launch retried after a crash must not leave the first agent running beside the
        // second: stop whatever still runs for this root, and reuse its address lease.
        if retried {
            stop_stale_agents(&root);
        }
        crate::cgroup::remove_dead();
        let cgroup = crate::cgroup::agent_cgroup(&root)
            .and_then(|(name, cg)| crate::cgroup::prepare(&cg).then_some(name));
        // A retried launch's earlier agent may have stored a replaced credential: the new
        // agent starts from the bootstrap written below.
        let _ = std::fs::remove_file(agent_dir.join("credential"));

        let lease = Lease {
            deployment: req.deployment.clone(),
            server_id: req.server_id.clone(),
        };
        let address = match crate::capacity::max_servers(&self.state_dir)
            .and_then(|max| self.leases.acquire(lease, max))
        {
            Ok(address) => address,
            Err(e) => {
                // No address, no agent: nothing of this server may stay behind.
                let _ = crate::cgroup::destroy(&root);
                if let Some(dir) = root.parent() {
                    let _ = crate::disk::remove_tree(dir);
                }
                return Err(e);
            }
        };
        let bootstrap_file = agent_dir.join(stratus_protocol::bootstrap::BOOTSTRAP_FILE);
        let program_uid = match prepare_program_uid(address, &root).and_then(|uid| {
            write_bootstrap(&req, address, &bootstrap_file)?;
            Ok(uid)
        }) {
            Ok(uid) => uid,
            Err(e) => {
                let _ = self.leases.release(address);
                let _ = crate::cgroup::destroy(&root);
                return Err(e);
            }
        };
        let agent = crate::spawn::AgentSpawn {
            program: &self.agent_program,
            req: &req,
            root: &root,
            bootstrap_file: &bootstrap_file,
            program_uid,
        };
        match crate::spawn::spawn_agent(agent, cgroup) {
            Ok(pid) => {
                tracing::info!(deployment = %req.deployment, server = %req.server_id,
                    %address, pid, "local server launched");
                Ok(LaunchedServer {
                    server_id: req.server_id,
                    address,
                    handle: LocalHandle { root, pid }.to_handle(crate::LOCAL),
                })
            }
            Err(e) => {
                // The address was never used: give it back so it does not leak.
                let _ = self.leases.release(address);
                let _ = crate::cgroup::destroy(&root);
                Err(e)
            }
        }
    }

    /// A disk of this server id whose address is not leased any more belongs to a terminated
    /// server whose terminate could not remove it (a process of it was still alive): stop what
    /// is left of it and remove it, so the new server starts fresh. A launch retried after a
    /// crash still holds its lease and keeps its disk.
    fn clear_leftover_disk(&self, req: &LaunchRequest, root: &Path) -> Result<(), ProviderError> {
        let dir = root.parent().unwrap_or(root);
        let lease = Lease {
            deployment: req.deployment.clone(),
            server_id: req.server_id.clone(),
        };
        if !dir.exists() || self.leases.holds(&lease)? {
            return Ok(());
        }
        tracing::warn!(root = %root.display(), "removing the disk a terminated server left");
        stop_stale_agents(root);
        crate::cgroup::destroy(root).map_err(ProviderError::Cgroup)?;
        crate::disk::end(&self.state_dir, &req.deployment, &req.server_id, root, None).map(|_| ())
    }

    async fn terminate_group(
        &self,
        server: &LaunchedServer,
        grace: Duration,
    ) -> Result<(), ProviderError> {
        let LocalHandle { root, pid: pgid } = LocalHandle::of_server(server)?;
        // pid 0 and 1 would signal ourselves or init; such a record cannot be one of ours.
        if pgid > 1 && group_alive(pgid, &root) {
            let signal =
                |s| signal_group(pgid, s).map_err(|errno| ProviderError::Signal { pgid, errno });
            if signal(Signal::SIGTERM)? && !wait_gone(pgid, &root, grace).await {
                tracing::warn!(server = %server.server_id, pgid, "agent ignored SIGTERM; killing");
                signal(Signal::SIGKILL)?;
                if !wait_gone(pgid, &root, KILL_WAIT).await {
                    return Err(ProviderError::StillAlive { pgid });
                }
            }
        }
        // Whatever the agent left behind (or everything, if the agent died) goes with its cgroup
        // first, and whatever still runs as the server's program uid (a program that escaped it
        // where there are no cgroups) is killed next, before another server may get the uid.
        let (address, leases) = (server.address, self.leases.clone());
        self.blocking
            .run(move || {
                crate::cgroup::destroy(&root).map_err(ProviderError::Cgroup)?;
                end_program_uid(address);
                leases.release(address)
            })
            .await?
    }
}

/// Polls until the group has no live member of ours, or `limit` passes.
async fn wait_gone(pgid: u32, root: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if !group_alive(pgid, root) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

impl LocalProvider {
    /// The servers of `dep` on disk or leased that `known` lacks: their cgroups (agent and
    /// everything it started) and marked process groups are killed, their leases released
    /// and their disks removed.
    fn end_unrecorded_blocking(&self, dep: &str, known: &[String]) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.deployment_dir(dep))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        let leases = self.leases.list().unwrap_or_default();
        ids.extend(
            leases
                .values()
                .filter(|l| l.deployment == dep)
                .map(|l| l.server_id.clone()),
        );
        ids.sort();
        ids.dedup();
        ids.retain(|id| !known.contains(id) && check_name("server id", id).is_ok());
        for id in &ids {
            let root = self.server_root(dep, id);
            tracing::warn!(deployment = dep, server = %id, "ending a server its launch never recorded");
            let _ = crate::cgroup::destroy(&root);
            stop_stale_agents(&root);
            for (addr, l) in &leases {
                if l.deployment == dep && &l.server_id == id {
                    end_program_uid(*addr);
                    let _ = self.leases.release(*addr);
                }
            }
            if let Some(dir) = root.parent() {
                let _ = crate::disk::remove_tree(dir);
            }
        }
        ids
    }
}

/// The variable through which the operator makes every server's programs run as one shared
/// user (`stratus agent --program-user` reads it too, so agents inherit the choice).
const PROGRAM_USER_ENV: &str = "STRATUS_PROGRAM_USER";

/// Mode of a server root whose programs run as the server's own uid: root's, group the
/// server's gid, 0750, so that only the agent and the server's own programs may enter it and
/// other servers' programs reach nothing beneath it.
const PRIVATE_ROOT_MODE: u32 = 0o750;

/// Readies the program uid of the server leasing `address` (root only): kills whatever an
/// earlier holder of the uid left running, and closes `root` to every other uid. Returns the
/// uid the agent is to run programs as, or `None` when the agent is not root or the operator
/// chose one shared program user (`STRATUS_PROGRAM_USER`).
fn prepare_program_uid(
    address: std::net::Ipv4Addr,
    root: &Path,
) -> Result<Option<u32>, ProviderError> {
    let Some(uid) = crate::leases::program_uid(address) else {
        return Ok(None);
    };
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    crate::process::kill_user(uid).map_err(ProviderError::io(format!(
        "killing what still runs as program uid {uid}"
    )))?;
    forget_uid_leftovers(uid);
    if std::env::var_os(PROGRAM_USER_ENV).is_some() {
        return Ok(None);
    }
    close_root(root, uid)?;
    Ok(Some(uid))
}

/// Gives `root` (never through a link) to root and group `gid`, mode [`PRIVATE_ROOT_MODE`].
fn close_root(root: &Path, gid: u32) -> Result<(), ProviderError> {
    use std::os::unix::fs::PermissionsExt;
    let context = || format!("closing {} to other servers", root.display());
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(root)
        .map_err(ProviderError::io(context()))?;
    std::os::unix::fs::fchown(&dir, Some(0), Some(gid)).map_err(ProviderError::io(context()))?;
    dir.set_permissions(std::fs::Permissions::from_mode(PRIVATE_ROOT_MODE))
        .map_err(ProviderError::io(context()))
}

/// Sweeps what the uid left in the shared temporary directories and System V IPC.
fn forget_uid_leftovers(uid: u32) {
    let swept = crate::uid_leftovers::sweep(uid);
    if swept != crate::uid_leftovers::Swept::default() {
        tracing::info!(
            uid,
            ?swept,
            "swept what a program uid left outside its server"
        );
    }
}

/// Kills what still runs as the program uid of `address`'s server (root only): called while
/// the server still holds the lease, so every such process is that server's.
fn end_program_uid(address: std::net::Ipv4Addr) {
    let Some(uid) = crate::leases::program_uid(address) else {
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    if let Err(e) = crate::process::kill_user(uid) {
        tracing::warn!(uid, error = %e, "cannot kill what still runs as the program uid");
    }
    forget_uid_leftovers(uid);
}

/// Stops every process group still marked as running for `root` (blocking).
fn stop_stale_agents(root: &Path) {
    for pgid in marked_groups(root).into_iter().filter(|p| *p > 1) {
        tracing::warn!(root = %root.display(), pgid, "stopping an earlier agent of this server");
        let _ = signal_group(pgid, Signal::SIGTERM);
        let deadline = Instant::now() + STALE_GRACE;
        while group_alive(pgid, root) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        if group_alive(pgid, root) {
            let _ = signal_group(pgid, Signal::SIGKILL);
        }
    }
}

/// Writes the agent's bootstrap (`<root>/agent/bootstrap.json`, mode 0600): where its control
/// plane is, the certificate to pin, who the server is and its credential.
fn write_bootstrap(
    req: &LaunchRequest,
    address: std::net::Ipv4Addr,
    path: &Path,
) -> Result<(), ProviderError> {
    use stratus_protocol::BootstrapError;
    req.bootstrap(address.to_string())
        .write(path)
        .map_err(|e| match e {
            BootstrapError::Io { source, .. } => ProviderError::Io {
                context: format!("writing {}", path.display()),
                source,
            },
            other => ProviderError::Task(other.to_string()),
        })
}

/// Names become path components, so they must not be able to escape the state directory.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), ProviderError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ProviderError::InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

impl CloudProvider for LocalProvider {
    fn launch(&self, req: LaunchRequest) -> BoxFuture<'_, Result<LaunchedServer, ProviderError>> {
        let this = self.clone();
        let in_flight = InFlight::start(&self.in_flight, &req.deployment);
        Box::pin(async move {
            // Directory setup, the lease lock and fork/exec block; keep them off the runtime.
            // The guard goes with the blocking work, which goes on even if this future is
            // dropped (terminate aborting a launch).
            let gate = this.blocking.clone();
            gate.run(move || {
                let _in_flight = in_flight;
                this.launch_blocking(req)
            })
            .await?
        })
    }

    fn terminate<'a>(
        &'a self,
        server: &'a LaunchedServer,
        grace: Duration,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.terminate_group(server, grace))
    }

    fn describe<'a>(&'a self, handle: &'a ProviderHandle) -> BoxFuture<'a, Presence> {
        // Answered on the spot, as cheap as a look at the group's first member: recovery asks
        // this of every server on every pass.
        let presence = match LocalHandle::of(handle) {
            Ok(h) if h.pid > 1 && group_alive(h.pid, &h.root) => Presence::Exists,
            Ok(_) => Presence::Gone,
            Err(e) => Presence::Unknown(e.to_string()),
        };
        Box::pin(std::future::ready(presence))
    }

    fn root_of(&self, handle: &ProviderHandle) -> Result<String, ProviderError> {
        Ok(LocalHandle::of(handle)?.root.to_string_lossy().into_owned())
    }

    fn reattached(&self, handle: &ProviderHandle, agent_pid: u32) -> Option<ProviderHandle> {
        let mut local = LocalHandle::of(handle).ok()?;
        if local.pid == agent_pid {
            return None;
        }
        local.pid = agent_pid;
        Some(local.to_handle(&handle.provider))
    }

    fn capacity(&self) -> Result<Capacity, ProviderError> {
        Ok(Capacity {
            max: crate::capacity::max_servers(&self.state_dir)?,
            used: self.leases.list()?.len() as u64,
        })
    }

    fn end_unrecorded<'a>(
        &'a self,
        deployment: &'a str,
        known: &'a [String],
    ) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            let deadline = Instant::now() + IN_FLIGHT_WAIT;
            while self.in_flight.lock().unwrap().contains_key(deployment) {
                if Instant::now() >= deadline {
                    tracing::warn!(deployment, "a launch is still in flight; sweeping anyway");
                    break;
                }
                tokio::time::sleep(POLL).await;
            }
            let this = self.clone();
            let (dep, known) = (deployment.to_string(), known.to_vec());
            let gate = this.blocking.clone();
            gate.run(move || this.end_unrecorded_blocking(&dep, &known))
                .await
                .unwrap_or_default()
        })
    }

    fn end_disk<'a>(
        &'a self,
        deployment: &'a str,
        server: &'a LaunchedServer,
        keep: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<PathBuf>, ProviderError>> {
        let (gate, state, dep, server, keep) = (
            self.blocking.clone(),
            self.state_dir.clone(),
            deployment.to_string(),
            server.clone(),
            keep.map(str::to_string),
        );
        Box::pin(async move {
            crate::end_disk::check_end_disk(&dep, &server, keep.as_deref())?;
            let root = LocalHandle::of_server(&server)?.root;
            // A large tree takes a while to remove; keep it off the runtime.
            gate.run(move || {
                crate::disk::end(&state, &dep, &server.server_id, &root, keep.as_deref())
            })
            .await?
        })
    }
}
