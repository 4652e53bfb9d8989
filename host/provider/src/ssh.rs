//! The SSH provider (`type = "ssh"`): bring your own servers. Each entry of `hosts` is a slot
//! (the address a server gets and the host SSH reaches); a launch takes a free, reachable slot,
//! copies the `stratus` binary to the host once (`<remote-dir>/bin/stratus-<sha256 prefix>`),
//! writes the server's bootstrap over SSH's stdin and starts the agent there, detached, in
//! `<remote-dir>/servers/<deployment>/<server>/`. Terminate ends the agent and all it started;
//! ending the disk removes the server's directory, and the binary with the host's last server.
//! Settings: [`SshSettings`]; what runs on a host: `ssh_scripts.rs`.

use crate::ssh_command::{Input, KeyReader, Ssh, SshError};
use crate::ssh_handle::SshHandle;
use crate::ssh_settings::{SSH, SshSettings};
use crate::ssh_slots::{Holder, Slots};
use crate::{
    BoxFuture, Capacity, CloudProvider, LaunchRequest, LaunchedServer, Presence, ProviderError,
    ProviderFactory, ProviderHandle, ProviderSettings,
};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long preparing a server's directory may take on a host (beyond connecting), including
/// ending an earlier agent of the same server.
const PREPARE_LIMIT: Duration = Duration::from_secs(30);
/// How long copying the agent binary to a host may take.
const COPY_LIMIT: Duration = Duration::from_secs(600);
/// How long starting the agent may take.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long a describe, a listing or a disk's end may take (beyond connecting).
const QUICK_LIMIT: Duration = Duration::from_secs(30);
/// What terminate allows beyond `grace`: the forced kill and the wait for it.
const KILL_LIMIT: Duration = Duration::from_secs(15);
/// How long a server its launch never recorded gets to stop politely.
const UNRECORDED_GRACE: Duration = Duration::from_secs(2);
/// Where the SSH slots' program uids start: 0x7200_0000, above the local provider's range
/// (`PROGRAM_UID_BASE` 0x7000_0000 + fewer than 2^24) and below systemd's foreign range.
pub const SSH_PROGRAM_UID_BASE: u32 = 0x7200_0000;
/// The bits of a slot's address its program uid is made of (so two slots of one provider
/// must differ in them; see `ssh_settings`).
pub const SLOT_UID_MASK: u32 = 0x00FF_FFFF;
/// Hosts asked at once which machine they are.
const SURVEY_CONCURRENCY: usize = 32;
/// Hex digits of the binary's sha256 in its name on a host.
const BINARY_HASH_CHARS: usize = 16;
/// Where, under the state directory, the private key's short-lived files for `ssh -i` go.
const KEY_DIR: &str = "ssh/keys";
/// Agent options that name files on the control plane's machine, which a host does not have.
const LOCAL_ONLY_AGENT_OPTIONS: [&str; 2] = ["--cache-dir", "--cache-key-file"];

/// Builds SSH providers; registered in the control plane's `ProviderRegistry`.
pub struct SshFactory {
    state_dir: PathBuf,
    binary: Arc<AgentBinary>,
    keys: KeyReader,
    slots: Arc<Slots>,
}

impl SshFactory {
    /// `agent_program` is the `stratus` binary copied to hosts; keys are read through `keys`;
    /// the slot ledger and the short-lived key files live under `<state_dir>/ssh/`.
    pub fn new(
        state_dir: &Path,
        agent_program: PathBuf,
        keys: KeyReader,
    ) -> Result<SshFactory, ProviderError> {
        let slots = Slots::open(state_dir.join("ssh/slots.json"))?;
        // Key files a control plane that stopped mid-call left (one control plane per state
        // directory: none is in use now).
        let key_dir = state_dir.join(KEY_DIR);
        for entry in std::fs::read_dir(&key_dir).into_iter().flatten().flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(SshFactory {
            state_dir: state_dir.to_path_buf(),
            binary: Arc::new(AgentBinary::new(agent_program)),
            keys,
            slots: Arc::new(slots),
        })
    }
}

