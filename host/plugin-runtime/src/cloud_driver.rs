//! Cloud drivers: `cloud-driver` components (`wit/cloud-driver.wit`), enStratus's cloud
//! drivers. A driver brings servers up (`launch-server`), says whether they still exist
//! (`describe-server`) and ends them (`terminate-server`) through its cloud's API.
//!
//! A driver is third-party code that holds the cloud's credentials during a call, so it gets
//! as little as a scaler plus one thing: outgoing HTTP to the origins the operator granted
//! (`cloud_driver_http.rs`). Its WASI context is empty (no directories, environment,
//! arguments, stdin or sockets; stdout discarded, stderr kept only for a panic message), its
//! memory and time are capped, each call runs in a fresh store, and every string it returns
//! is checked and redacted of the call's secrets before anyone sees it.

use crate::capabilities::Capabilities;
use crate::cloud_driver_http::{OriginGate, Refusals};
use crate::limits::Limiter;
use crate::output::Redactor;
use crate::runtime::Runtime;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stratus_model::context::World;
use wasmtime::Store;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView};

pub use crate::cloud_driver_http::{
    CONNECT_TIMEOUT, FIRST_BYTE_TIMEOUT, MAX_REQUESTS_PER_CALL, MAX_RESPONSE_BYTES,
    MAX_RESPONSE_HEAD_BYTES, Origin,
};
pub use crate::cloud_driver_settings::{
    DriverSettings, HOST_KEYS, MAX_GRANTED_ORIGINS, SettingsError,
};

mod bindings {
    wasmtime::component::bindgen!({
        world: "stratus:plugin/cloud-driver",
        path: "../../wit",
        exports: { default: async },
    });
}

use bindings::CloudDriverPre;
use bindings::exports::stratus::plugin::cloud_servers as wit;

/// Most memory a driver may have, whatever its manifest asks: it builds a few requests and
/// parses answers of at most [`MAX_RESPONSE_BYTES`].
pub const MAX_DRIVER_MEMORY_MB: u64 = 256;
/// Most time one driver call may take, whatever its manifest asks: a launch waits for it, and
/// a cloud API answers in seconds.
pub const MAX_DRIVER_TIMEOUT_MS: u64 = 60_000;
/// Longest error message kept from a driver (after control characters are stripped).
pub const MAX_DRIVER_ERROR_BYTES: usize = 1024;
/// Longest server id a driver may return; the host stores it and shows it (an EC2 instance
/// id is 19 characters).
pub const MAX_HANDLE_ID_BYTES: usize = 256;
/// Bytes of a driver's stderr kept, to name a panic.
const STDERR_BYTES: usize = 4096;
/// Slack for the tokio backstop beyond the epoch deadline: it ends a driver waiting in a host
/// call (an HTTP response that trickles), where epochs are not checked.
const BACKSTOP_SLACK: Duration = Duration::from_millis(250);

/// What every call of a driver gets, from the provider's settings and key management.
#[derive(Clone, Default)]
pub struct DriverConfig {
    /// The provider's settings for the driver (`endpoint`, `region`, ...), in order.
    pub settings: Vec<(String, String)>,
    /// Secrets by the name the driver knows them by; redacted from everything it returns.
    pub secrets: Vec<(String, String)>,
    /// The only origins the driver may send requests to.
    pub http: Vec<Origin>,
}

impl fmt::Debug for DriverConfig {
    // Configurations get logged; secret values must not be.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secrets: Vec<&str> = self.secrets.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("DriverConfig")
            .field("settings", &self.settings)
            .field("secrets", &secrets)
            .field("http", &self.http)
            .finish()
    }
}

/// How a driver finds a server again (stored by the host as the server's provider handle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHandle {
    /// The cloud's id of the server, e.g. an EC2 instance id.
    pub id: String,
    /// The server's address, when the cloud told it.
    pub address: Option<std::net::IpAddr>,
}

/// What the cloud says of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerState {
    Pending,
    Running,
    Stopping,
    /// Ended, or unknown to the cloud.
    Gone,
}

/// Requests the host refused during a call; shown after the error they explain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refused(pub Vec<String>);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.0.is_empty() {
            write!(f, " (the host refused its requests: {})", self.0.join("; "))?;
        }
        Ok(())
    }
}

