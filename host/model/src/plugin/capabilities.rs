//! What a plugin may do: the `[capabilities]` table of `plugin.toml`, and the operator's
//! narrowing of it from the deployment file. Absent keys deny; nothing here widens.

use crate::context::World;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

/// Largest memory cap a plugin may ask for; the pooling allocator reserves address space for it.
pub const MAX_MEMORY_MB: u64 = 1024;
/// Disk a plugin's writable directories may use when the manifest does not say (1 GiB).
pub const DEFAULT_DISK_MB: u64 = 1024;
/// Largest `disk-mb` a manifest may ask for (1 TiB); bounds the arithmetic, not the disk.
pub const MAX_DISK_MB: u64 = 1 << 20;
/// Tasks (processes and threads) a service's programs may have at once when the manifest does
/// not say: room for a threaded server such as mariadbd or haproxy and its helpers.
pub const DEFAULT_PROCESSES: u64 = 256;
/// Largest `processes` a manifest may ask for: enough for any one service, far below the
/// machine's own limits, so one plugin cannot exhaust the pid space.
pub const MAX_PROCESSES: u64 = 4096;

#[path = "program_env.rs"]
pub mod program_env;
pub use program_env::EnvPattern;

/// The granted capabilities of one plugin (after defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Capabilities {
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Cap for the captured stdout and for stderr (each), and for `run`'s outputs.
    #[serde(default = "default_output_bytes")]
    pub output_bytes: u64,
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    #[serde(default)]
    pub programs: Vec<Program>,
    #[serde(default)]
    pub network: Vec<NetworkGrant>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Variables `run` and `spawn` may pass to programs (see [`program_env`]).
    #[serde(default)]
    pub program_env: Vec<EnvPattern>,
    /// Most tasks (processes and threads) the service's programs may have at once.
    #[serde(default = "default_processes")]
    pub processes: u64,
    /// MiB the plugin's writable directories may use; checked after each hook (not a quota).
    #[serde(default = "default_disk_mb")]
    pub disk_mb: u64,
    /// Who the plugin's programs run as when the agent is root (`cm` world only for `root`).
    #[serde(default)]
    pub run_as: RunAs,
}

/// Who a plugin's programs (`host.run`, `host.spawn`) run as when the agent runs as root.
/// Ordered from least to most privileged, so narrowing compares them.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum RunAs {
    /// The agent's unprivileged program user (no supplementary groups, no new privileges).
    #[default]
    ProgramUser,
    /// The agent's own user (root): only configuration-management tools, which configure the
    /// whole server, need it.
    Root,
}

impl RunAs {
    /// The worlds that may declare `root`.
    pub fn root_supported_in(world: World) -> bool {
        world == World::Cm
    }
}

impl fmt::Display for RunAs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunAs::ProgramUser => "program-user",
            RunAs::Root => "root",
        })
    }
}

impl TryFrom<&str> for RunAs {
    type Error = String;
    fn try_from(s: &str) -> Result<RunAs, String> {
        match s {
            "program-user" => Ok(RunAs::ProgramUser),
            "root" => Ok(RunAs::Root),
            other => Err(format!(
                "run-as `{other}` is not known: expected `program-user` or `root`"
            )),
        }
    }
}

fn default_memory_mb() -> u64 {
    64
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_output_bytes() -> u64 {
    64 * 1024
}
fn default_processes() -> u64 {
    DEFAULT_PROCESSES
}
fn default_disk_mb() -> u64 {
    DEFAULT_DISK_MB
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            memory_mb: default_memory_mb(),
            timeout_ms: default_timeout_ms(),
            output_bytes: default_output_bytes(),
            dirs: Vec::new(),
            programs: Vec::new(),
            network: Vec::new(),
            env: BTreeMap::new(),
            program_env: Vec::new(),
            processes: default_processes(),
            disk_mb: default_disk_mb(),
            run_as: RunAs::default(),
        }
    }
}

/// Which of the server's directories a grant names. None of them covers the agent-private
/// area `<server root>/agent/` (credential, sealed packages, reply cache, logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DirKind {
    /// The service's own directory (`service` and `proxy` worlds).
    Service,
    /// A CM unit's work directory, `<root>/var/lib/stratus/cm/<unit>` (`cm` world).
    WorkDir,
    /// The server's configuration directory, `<root>/etc` (`cm` world).
    ServerConfig,
}

impl DirKind {
    /// The kinds a world may be granted: a grant of any other is refused when the manifest
    /// is loaded, since the world's calls never carry that directory.
    pub fn supported_in(world: World) -> &'static [DirKind] {
        match world {
            World::Service | World::Proxy => &[DirKind::Service],
            World::Cm => &[DirKind::WorkDir, DirKind::ServerConfig],
            World::Scaler | World::CloudDriver => &[],
        }
    }
}