impl ProviderFactory for SshFactory {
    fn kind(&self) -> &str {
        SSH
    }

    fn create(
        &self,
        name: &str,
        settings: &ProviderSettings,
    ) -> Result<Arc<dyn CloudProvider>, ProviderError> {
        let settings = Arc::new(SshSettings::parse(name, settings)?);
        Ok(Arc::new(SshProvider {
            name: name.to_string(),
            ssh: Ssh {
                settings,
                keys: self.keys.clone(),
                key_dir: self.state_dir.join(KEY_DIR),
                control_dir: crate::ssh_command::control_dir(&self.state_dir.join("ssh/cm")),
            },
            slots: self.slots.clone(),
            binary: self.binary.clone(),
            machines: Default::default(),
        }))
    }
}

/// The `stratus` binary as hosts get it: its content-addressed name and size, found once.
struct AgentBinary {
    path: PathBuf,
    found: tokio::sync::OnceCell<(String, u64)>,
    /// One copy at a time per machine: servers launched together on one machine each found
    /// the binary missing and each copied it, filling a small disk with copies in flight.
    copying: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl AgentBinary {
    fn new(program: PathBuf) -> AgentBinary {
        // The running binary may be replaced on disk (a rebuild); what runs is what is copied.
        let path = match std::env::current_exe() {
            Ok(me) if me == program => PathBuf::from("/proc/self/exe"),
            _ => program,
        };
        AgentBinary {
            path,
            found: Default::default(),
            copying: Default::default(),
        }
    }

    /// The lock held while making sure `machine` has the binary.
    fn copy_lock(&self, machine: String) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.copying.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(machine).or_default().clone()
    }

    /// `stratus-<sha256 prefix>` and the size in bytes.
    async fn identity(&self) -> Result<&(String, u64), ProviderError> {
        self.found
            .get_or_try_init(|| async {
                let path = self.path.clone();
                tokio::task::spawn_blocking(move || hash_file(&path))
                    .await
                    .map_err(|e| ProviderError::Task(e.to_string()))?
            })
            .await
    }
}