/// Why a driver call did not give an answer. Every message names the driver (its package
/// path when it could not be loaded) and never holds a secret of the call.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("cloud driver package {package}: {reason}")]
    Package { package: PathBuf, reason: String },
    #[error("cloud driver `{name}` ran past its time limit of {limit_ms} ms{refused}")]
    Timeout {
        name: String,
        limit_ms: u64,
        refused: Refused,
    },
    #[error("cloud driver `{name}` ran out of memory (limit {limit_mb} MiB)")]
    OutOfMemory { name: String, limit_mb: u64 },
    #[error("cloud driver `{name}` trapped: {reason}{refused}")]
    Trap {
        name: String,
        reason: String,
        refused: Refused,
    },
    #[error("cloud driver `{name}` failed: {message}{refused}")]
    Driver {
        name: String,
        message: String,
        retryable: bool,
        refused: Refused,
    },
    #[error("cloud driver `{name}` returned an unusable server handle: {reason}")]
    Handle { name: String, reason: String },
    #[error("cannot run cloud driver `{name}`: {reason}")]
    Host { name: String, reason: String },
}

impl DriverError {
    /// Whether trying again later may succeed: the driver said so, or it ran out of time.
    pub fn retryable(&self) -> bool {
        match self {
            DriverError::Driver { retryable, .. } => *retryable,
            DriverError::Timeout { .. } => true,
            _ => false,
        }
    }
}

/// The store of one driver call.
struct DriverState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    gate: OriginGate,
    limiter: Limiter,
}

impl wasmtime_wasi::WasiView for DriverState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for DriverState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.gate,
        }
    }
}

/// A loaded cloud driver, ready to call; cheap to clone.
#[derive(Clone)]
pub struct CloudDriver {
    inner: Arc<Loaded>,
}

struct Loaded {
    runtime: Runtime,
    name: String,
    sha256: String,
    capabilities: Capabilities,
    pre: CloudDriverPre<DriverState>,
    /// Verifies `https` origins with the system's roots; None when they cannot be read.
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// One call of the `cloud-servers` interface.
enum Call {
    Launch(wit::LaunchRequest),
    Describe(wit::ServerHandle, wit::DriverConfig),
    Terminate(wit::ServerHandle, wit::DriverConfig),
}

/// What a call answered.
enum Answer {
    Handle(wit::ServerHandle),
    State(wit::ServerState),
    Done,
}

impl Runtime {
    /// Loads the cloud-driver package at `package` (a directory with `plugin.toml` and the
    /// component): read within bounds without following links, compiled once (through the
    /// code cache), version-checked and linked against WASI and `wasi:http` only.
    pub async fn load_cloud_driver(&self, package: &Path) -> Result<CloudDriver, DriverError> {
        let bad = |reason: String| DriverError::Package {
            package: package.to_owned(),
            reason,
        };
        let dir = package.to_owned();
        let limit = self.inner.max_component_bytes;
        let (manifest, bytes) =
            tokio::task::spawn_blocking(move || crate::scaler::read_package(&dir, limit))
                .await
                .map_err(|e| bad(format!("read task failed: {e}")))?
                .map_err(bad)?;
        if manifest.plugin.world != World::CloudDriver {
            return Err(bad(format!(
                "declares world `{}`, but a provider needs a `cloud-driver` plugin",
                manifest.plugin.world
            )));
        }
        let path = package.join(&manifest.plugin.component);
        let (component, sha256) = self.compile_checked(bytes, path).await.map_err(bad)?;
        let pre = driver_linker(&self.inner.engine)
            .and_then(|l| l.instantiate_pre(&component))
            .and_then(CloudDriverPre::new)
            .map_err(|e| bad(format!("not a cloud-driver component: {e:#}")))?;
        Ok(CloudDriver {
            inner: Arc::new(Loaded {
                runtime: self.clone(),
                name: manifest.plugin.name,
                sha256,
                capabilities: manifest.capabilities,
                pre,
                tls: crate::cloud_driver_http::system_tls(),
            }),
        })
    }
}

/// WASI (over an empty context) and `wasi:http` (through the call's gate), nothing else.
fn driver_linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<DriverState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    Ok(linker)
}