impl fmt::Display for DirKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DirKind::Service => "service",
            DirKind::WorkDir => "work-dir",
            DirKind::ServerConfig => "server-config",
        })
    }
}

impl TryFrom<String> for DirKind {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "service" => Ok(DirKind::Service),
            "work-dir" => Ok(DirKind::WorkDir),
            "server-config" => Ok(DirKind::ServerConfig),
            "server-root" => Err("dir `server-root` is no longer granted (it covered the agent's \
                 credential and sealed packages): use `server-config` for the server's `<root>/etc` \
                 and `work-dir` for the unit's own files"
                .into()),
            other => Err(format!(
                "unknown dir `{other}`: expected `service`, `work-dir` or `server-config`"
            )),
        }
    }
}

impl From<DirKind> for String {
    fn from(d: DirKind) -> String {
        d.to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    pub dir: DirKind,
    pub access: Access,
}

/// An absolute, lexically normal program path (no `.`/`..`, no trailing slash), or
/// `service:<relative path>` for a program shipped in the package, which resolves to
/// `<service_dir>/<relative path>` per call (the service directory differs per server).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Program(String);

/// Marks a program path relative to the service directory.
const SERVICE_PREFIX: &str = "service:";

impl Program {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `program` (normalised) is this entry, with `service_dir` the call's own.
    pub fn matches(&self, program: &Path, service_dir: Option<&Path>) -> bool {
        match self.0.strip_prefix(SERVICE_PREFIX) {
            None => Path::new(&self.0) == program,
            Some(rel) => service_dir
                .and_then(|d| normalize(&d.join(rel)))
                .is_some_and(|p| p == program),
        }
    }
}

impl TryFrom<String> for Program {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if let Some(rel) = s.strip_prefix(SERVICE_PREFIX) {
            let normal = !rel.is_empty()
                && !rel.ends_with('/')
                && Path::new(rel)
                    .components()
                    .all(|c| matches!(c, Component::Normal(_)));
            if !normal || rel.contains("//") {
                return Err(format!(
                    "program `{s}` must be `service:` and a normal relative path (e.g. `service:bin/app`)"
                ));
            }
            return Ok(Program(s));
        }
        let normal = normalize(Path::new(&s))
            .ok_or_else(|| format!("program `{s}` must be an absolute path"))?;
        if normal.as_os_str() != s.as_str() || s == "/" {
            return Err(format!(
                "program `{s}` must be a normal absolute path to a file (e.g. `{}`)",
                normal.display()
            ));
        }
        Ok(Program(s))
    }
}

impl From<Program> for String {
    fn from(p: Program) -> String {
        p.0
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lexically normalises an absolute path: drops `.`, resolves `..`, collapses slashes.
/// Returns `None` for relative paths. No filesystem access, so symlinks are not resolved.
pub fn normalize(path: &Path) -> Option<PathBuf> {
    if !path.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(p) => out.push(p),
        }
    }
    Some(out)
}

/// Where a plugin may connect: `host:port`, port `*` for any, host `self` for this server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NetworkGrant {
    pub host: NetHost,
    /// `None` means any port.
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetHost {
    /// The address of the server the hook runs on.
    SelfServer,
    Ip(IpAddr),
}

impl NetworkGrant {
    /// Whether a connection to `ip:port` is covered, with `server` this server's address.
    pub fn allows(&self, ip: IpAddr, port: u16, server: Option<IpAddr>) -> bool {
        let host_ok = match self.host {
            NetHost::Ip(h) => h == ip,
            NetHost::SelfServer => server == Some(ip),
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }

    /// Whether every connection `other` allows is also allowed by `self`.
    pub fn covers(&self, other: &NetworkGrant) -> bool {
        self.host == other.host && (self.port.is_none() || self.port == other.port)
    }
}

impl TryFrom<String> for NetworkGrant {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad =
            || format!("network grant `{s}` must be `host:port` (port may be `*`, host `self`)");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = match host {
            "self" => NetHost::SelfServer,
            "localhost" => NetHost::Ip(IpAddr::from([127, 0, 0, 1])),
            h => NetHost::Ip(h.parse().map_err(|_| bad())?),
        };
        let port = match port {
            "*" => None,
            p => Some(p.parse().map_err(|_| bad())?),
        };
        Ok(NetworkGrant { host, port })
    }
}

impl From<NetworkGrant> for String {
    fn from(g: NetworkGrant) -> String {
        g.to_string()
    }
}

impl fmt::Display for NetworkGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host {
            NetHost::SelfServer => f.write_str("self")?,
            NetHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            NetHost::Ip(ip) => write!(f, "{ip}")?,
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => f.write_str(":*"),
        }
    }
}