fn hash_file(path: &Path) -> Result<(String, u64), ProviderError> {
    use sha2::Digest;
    use std::io::Read;
    let context = format!("reading the agent binary {}", path.display());
    let mut file = std::fs::File::open(path).map_err(ProviderError::io(context.clone()))?;
    let (mut hasher, mut size, mut buf) = (sha2::Sha256::new(), 0u64, vec![0u8; 1 << 20]);
    loop {
        let n = file
            .read(&mut buf)
            .map_err(ProviderError::io(context.clone()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let hash = hex::encode(hasher.finalize());
    Ok((format!("stratus-{}", &hash[..BINARY_HASH_CHARS]), size))
}

/// One `[providers.NAME]` of type `ssh`.
pub struct SshProvider {
    name: String,
    ssh: Ssh,
    slots: Arc<Slots>,
    binary: Arc<AgentBinary>,
    /// Which machine each slot is on, surveyed at the first launch (see [`Slots::candidates`]).
    machines: tokio::sync::OnceCell<HashMap<Ipv4Addr, String>>,
}

/// Why one slot did not take the server: the next may (unreachable), or none will.
enum Attempt {
    Unreachable(String),
    Failed(ProviderError),
}

impl SshProvider {
    fn settings(&self) -> &SshSettings {
        &self.ssh.settings
    }

    fn remote_dir(&self) -> &str {
        &self.settings().remote_dir
    }

    fn server_dir(&self, deployment: &str, server_id: &str) -> String {
        format!("{}/servers/{deployment}/{server_id}", self.remote_dir())
    }

    fn pid_file(&self, deployment: &str, server_id: &str) -> String {
        format!(
            "{}/servers/{deployment}/.{server_id}.pid",
            self.remote_dir()
        )
    }

    fn error(&self, e: SshError) -> ProviderError {
        ProviderError::Task(format!("provider `{}`: {e}", self.name))
    }

    /// The uid the programs of the server in slot `host` run as, when the agent can switch to
    /// it (logged in as root): one per slot, so servers sharing a machine are separated as local
    /// servers are, and everything of a server can be found and ended by its uid.
    fn program_uid(&self, host: Ipv4Addr) -> Option<u32> {
        (self.settings().user == "root").then(|| program_uid(host))
    }

    /// An agent on `host` could not dial a control plane on loopback.
    fn check_control(&self, host: Ipv4Addr, req: &LaunchRequest) -> Result<(), ProviderError> {
        let control = req.control_addr.to_string();
        let loopback = stratus_protocol::bootstrap::split_host_port(&control)
            .is_ok_and(|(h, _)| stratus_protocol::bootstrap::is_loopback_host(h));
        if loopback && !host.is_loopback() {
            return Err(ProviderError::Settings {
                provider: self.name.clone(),
                message: format!(
                    "the control plane's address {} is a loopback address, which the agent on \
                     host {host} cannot dial: start `stratus serve` with --listen and \
                     --advertise an address the hosts reach",
                    req.control_addr
                ),
            });
        }
        Ok(())
    }

    async fn launched(&self, req: &LaunchRequest) -> Result<LaunchedServer, ProviderError> {
        crate::local::check_name("deployment", &req.deployment)?;
        crate::local::check_name("server id", &req.server_id)?;
        let holder = Holder {
            deployment: req.deployment.clone(),
            server_id: req.server_id.clone(),
        };
        let mut unreachable = Vec::new();
        let machines = self.machines().await;
        for host in self
            .slots
            .candidates(&self.settings().hosts, &holder, machines)
        {
            self.check_control(host, req)?;
            if !self.slots.take(host, &holder)? {
                continue;
            }
            match self.start_on(host, req).await {
                Ok(server) => return Ok(server),
                Err(Attempt::Unreachable(reason)) => {
                    tracing::warn!(provider = %self.name, %host, %reason,
                        "slot unreachable; trying the next");
                    unreachable.push(reason);
                    self.slots.release(host, &holder)?;
                }
                Err(Attempt::Failed(e)) => {
                    self.abandon(host, req).await;
                    self.slots.release(host, &holder)?;
                    return Err(e);
                }
            }
        }
        Err(ProviderError::Settings {
            provider: self.name.clone(),
            message: format!(
                "no free reachable slot for server {} ({} of {} held{})",
                req.server_id,
                self.slots.used(&self.settings().hosts),
                self.settings().hosts.len(),
                match unreachable.is_empty() {
                    true => String::new(),
                    false => format!("; {}", unreachable.join("; ")),
                }
            ),
        })
    }

    /// Which machine each slot is on (those that answered), asked once, of all at once.
    async fn machines(&self) -> &HashMap<Ipv4Addr, String> {
        self.machines
            .get_or_init(|| async {
                let gate = Arc::new(tokio::sync::Semaphore::new(SURVEY_CONCURRENCY));
                let mut asked = tokio::task::JoinSet::new();
                for host in self.settings().hosts.clone() {
                    let (ssh, gate) = (self.ssh.clone(), gate.clone());
                    let (dir, limit) =
                        (self.remote_dir().to_string(), ssh.settings.connect_timeout);
                    asked.spawn(async move {
                        let _slot = gate.acquire_owned().await;
                        let script = crate::ssh_scripts::survey();
                        let what = "identifying the machine";
                        let args = [dir.as_str()];
                        let out = ssh.run(host, what, &script, &args, Input::Nothing, limit);
                        (host, out.await.ok().map(|o| o.stdout.trim().to_string()))
                    });
                }
                let mut machines = HashMap::new();
                while let Some(Ok((host, id))) = asked.join_next().await {
                    if let Some(id) = id.filter(|id| !id.is_empty()) {
                        machines.insert(host, id);
                    }
                }
                machines
            })
            .await
    }

    /// Brings the server up on `host`: its directory, the binary, the bootstrap, the agent.
    async fn start_on(
        &self,
        host: Ipv4Addr,
        req: &LaunchRequest,
    ) -> Result<LaunchedServer, Attempt> {
        let failed = |e: ProviderError| Attempt::Failed(e);
        let (binary, size) = self.binary.identity().await.map_err(failed)?;
        let dir = self.server_dir(&req.deployment, &req.server_id);
        let pid_file = self.pid_file(&req.deployment, &req.server_id);
        let bin = format!("{}/bin/{binary}", self.remote_dir());
        let tenths = tenths(UNRECORDED_GRACE);
        let uid = self
            .program_uid(host)
            .map(|u| u.to_string())
            .unwrap_or_default();
        // Slots of one machine share its disk and its copy of the binary (slot addresses of
        // an unsurveyed machine count as machines of their own).
        let machine = (self.machines().await.get(&host).cloned()).unwrap_or(host.to_string());
        let copy_lock = self.binary.copy_lock(machine);
        let copying = copy_lock.lock().await;
        let prepared = self
            .ssh
            .run(
                host,
                "preparing the server's directory",
                &crate::ssh_scripts::prepare(),
                &[
                    dir.as_str(),
                    bin.as_str(),
                    pid_file.as_str(),
                    tenths.as_str(),
                    uid.as_str(),
                ],
                Input::Nothing,
                PREPARE_LIMIT,
            )
            .await
            .map_err(|e| self.attempt(e))?;
        if prepared.stdout.trim() != "have" {
            self.copy_binary(host, binary, *size).await?;
        }
        drop(copying);
        let bootstrap = req.bootstrap(host.to_string()).to_json();
        let mut args = vec![dir.clone(), bin.clone(), pid_file.clone()];
        args.extend(agent_args(&req.agent_args));
        if let Some(uid) = self.program_uid(host) {
            args.extend(["--program-user".to_string(), format!("{uid}:{uid}")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut started = self.start_agent(host, &args, &bootstrap).await;
        if matches!(&started, Err(SshError::Failed { status: 3, .. })) {
            // The binary went with the host's last other server meanwhile: copy it again.
            self.copy_binary(host, binary, *size).await?;
            started = self.start_agent(host, &args, &bootstrap).await;
        }
        let out = started.map_err(|e| self.attempt(e))?;
        let handle = parse_started(&out.stdout)
            .map(|(pid, start_time, boot_id)| SshHandle {
                host,
                port: self.settings().port,
                user: self.settings().user.clone(),
                dir,
                pid,
                start_time,
                boot_id,
            })
            .ok_or_else(|| {
                failed(ProviderError::Task(format!(
                    "provider `{}`: host {host} did not say which process the agent is",
                    self.name
                )))
            })?;
        tracing::info!(provider = %self.name, deployment = %req.deployment,
            server = %req.server_id, %host, pid = handle.pid, "ssh server launched");
        Ok(LaunchedServer {
            server_id: req.server_id.clone(),
            address: host,
            handle: handle.to_handle(&self.name),
        })
    }

    async fn start_agent(
        &self,
        host: Ipv4Addr,
        args: &[&str],
        bootstrap: &str,
    ) -> Result<crate::ssh_command::Output, SshError> {
        let script = crate::ssh_scripts::start();
        let input = Input::Bytes(bootstrap.as_bytes());
        self.ssh
            .run(
                host,
                "starting the agent",
                &script,
                args,
                input,
                START_LIMIT,
            )
            .await
    }

    async fn copy_binary(&self, host: Ipv4Addr, name: &str, size: u64) -> Result<(), Attempt> {
        let bin_dir = format!("{}/bin", self.remote_dir());
        let size = size.to_string();
        let script = crate::ssh_scripts::copy();
        let input = Input::File(&self.binary.path);
        self.ssh
            .run(
                host,
                "copying the agent binary",
                &script,
                &[bin_dir.as_str(), name, size.as_str()],
                input,
                COPY_LIMIT,
            )
            .await
            .map(|_| ())
            .map_err(|e| self.attempt(e))
    }

    fn attempt(&self, e: SshError) -> Attempt {
        match e {
            SshError::Unreachable { .. } => Attempt::Unreachable(e.to_string()),
            other => Attempt::Failed(self.error(other)),
        }
    }

    /// Removes what a failed launch left on `host` (best effort: the sweep at terminate
    /// catches what this misses).
    async fn abandon(&self, host: Ipv4Addr, req: &LaunchRequest) {
        let ended = self
            .end_on_host(host, &req.deployment, &req.server_id)
            .await;
        if let Err(e) = ended {
            tracing::warn!(provider = %self.name, %host, error = %e,
                "cannot clear what a failed launch left");
        }
    }

    /// Ends whatever runs for a server by its pid file, then its directory.
    async fn end_on_host(&self, host: Ipv4Addr, dep: &str, id: &str) -> Result<(), SshError> {
        let (remote, grace) = (self.remote_dir(), tenths(UNRECORDED_GRACE));
        let script = crate::ssh_scripts::end_recorded();
        let uid = self
            .program_uid(host)
            .map(|u| u.to_string())
            .unwrap_or_default();
        let args = [remote, dep, id, grace.as_str(), uid.as_str()];
        let limit = UNRECORDED_GRACE + KILL_LIMIT;
        self.ssh
            .run(
                host,
                "ending the agent",
                &script,
                &args,
                Input::Nothing,
                limit,
            )
            .await?;
        let script = crate::ssh_scripts::end_disk();
        let args = [remote, dep, id, ""];
        self.ssh
            .run(
                host,
                "removing the server's directory",
                &script,
                &args,
                Input::Nothing,
                QUICK_LIMIT,
            )
            .await?;
        Ok(())
    }

    /// The handle of a server of this provider, refused when it points outside its hosts or
    /// its remote directory (a store row edited by hand).
    fn handle_of(&self, handle: &ProviderHandle) -> Result<SshHandle, ProviderError> {
        let h = SshHandle::of(handle)?;
        let servers = format!("{}/servers/", self.remote_dir());
        if !self.settings().hosts.contains(&h.host) || !h.dir.starts_with(&servers) {
            return Err(ProviderError::Handle {
                provider: self.name.clone(),
                message: format!(
                    "host {} or directory {} is not this provider's",
                    h.host, h.dir
                ),
            });
        }
        Ok(h)
    }

    async fn presence(&self, handle: &ProviderHandle) -> Presence {
        let h = match self.handle_of(handle) {
            Ok(h) => h,
            Err(e) => return Presence::Unknown(e.to_string()),
        };
        let (pid, start) = (h.pid.to_string(), h.start_time.to_string());
        let script = crate::ssh_scripts::describe();
        let args = [pid.as_str(), start.as_str(), h.boot_id.as_str()];
        match self
            .ssh
            .run(
                h.host,
                "describing the server",
                &script,
                &args,
                Input::Nothing,
                // Recovery asks every server: a host that does not answer at once is unknown.
                self.settings().connect_timeout,
            )
            .await
        {
            Ok(out) if out.stdout.trim() == "exists" => Presence::Exists,
            Ok(out) if out.stdout.trim() == "gone" => Presence::Gone,
            Ok(_) => Presence::Unknown(format!(
                "provider `{}`: host {} gave no answer on the server",
                self.name, h.host
            )),
            Err(e) => Presence::Unknown(self.error(e).to_string()),
        }
    }

    async fn ended(&self, server: &LaunchedServer, grace: Duration) -> Result<(), ProviderError> {
        let h = self.handle_of(&server.handle)?;
        let (pid, start, tenths) = (h.pid.to_string(), h.start_time.to_string(), tenths(grace));
        let uid = self
            .program_uid(h.host)
            .map(|u| u.to_string())
            .unwrap_or_default();
        let script = crate::ssh_scripts::terminate();
        let args = [
            pid.as_str(),
            start.as_str(),
            h.boot_id.as_str(),
            tenths.as_str(),
            uid.as_str(),
        ];
        self.ssh
            .run(
                h.host,
                "ending the agent",
                &script,
                &args,
                Input::Nothing,
                grace + KILL_LIMIT,
            )
            .await
            .map_err(|e| self.error(e))?;
        let deployment = deployment_of(&h.dir).unwrap_or_default();
        let holder = Holder {
            deployment: deployment.to_string(),
            server_id: server.server_id.clone(),
        };
        self.slots.release(h.host, &holder)
    }

    async fn disk_ended(
        &self,
        deployment: &str,
        server: &LaunchedServer,
        keep: Option<&str>,
    ) -> Result<Option<PathBuf>, ProviderError> {
        crate::end_disk::check_end_disk(deployment, server, keep)?;
        let h = self.handle_of(&server.handle)?;
        if h.dir != self.server_dir(deployment, &server.server_id) {
            return Err(ProviderError::Handle {
                provider: self.name.clone(),
                message: format!(
                    "{} is not the directory of server {}",
                    h.dir, server.server_id
                ),
            });
        }
        let script = crate::ssh_scripts::end_disk();
        let args = [
            self.remote_dir(),
            deployment,
            &server.server_id,
            keep.unwrap_or(""),
        ];
        let out = self
            .ssh
            .run(
                h.host,
                "ending the server's disk",
                &script,
                &args,
                Input::Nothing,
                QUICK_LIMIT,
            )
            .await
            .map_err(|e| self.error(e))?;
        // Where a kept disk is, as `host:path`: it is on the host, not here.
        Ok(keep.map(|_| PathBuf::from(format!("{}:{}", h.host, out.stdout.trim()))))
    }

    /// Servers of `dep` on the reachable hosts (or holding a slot) that `known` lacks.
    async fn unrecorded_ended(&self, dep: &str, known: &[String]) -> Vec<String> {
        if crate::local::check_name("deployment", dep).is_err() {
            return Vec::new();
        }
        let (mut ended, mut answered, mut failed) = (Vec::new(), Vec::new(), Vec::new());
        for host in self.settings().hosts.clone() {
            let script = crate::ssh_scripts::list();
            let listed = self
                .ssh
                .run(
                    host,
                    "listing servers",
                    &script,
                    &[self.remote_dir(), dep],
                    Input::Nothing,
                    QUICK_LIMIT,
                )
                .await;
            let Ok(listed) = listed else { continue };
            answered.push(host);
            for id in listed.stdout.lines() {
                if known.iter().any(|k| k == id)
                    || crate::local::check_name("server id", id).is_err()
                {
                    continue;
                }
                tracing::warn!(provider = %self.name, %host, deployment = dep, server = id,
                    "ending a server its launch never recorded");
                match self.end_on_host(host, dep, id).await {
                    Ok(()) => ended.push(id.to_string()),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot end an unrecorded server");
                        failed.push((host, id.to_string()));
                    }
                }
            }
        }
        // A slot is freed only where its host answered and nothing of the server is left
        // running: a twin of a lingering agent would share its address.
        for (host, id) in self.slots.of_deployment(dep) {
            let done = answered.contains(&host) && !failed.contains(&(host, id.clone()));
            if done && !known.contains(&id) {
                let holder = Holder {
                    deployment: dep.to_string(),
                    server_id: id.clone(),
                };
                let _ = self.slots.release(host, &holder);
                ended.push(id);
            }
        }
        ended.sort();
        ended.dedup();
        ended
    }
}

/// The program uid of slot `host`: [`SSH_PROGRAM_UID_BASE`] + the address's low 24 bits.
pub fn program_uid(host: Ipv4Addr) -> u32 {
    SSH_PROGRAM_UID_BASE + (u32::from(host) & SLOT_UID_MASK)
}

/// `--cache-dir`/`--cache-key-file` and their values dropped: they name the control plane's
/// files; an agent on a host compiles what it loads.
fn agent_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if LOCAL_ONLY_AGENT_OPTIONS.contains(&a.as_str()) {
            it.next();
        } else if !LOCAL_ONLY_AGENT_OPTIONS
            .iter()
            .any(|o| a.starts_with(&format!("{o}=")))
        {
            out.push(a.clone());
        }
    }
    out
}

/// `PID START BOOT-ID` as the start script prints it.
fn parse_started(out: &str) -> Option<(u32, u64, String)> {
    let mut words = out.split_whitespace();
    let pid = words.next()?.parse().ok()?;
    let start = words.next()?.parse().ok()?;
    let boot = words.next()?.to_string();
    Some((pid, start, boot))
}

/// The deployment in a server directory `…/servers/<deployment>/<server>`.
fn deployment_of(dir: &str) -> Option<&str> {
    dir.rsplit('/').nth(1)
}

/// A duration in tenths of a second, as the scripts count their waits.
fn tenths(d: Duration) -> String {
    (d.as_millis() / 100).max(1).to_string()
}

impl CloudProvider for SshProvider {
    fn launch(&self, req: LaunchRequest) -> BoxFuture<'_, Result<LaunchedServer, ProviderError>> {
        Box::pin(async move { self.launched(&req).await })
    }

    fn terminate<'a>(
        &'a self,
        server: &'a LaunchedServer,
        grace: Duration,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.ended(server, grace))
    }

    fn describe<'a>(&'a self, handle: &'a ProviderHandle) -> BoxFuture<'a, Presence> {
        Box::pin(self.presence(handle))
    }

    fn root_of(&self, handle: &ProviderHandle) -> Result<String, ProviderError> {
        Ok(self.handle_of(handle)?.dir)
    }

    fn capacity(&self) -> Result<Capacity, ProviderError> {
        let hosts = &self.settings().hosts;
        Ok(Capacity {
            max: hosts.len() as u64,
            used: self.slots.used(hosts),
        })
    }

    fn end_disk<'a>(
        &'a self,
        deployment: &'a str,
        server: &'a LaunchedServer,
        keep: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<PathBuf>, ProviderError>> {
        Box::pin(self.disk_ended(deployment, server, keep))
    }

    fn end_unrecorded<'a>(
        &'a self,
        deployment: &'a str,
        known: &'a [String],
    ) -> BoxFuture<'a, Vec<String>> {
        Box::pin(self.unrecorded_ended(deployment, known))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_arguments_naming_the_control_planes_files_are_dropped() {
        let args: Vec<String> = [
            "--cache-dir",
            "/s/cache",
            "--cache-key-file",
            "/s/keys/plugin-cache-key",
            "--cache-dir=/x",
            "--max-component-bytes",
            "10",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(agent_args(&args), ["--max-component-bytes", "10"]);
    }

    #[test]
    fn each_slot_has_a_program_uid_of_its_own_outside_the_local_range() {
        let a = program_uid("10.231.7.2".parse().unwrap());
        let b = program_uid("10.231.7.3".parse().unwrap());
        assert_ne!(a, b);
        assert_eq!(a, 0x7200_0000 + (231 << 16) + (7 << 8) + 2);
        let local_top = crate::PROGRAM_UID_BASE + crate::ADDRESS_COUNT;
        for uid in [a, b, program_uid(Ipv4Addr::new(255, 255, 255, 254))] {
            assert!(uid > local_top && uid < 2_147_352_576, "{uid}");
        }
    }

    #[test]
    fn the_start_scripts_answer_is_read_strictly() {
        assert_eq!(
            parse_started("4242 987 0b2c-1e7e\n"),
            Some((4242, 987, "0b2c-1e7e".into()))
        );
        assert_eq!(parse_started("4242 987"), None);
        assert_eq!(parse_started("x 987 b"), None);
        assert_eq!(deployment_of("/r/servers/shop/app-1"), Some("shop"));
        assert_eq!(tenths(Duration::from_secs(10)), "100");
        assert_eq!(tenths(Duration::ZERO), "1");
    }

    fn factory(dir: &Path) -> SshFactory {
        let keys: KeyReader = Arc::new(|_| Err("no keys here".into()));
        SshFactory::new(dir, "/bin/true".into(), keys).unwrap()
    }

    fn table(known_hosts: &Path, hosts: &[&str]) -> ProviderSettings {
        use crate::SettingValue;
        ProviderSettings::from([
            (
                "hosts".into(),
                SettingValue::List(hosts.iter().map(|h| h.to_string()).collect()),
            ),
            ("identity-key".into(), SettingValue::Key("lab-ssh".into())),
            (
                "known-hosts".into(),
                SettingValue::Text(known_hosts.to_string_lossy().into_owned()),
            ),
        ])
    }

    /// A loopback control plane with a host elsewhere is refused before anything reaches the
    /// host, naming both; an unreachable key is an error that names the key, not its value.
    #[tokio::test]
    async fn a_launch_is_refused_before_ssh_when_the_agent_could_not_dial_back() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        std::fs::write(&kh, "").unwrap();
        let f = factory(dir.path());
        let p = f.create("lab", &table(&kh, &["10.231.250.2"])).unwrap();
        assert_eq!(p.capacity().unwrap(), Capacity { max: 1, used: 0 });
        let req = LaunchRequest {
            deployment: "shop".into(),
            server_id: "app-1".into(),
            server_name: "app-1".into(),
            control_addr: "127.0.0.1:7000".parse().unwrap(),
            fingerprint: stratus_protocol::Fingerprint::of(b"control certificate"),
            credential: "sekrit-credential".into(),
            agent_args: vec![],
        };
        let e = p.launch(req.clone()).await.unwrap_err().to_string();
        assert!(
            e.contains("127.0.0.1:7000") && e.contains("10.231.250.2"),
            "{e}"
        );
        assert_eq!(p.capacity().unwrap().used, 0, "no slot stays taken");
        let mut far = req;
        far.control_addr = "10.231.250.1:7000".parse().unwrap();
        let e = p.launch(far).await.unwrap_err().to_string();
        assert!(e.contains("identity-key") && e.contains("lab-ssh"), "{e}");
        assert!(!e.contains("sekrit"), "{e}");
        assert_eq!(p.capacity().unwrap().used, 0);
    }

    /// A key file a control plane killed mid-call left does not outlive the next start.
    #[test]
    fn key_files_left_by_a_stopped_control_plane_are_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let left = dir.path().join(KEY_DIR).join("id-4242-0");
        std::fs::create_dir_all(left.parent().unwrap()).unwrap();
        std::fs::write(&left, "-----BEGIN OPENSSH PRIVATE KEY-----").unwrap();
        let _factory = factory(dir.path());
        assert!(!left.exists());
    }

    #[test]
    fn a_handle_outside_the_providers_hosts_or_tree_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        std::fs::write(&kh, "").unwrap();
        let f = factory(dir.path());
        let p = f.create("lab", &table(&kh, &["10.231.250.2"])).unwrap();
        let h = SshHandle {
            host: "10.231.250.2".parse().unwrap(),
            port: 22,
            user: "root".into(),
            dir: "/var/lib/stratus-agent/servers/shop/app-1".into(),
            pid: 4242,
            start_time: 1,
            boot_id: "ab-cd".into(),
        };
        assert_eq!(p.root_of(&h.to_handle("lab")).unwrap(), h.dir);
        let mut other_host = h.clone();
        other_host.host = "10.231.250.3".parse().unwrap();
        let mut other_dir = h.clone();
        other_dir.dir = "/srv/servers/shop/app-1".into();
        for bad in [other_host, other_dir] {
            let e = p.root_of(&bad.to_handle("lab")).unwrap_err().to_string();
            assert!(e.contains("`lab`"), "{e}");
        }
    }
}