impl CloudDriver {
    /// The driver's name from its manifest.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// sha256 of the driver's component, hex.
    pub fn sha256(&self) -> &str {
        &self.inner.sha256
    }

    /// Brings up a server named `server_name` whose agent starts from `bootstrap` (a secret:
    /// redacted like the configuration's secrets).
    pub async fn launch(
        &self,
        server_name: &str,
        bootstrap: &str,
        config: &DriverConfig,
    ) -> Result<ServerHandle, DriverError> {
        let request = wit::LaunchRequest {
            server_name: server_name.to_owned(),
            bootstrap: bootstrap.to_owned(),
            config: wit_config(config),
        };
        let redactor = redactor(config, Some(bootstrap));
        match self.run(Call::Launch(request), config, &redactor).await? {
            Answer::Handle(h) => self.checked_handle(h, &redactor),
            _ => Err(self.host("launch-server gave another answer".into())),
        }
    }

    /// What the cloud says of the server `handle` names.
    pub async fn describe(
        &self,
        handle: &ServerHandle,
        config: &DriverConfig,
    ) -> Result<ServerState, DriverError> {
        let call = Call::Describe(wit_handle(handle), wit_config(config));
        match self.run(call, config, &redactor(config, None)).await? {
            Answer::State(s) => Ok(match s {
                wit::ServerState::Pending => ServerState::Pending,
                wit::ServerState::Running => ServerState::Running,
                wit::ServerState::Stopping => ServerState::Stopping,
                wit::ServerState::Gone => ServerState::Gone,
            }),
            _ => Err(self.host("describe-server gave another answer".into())),
        }
    }

    /// Ends the server `handle` names; ending one already gone succeeds.
    pub async fn terminate(
        &self,
        handle: &ServerHandle,
        config: &DriverConfig,
    ) -> Result<(), DriverError> {
        let call = Call::Terminate(wit_handle(handle), wit_config(config));
        match self.run(call, config, &redactor(config, None)).await? {
            Answer::Done => Ok(()),
            _ => Err(self.host("terminate-server gave another answer".into())),
        }
    }

    fn host(&self, reason: String) -> DriverError {
        DriverError::Host {
            name: self.inner.name.clone(),
            reason,
        }
    }

    /// One call in a fresh store, within the driver's memory and time.
    async fn run(
        &self,
        call: Call,
        config: &DriverConfig,
        redactor: &Redactor,
    ) -> Result<Answer, DriverError> {
        let loaded = &self.inner;
        let name = loaded.name.clone();
        let _permit = loaded
            .runtime
            .inner
            .calls
            .acquire()
            .await
            .map_err(|_| self.host("the runtime is shutting down".into()))?;
        let memory_mb = loaded.capabilities.memory_mb.min(MAX_DRIVER_MEMORY_MB);
        let timeout_ms = loaded.capabilities.timeout_ms.min(MAX_DRIVER_TIMEOUT_MS);
        let stderr = MemoryOutputPipe::new(STDERR_BYTES);
        let gate = OriginGate::new(
            config.http.clone().into(),
            loaded.tls.clone(),
            redactor.clone(),
        );
        let refusals = gate.refusals.clone();
        let state = DriverState {
            wasi: empty_wasi(&stderr),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            gate,
            limiter: Limiter::new(memory_mb),
        };
        let mut store = Store::new(&loaded.runtime.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let _ticking = crate::epoch::arm(&mut store, deadline);
        let run = async {
            let instance = loaded.pre.instantiate_async(&mut store).await?;
            let servers = instance.stratus_plugin_cloud_servers();
            Ok::<_, wasmtime::Error>(match call {
                Call::Launch(r) => servers
                    .call_launch_server(&mut store, &r)
                    .await?
                    .map(Answer::Handle),
                Call::Describe(h, c) => servers
                    .call_describe_server(&mut store, &h, &c)
                    .await?
                    .map(Answer::State),
                Call::Terminate(h, c) => servers
                    .call_terminate_server(&mut store, &h, &c)
                    .await?
                    .map(|()| Answer::Done),
            })
        };
        let limit = Duration::from_millis(timeout_ms) + BACKSTOP_SLACK;
        let outcome = tokio::time::timeout(limit, run).await;
        let refused = || refused_in(&refusals, redactor);
        let timeout = || DriverError::Timeout {
            name: name.clone(),
            limit_ms: timeout_ms,
            refused: refused(),
        };
        match outcome {
            Err(_) => Err(timeout()),
            Ok(Ok(Ok(answer))) => Ok(answer),
            Ok(Ok(Err(e))) => Err(DriverError::Driver {
                name: name.clone(),
                message: clean(redactor, e.message),
                retryable: e.retryable,
                refused: refused(),
            }),
            Ok(Err(e))
                if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) =>
            {
                Err(timeout())
            }
            Ok(Err(_)) if store.data().limiter.refused_growth.is_some() => {
                Err(DriverError::OutOfMemory {
                    name: name.clone(),
                    limit_mb: memory_mb,
                })
            }
            Ok(Err(e)) => Err(DriverError::Trap {
                name: name.clone(),
                reason: trap_reason(redactor, &e, &stderr),
                refused: refused(),
            }),
        }
    }