/// The operator's narrowing from the deployment file; `None` keeps the manifest's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CapabilityOverride {
    pub memory_mb: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub output_bytes: Option<u64>,
    pub dirs: Option<Vec<DirGrant>>,
    pub programs: Option<Vec<Program>>,
    pub network: Option<Vec<NetworkGrant>>,
    /// Env keys to keep; values always come from the manifest.
    pub env: Option<Vec<String>>,
    pub program_env: Option<Vec<EnvPattern>>,
    pub processes: Option<u64>,
    pub disk_mb: Option<u64>,
    /// `program-user` takes `root` away; `root` on a `program-user` plugin widens.
    #[serde(default)]
    pub run_as: Option<RunAs>,
}

/// The operator tried to grant more than the plugin's manifest declares.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the operator's capabilities widen the plugin's manifest: {}", .widened.join("; "))]
pub struct NarrowError {
    /// One entry per widened capability, e.g. `memory-mb 128 > 64`.
    pub widened: Vec<String>,
}

impl Capabilities {
    /// Applies the operator's override, which may only take away.
    pub fn narrow(&self, op: &CapabilityOverride) -> Result<Capabilities, NarrowError> {
        let mut widened = Vec::new();
        let mut limit = |name: &str, mine: u64, theirs: Option<u64>| match theirs {
            Some(v) if v > mine => {
                widened.push(format!("{name} {v} > {mine}"));
                mine
            }
            // Zero would make every call fail at once; it is never what an operator means.
            Some(0) => {
                widened.push(format!("{name} 0 is not a usable limit"));
                mine
            }
            Some(v) => v,
            None => mine,
        };
        let memory_mb = limit("memory-mb", self.memory_mb, op.memory_mb);
        let timeout_ms = limit("timeout-ms", self.timeout_ms, op.timeout_ms);
        let output_bytes = limit("output-bytes", self.output_bytes, op.output_bytes);
        let processes = limit("processes", self.processes, op.processes);
        let disk_mb = limit("disk-mb", self.disk_mb, op.disk_mb);

        let dirs = match &op.dirs {
            None => self.dirs.clone(),
            Some(dirs) => {
                for d in dirs {
                    match self.dirs.iter().find(|m| m.dir == d.dir) {
                        None => widened.push(format!("dir {} is not granted", d.dir)),
                        Some(m) if d.access > m.access => {
                            widened.push(format!("dir {} is only read-only", d.dir))
                        }
                        Some(_) => {}
                    }
                }
                dirs.clone()
            }
        };
        let programs = match &op.programs {
            None => self.programs.clone(),
            Some(ps) => {
                for p in ps.iter().filter(|p| !self.programs.contains(p)) {
                    widened.push(format!("program {p} is not granted"));
                }
                ps.clone()
            }
        };
        let network = match &op.network {
            None => self.network.clone(),
            Some(ns) => {
                for n in ns
                    .iter()
                    .filter(|n| !self.network.iter().any(|m| m.covers(n)))
                {
                    widened.push(format!("network {n} is not granted"));
                }
                ns.clone()
            }
        };
        let env = match &op.env {
            None => self.env.clone(),
            Some(keys) => {
                for k in keys.iter().filter(|k| !self.env.contains_key(*k)) {
                    widened.push(format!("env {k} is not declared"));
                }
                let keep = |k: &String| keys.contains(k);
                self.env
                    .iter()
                    .filter(|(k, _)| keep(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }
        };
        let program_env = match &op.program_env {
            None => self.program_env.clone(),
            Some(ps) => {
                for p in ps
                    .iter()
                    .filter(|p| !self.program_env.iter().any(|m| m.covers(p)))
                {
                    widened.push(format!("program-env {p} is not granted"));
                }
                ps.clone()
            }
        };
        let run_as = match op.run_as {
            Some(r) if r > self.run_as => {
                widened.push(format!(
                    "run-as {r} is not granted (the manifest's run-as is {})",
                    self.run_as
                ));
                self.run_as
            }
            Some(r) => r,
            None => self.run_as,
        };
        if !widened.is_empty() {
            return Err(NarrowError { widened });
        }
        Ok(Capabilities {
            memory_mb,
            timeout_ms,
            output_bytes,
            dirs,
            programs,
            network,
            env,
            program_env,
            processes,
            disk_mb,
            run_as,
        })
    }

    /// The grant for one directory kind, if any.
    pub fn dir(&self, kind: DirKind) -> Option<Access> {
        self.dirs.iter().find(|d| d.dir == kind).map(|d| d.access)
    }

    /// Whether `program` (already normalised) is allow-listed by an absolute entry.
    pub fn allows_program(&self, program: &Path) -> bool {
        self.allows_program_in(program, None)
    }

    /// Like `allows_program`, also resolving `service:` entries against `service_dir`.
    pub fn allows_program_in(&self, program: &Path, service_dir: Option<&Path>) -> bool {
        self.programs
            .iter()
            .any(|p| p.matches(program, service_dir))
    }
}

#[cfg(test)]
#[path = "capabilities_tests.rs"]
mod tests;