    /// The handle a launch returned, if the host can store and show it: a printable id of
    /// at most [`MAX_HANDLE_ID_BYTES`] that holds no secret, and an IP address if any.
    fn checked_handle(
        &self,
        h: wit::ServerHandle,
        redactor: &Redactor,
    ) -> Result<ServerHandle, DriverError> {
        let bad = |reason: String| DriverError::Handle {
            name: self.inner.name.clone(),
            reason,
        };
        let id = h.id;
        if id.is_empty() || id.len() > MAX_HANDLE_ID_BYTES {
            return Err(bad(format!(
                "its id is {} bytes long (1 to {MAX_HANDLE_ID_BYTES})",
                id.len()
            )));
        }
        if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad(format!(
                "its id `{}` holds a space or control character",
                clean(redactor, id)
            )));
        }
        if redactor.redact(&id) != id {
            return Err(bad("its id holds a secret of the call".into()));
        }
        let address = match h.address {
            None => None,
            Some(text) => {
                let ip: std::net::IpAddr = text.parse().map_err(|_| {
                    bad(format!(
                        "its address `{}` is not an IP address",
                        clean(redactor, text)
                    ))
                })?;
                Some(server_address(ip).map_err(bad)?)
            }
        };
        Ok(ServerHandle { id, address })
    }
}

/// The redactor of a call: its secrets and, for a launch, the bootstrap document and the
/// credential inside it.
fn redactor(config: &DriverConfig, bootstrap: Option<&str>) -> Redactor {
    let mut secrets: Vec<String> = config.secrets.iter().map(|(_, v)| v.clone()).collect();
    if let Some(b) = bootstrap {
        secrets.push(b.to_owned());
        let parsed = serde_json::from_str::<serde_json::Value>(b).ok();
        let credential = parsed.as_ref().and_then(|v| v.get("credential"));
        if let Some(c) = credential.and_then(|c| c.as_str()) {
            secrets.push(c.to_owned());
        }
    }
    Redactor::new(secrets)
}

/// The call's refusals, redacted and on one line each.
fn refused_in(refusals: &Refusals, redactor: &Redactor) -> Refused {
    Refused(
        refusals
            .all()
            .into_iter()
            .map(|r| clean(redactor, r))
            .collect(),
    )
}

fn wit_config(config: &DriverConfig) -> wit::DriverConfig {
    wit::DriverConfig {
        settings: config
            .settings
            .iter()
            .map(|(key, value)| wit::Setting {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        secrets: config
            .secrets
            .iter()
            .map(|(name, value)| wit::Secret {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
    }
}

fn wit_handle(handle: &ServerHandle) -> wit::ServerHandle {
    wit::ServerHandle {
        id: handle.id.clone(),
        address: handle.address.map(|a| a.to_string()),
    }
}

/// The WASI context of a driver: nothing granted but the clocks (SigV4 signs the time) and
/// randomness; no sockets, so `wasi:http` through the gate is the only way out.
fn empty_wasi(stderr: &MemoryOutputPipe) -> WasiCtx {
    let mut b = WasiCtxBuilder::new();
    b.stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    b.build()
}

/// The trap without its wasm backtrace, with the guest's panic message when it printed one.
fn trap_reason(redactor: &Redactor, e: &wasmtime::Error, stderr: &MemoryOutputPipe) -> String {
    let mut reason = match e.downcast_ref::<wasmtime::Trap>() {
        Some(t) => t.to_string(),
        None => e.root_cause().to_string(),
    };
    let text = String::from_utf8_lossy(&stderr.contents()).into_owned();
    if let Some(panic) = crate::failure::panic_message(&text) {
        reason = format!("{reason}; {panic}");
    }
    clean(redactor, reason)
}

/// A guest-supplied message redacted, on one line, stripped of control and invisible
/// characters, and cut at [`MAX_DRIVER_ERROR_BYTES`] with a marker giving its original size.
/// Only a prefix is looked at, so a huge message costs little; the prefix is four times the
/// limit, so a secret cut at its end lies past the kept part.
fn clean(redactor: &Redactor, text: String) -> String {
    let original = text.len();
    let mut prefix = text;
    let rough = MAX_DRIVER_ERROR_BYTES * 4;
    if original > rough {
        let at = (0..=rough)
            .rev()
            .find(|i| prefix.is_char_boundary(*i))
            .unwrap_or(0);
        prefix.truncate(at);
    }
    let cleaned = redactor.redact_owned(prefix).replace(['\n', '\t'], " ");
    if original <= rough && cleaned.len() <= MAX_DRIVER_ERROR_BYTES {
        return cleaned;
    }
    let mut end = cleaned.len().min(MAX_DRIVER_ERROR_BYTES);
    while !cleaned.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…(cut, {original} bytes)", &cleaned[..end])
}

/// A driver's address for a server, unless it is one no server can have: other tiers are
/// told it (a load balancer's nodes, a database's grants), so loopback would point them at
/// their own machine and link-local at its cloud's metadata service (its credentials).
pub fn server_address(ip: std::net::IpAddr) -> Result<std::net::IpAddr, String> {
    let ip = ip.to_canonical();
    let why = match ip {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_multicast() => "multicast",
        std::net::IpAddr::V4(v4) if v4.is_link_local() => "link-local (a metadata service)",
        std::net::IpAddr::V4(v4) if v4.is_broadcast() => "broadcast",
        std::net::IpAddr::V6(v6) if v6.is_unicast_link_local() => "link-local",
        _ => return Ok(ip),
    };
    Err(format!(
        "its address {ip} is {why}, which no server can have"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_shows_no_secret_value() {
        let config = DriverConfig {
            settings: vec![("region".into(), "us-east-1".into())],
            secrets: vec![("secret-access-key".into(), "wJalrXUtnFEMI".into())],
            http: vec!["http://127.0.0.1:4566".parse().unwrap()],
        };
        let shown = format!("{config:?}");
        assert!(shown.contains("secret-access-key") && shown.contains("us-east-1"));
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
    }

    #[test]
    fn messages_lose_secrets_and_the_bootstrap_credential() {
        let config = DriverConfig {
            secrets: vec![("k".into(), "s3cr3t-value".into())],
            ..DriverConfig::default()
        };
        let bootstrap = r#"{"control":"127.0.0.1:1","credential":"cred-0123456789"}"#;
        let r = redactor(&config, Some(bootstrap));
        let out = clean(
            &r,
            "key s3cr3t-value cred cred-0123456789\nnext\u{1b}[2J".into(),
        );
        assert_eq!(out, "key **** cred **** next");
    }

    #[test]
    fn no_server_is_at_loopback_link_local_or_nowhere() {
        for bad in [
            "127.0.0.9",
            "::1",
            "0.0.0.0",
            "169.254.169.254",
            "fe80::1",
            "224.0.0.1",
            "255.255.255.255",
            "::ffff:127.0.0.1",
        ] {
            let err = server_address(bad.parse().unwrap()).unwrap_err();
            assert!(err.contains("no server can have"), "{bad}: {err}");
        }
        for good in ["10.0.3.7", "172.31.0.5", "203.0.113.9", "2001:db8::7"] {
            assert!(server_address(good.parse().unwrap()).is_ok(), "{good}");
        }
    }
}
