//! The agent's life: connect, handshake, serve requests, reconnect when the control plane goes
//! away, and on shutdown stop every supervised process and end every service's cgroup (or,
//! without cgroups, every descendant).

use crate::hooks::Hooks;
use futures::{SinkExt, StreamExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use stratus_containment::{Cgroup, Containment, descendants};
use stratus_plugin_runtime::{ProgramUser, Runtime, RuntimeConfig, Supervisor};
use stratus_protocol::{
    AgentReply, AgentRequest, Bootstrap, ClientStream, Connection, DialError, Envelope, Hello,
    Welcome,
};
use tokio::sync::{Notify, mpsc};

/// How the agent was started (by the provider).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where the control plane is, the certificate to pin, who this server is, and its
    /// credential (`Debug` shows no credential).
    pub bootstrap: Bootstrap,
    /// The file the bootstrap came from, kept as private as the credential it holds.
    pub bootstrap_file: PathBuf,
    /// Dial the control port without TLS (its control plane runs with `--agent-plaintext`);
    /// refused unless the control plane is on loopback.
    pub plaintext: bool,
    /// This server's address; empty when its provider did not know it, and then the agent
    /// learns it from its first control connection.
    pub address: String,
    /// The server's root directory (its "filesystem").
    pub root: PathBuf,
    /// Shared compiled-code cache and the key that authenticates its entries.
    pub cache_dir: Option<PathBuf>,
    pub cache_key_file: Option<PathBuf>,
    /// Largest component loaded (`RuntimeConfig::max_component_bytes`).
    pub max_component_bytes: u64,
    /// Who plugins' programs run as when the agent is root: the server's own uid from the
    /// local provider, or an operator's shared user (`None`: the default,
    /// [`stratus_plugin_runtime::DEFAULT_PROGRAM_USER`]).
    pub program_user: Option<ProgramUser>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "refusing to send the credential in plaintext to {0}, which is not a loopback address \
         (drop --plaintext)"
    )]
    PlaintextOffLoopback(String),
    #[error("the control plane refused this agent: {0}")]
    Refused(String),
    #[error("starting the plugin runtime: {0}")]
    Runtime(String),
}

/// Grace period for supervised processes when the agent stops.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Longest a connection attempt (TCP and TLS handshake) may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// First wait before dialing again; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between two attempts to reach the control plane.
const RETRY_MAX: Duration = Duration::from_secs(2);
/// Wait after the peer at the control address presented another certificate than the pinned
/// one: that is no outage to ride out quickly but an impostor or a replaced certificate, and
/// a fleet of agents must not hammer it (nor fill their logs).
pub const PIN_MISMATCH_RETRY: Duration = Duration::from_secs(30);

/// Runs the agent until the control plane asks it to shut down (or refuses it).
pub async fn run(mut cfg: AgentConfig) -> Result<(), AgentError> {
    if cfg.plaintext && !cfg.bootstrap.control_is_loopback() {
        return Err(AgentError::PlaintextOffLoopback(
            cfg.bootstrap.control.clone(),
        ));
    }
    // A cloud server is told no address: it is the one its control connection leaves from,
    // learned before any hook runs (hooks bind to it).
    let mut first = None;
    if cfg.address.is_empty() {
        let stream = tokio::select! {
            s = first_connection(&cfg) => s,
            _ = terminate_signal() => {
                tracing::info!("terminated by signal before reaching the control plane");
                return Ok(());
            }
        };
        cfg.address = local_ip(&stream).to_string();
        tracing::info!(address = %cfg.address, "learned this server's address from its control connection");
        first = Some(stream);
    }
    let (cache_dir, cache_key) = code_cache(&cfg);
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir,
        cache_key,
        max_concurrent_calls: 16,
        max_component_bytes: cfg.max_component_bytes,
    })
    .map_err(|e| AgentError::Runtime(e.to_string()))?;
    let log_dir = cfg.root.join("agent/processes");
    let services = contain();
    let mut supervisor = match &services {
        Some(parent) => Supervisor::contained(log_dir.clone(), parent.cgroup.clone()),
        None => Supervisor::new(log_dir.clone()),
    };
    if let Some(user) = cfg.program_user {
        supervisor = supervisor.with_program_user(user);
    }
    tokio::spawn(bound_process_logs(log_dir, supervisor.clone()));
    if let Some(user) = supervisor.program_user() {
        tracing::info!(%user, "plugins' programs run as this program user");
        crate::private::protect(&cfg.root, &cfg.bootstrap_file, user);
    }
    // An agent started again on this server takes back the processes its predecessor kept.
    let adopted = supervisor.adopt();
    if !adopted.is_empty() {
        tracing::info!(processes = ?adopted, "supervised processes taken back (none means started again)");
    }
    let measured = crate::metrics::Source {
        supervisor: supervisor.clone(),
        services: services.as_ref().map(|s| s.cgroup.clone()),
        agent_inside: services.as_ref().is_some_and(|s| !s.owned),
    };
    let hooks = Arc::new(Hooks::new(cfg.clone(), runtime, supervisor.clone()));
    tokio::spawn(crate::disk_watch::watch_disks(hooks.clone()));
    let stop = Arc::new(Notify::new());

    let result = tokio::select! {
        r = serve_forever(&cfg, hooks.clone(), measured, stop.clone(), first) => r,
        _ = stop.notified() => Ok(()),
        _ = terminate_signal() => {
            tracing::info!("terminated by signal");
            Ok(())
        }
    };
    let stopped = supervisor.stop_all(STOP_GRACE).await;
    end_containment(services).await;
    tracing::info!(
        processes = stopped.len(),
        "supervised processes stopped; agent exiting"
    );
    result
}

/// How often the supervised processes' logs are checked against their bound.
const LOG_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Supervised processes write their own logs; the agent keeps each one bounded. Looking is a
/// listing and a `stat` per log, done in place; only a rotation (copying up to the bound) goes
/// to a blocking thread, since handing every look to one woke a second thread each time. An
/// agent that never supervised a process has no such log and does not look: every idle agent
/// waking each second to list an empty directory was a fifth of their CPU in an idle profile.
async fn bound_process_logs(dir: std::path::PathBuf, supervisor: Supervisor) {
    use stratus_plugin_runtime::process_logs::{MAX_PROCESS_LOG_BYTES, oversized, rotate};
    supervisor.until_supervising().await;
    loop {
        tokio::time::sleep(LOG_CHECK_EVERY).await;
        let over = oversized(&dir, MAX_PROCESS_LOG_BYTES);
        if over.is_empty() {
            continue;
        }
        let rotated = tokio::task::spawn_blocking(move || {
            over.iter()
                .filter(|log| rotate(log, MAX_PROCESS_LOG_BYTES).is_ok())
                .count()
        })
        .await
        .unwrap_or(0);
        if rotated > 0 {
            tracing::info!(rotated, "supervised process logs rotated");
        }
    }
}

/// Where the services' cgroups go, and whether the agent made that parent itself.
struct Services {
    cgroup: Cgroup,
    owned: bool,
}

/// Sets up containment: beneath the cgroup the provider made for this agent (the agent moves
/// itself into a leaf `agent` of it, so the services beside it may have controllers), else
/// beneath a cgroup of its own; without cgroups, it becomes a child subreaper.
fn contain() -> Option<Services> {
    let c = Containment::detect();
    let setup = || -> Result<Services, String> {
        if !c.is_available() {
            return Err("no usable cgroup hierarchy".into());
        }
        let own = c.own();
        // The provider made this cgroup for this agent and left joining it to the agent (so it
        // could start the agent with posix_spawn); only an existing cgroup of a valid name is
        // taken, never made here.
        let from_provider = std::env::var(stratus_containment::AGENT_CGROUP_ENV)
            .ok()
            .filter(|n| stratus_containment::valid_name(n) && c.root().child(n).exists());
        let services = match from_provider {
            Some(n) => {
                let own = c.root().child(&n);
                let leaf = own.child("agent");
                leaf.create().map_err(|e| e.to_string())?;
                leaf.enter(std::process::id()).map_err(|e| e.to_string())?;
                Services {
                    cgroup: own,
                    owned: false,
                }
            }
            None => {
                let mine = own.child(&format!("stratus-agent-{}", std::process::id()));
                mine.create().map_err(|e| e.to_string())?;
                Services {
                    cgroup: mine,
                    owned: true,
                }
            }
        };
        Ok(services)
    };
    match setup() {
        Ok(s) => {
            tracing::info!(cgroups = %c.describe(), "services run in their own cgroups");
            Some(s)
        }
        Err(e) => {
            if let Err(e) = descendants::become_subreaper() {
                tracing::warn!(error = %e, "cannot become a child subreaper");
            }
            tracing::warn!(reason = %e,
                "no cgroups: stop kills process groups and descendants; the process limit is not enforced");
            None
        }
    }
}

/// Ends what is left after the supervisor stopped: the agent's own parent cgroup, or without
/// cgroups every descendant of the agent (orphans were re-parented to it, the subreaper).
async fn end_containment(services: Option<Services>) {
    let ended = tokio::task::spawn_blocking(move || match services {
        Some(Services {
            cgroup,
            owned: true,
        }) => cgroup.destroy().map_err(|e| e.to_string()),
        Some(_) => Ok(()),
        None => {
            descendants::kill_tree(std::process::id(), None);
            Ok(())
        }
    })
    .await;
    if let Ok(Err(e)) = ended {
        tracing::warn!(error = %e, "cannot end the agent's cgroup");
    }
}

async fn terminate_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// Dials until the control plane answers (a cloud server's agent may boot before the
/// network is up).
async fn first_connection(cfg: &AgentConfig) -> ClientStream {
    let mut backoff = RETRY_FIRST;
    loop {
        match dial_once(cfg).await {
            Ok(stream) => return stream,
            Err(wait) => tokio::time::sleep(wait.unwrap_or(backoff)).await,
        }
        backoff = (backoff * 2).min(RETRY_MAX);
    }
}

/// One attempt to reach the control plane; on failure, how long to wait when the failure
/// itself says (a pin mismatch), logged once here.
async fn dial_once(cfg: &AgentConfig) -> Result<ClientStream, Option<Duration>> {
    let control = &cfg.bootstrap.control;
    let pinned = (!cfg.plaintext).then_some(&cfg.bootstrap.fingerprint);
    match stratus_protocol::dial(control, pinned, DIAL_TIMEOUT).await {
        Ok(stream) => Ok(stream),
        Err(DialError::PinMismatch(m)) => {
            tracing::error!(%control, "refusing the control plane: {m}; trying again in {}s",
                PIN_MISMATCH_RETRY.as_secs());
            Err(Some(PIN_MISMATCH_RETRY))
        }
        Err(e @ DialError::Tls(..)) => {
            tracing::warn!(error = %e, "control plane handshake failed");
            Err(None)
        }
        Err(e) => {
            tracing::debug!(error = %e, "control plane not reachable");
            Err(None)
        }
    }
}

/// The local address of a connection to the control port: the address this server is
/// reached at, as far as its control plane's network goes.
fn local_ip(stream: &ClientStream) -> std::net::IpAddr {
    use tokio_util::either::Either;
    let tcp = match stream {
        Either::Left(tls) => tls.get_ref().0,
        Either::Right(tcp) => tcp,
    };
    // A connected socket always has a local address; unspecified is refused by the control plane.
    tcp.local_addr()
        .map(|a| a.ip().to_canonical())
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into())
}

/// Connects again and again: a control plane that restarts finds its agents back. `first`
/// is a connection already made (the one the server's address was learned from).
async fn serve_forever(
    cfg: &AgentConfig,
    hooks: Arc<Hooks>,
    measured: crate::metrics::Source,
    stop: Arc<Notify>,
    mut first: Option<ClientStream>,
) -> Result<(), AgentError> {
    let control = &cfg.bootstrap.control;
    // Reported only when learned: a provider-given address is the control plane's already.
    let learned = cfg
        .bootstrap
        .address
        .is_empty()
        .then(|| cfg.address.clone());
    let mut backoff = RETRY_FIRST;
    loop {
        let mut wait = backoff;
        let dialed = match first.take() {
            Some(stream) => Ok(stream),
            None => dial_once(cfg).await,
        };
        match dialed {
            Ok(stream) => {
                backoff = RETRY_FIRST;
                wait = backoff;
                let mut conn = Connection::new(stream);
                // Sent only inside a connection whose certificate matched the pin.
                let hello = Hello::Agent {
                    deployment: cfg.bootstrap.deployment.clone(),
                    server_id: cfg.bootstrap.server_id.clone(),
                    credential: hooks.credentials.current(),
                    pid: std::process::id(),
                    address: learned.clone(),
                };
                if conn.send(&hello).await.is_ok() {
                    match conn.recv::<Welcome>().await {
                        Ok(Welcome::Welcome { files }) => {
                            tracing::info!(%control, "handshake accepted");
                            hooks.learn_files_endpoint(files);
                            serve(conn, hooks.clone(), measured.clone(), stop.clone()).await;
                            tracing::warn!("control plane connection lost; reconnecting");
                        }
                        Ok(Welcome::Refused { reason })
                            if reason == stratus_protocol::REFUSED_IN_USE =>
                        {
                            // The credential was right: the control plane has not yet seen our
                            // previous connection end, and drops it at its heartbeat limit.
                            tracing::warn!(%reason, "refused while an earlier connection of this server is live; presenting the same credential again");
                        }
                        Ok(Welcome::Refused { reason }) => {
                            // A control plane that stopped before recording a replacement
                            // still expects the credential before it.
                            if !hooks.credentials.fall_back() {
                                return Err(AgentError::Refused(reason));
                            }
                            let launch = hooks.credentials.presents_launch();
                            tracing::warn!(%reason, launch, "the credential presented was refused; presenting the one before it");
                        }
                        Err(e) => tracing::warn!(error = %e, "handshake failed"),
                    }
                }
            }
            Err(told) => wait = told.unwrap_or(wait),
        }
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(RETRY_MAX);
    }
}

/// Serves one connection: requests run concurrently, replies go back as they finish.
async fn serve(
    conn: Connection<ClientStream>,
    hooks: Arc<Hooks>,
    measured: crate::metrics::Source,
    stop: Arc<Notify>,
) {
    let (mut sink, mut stream) = conn.split();
    let (tx, mut rx) = mpsc::channel::<Envelope<AgentReply>>(64);
    let health = forward_health(hooks.health.subscribe(), tx.clone());
    let crashes = forward_crashes(hooks.supervisor.clone(), tx.clone());
    let metrics = crate::metrics::report(hooks.metrics.subscribe(), measured, tx.clone());
    let writer = async move {
        while let Some(reply) = rx.recv().await {
            // `fit_frame` already bounds hook replies; anything else too large still gets an
            // answer, so the control plane never waits for a frame that was never sent.
            let line = stratus_protocol::framing::encode(&reply).or_else(|e| {
                stratus_protocol::framing::encode(&Envelope {
                    id: reply.id,
                    body: AgentReply::Error {
                        message: format!("the reply could not be sent: {e}"),
                    },
                })
            });
            let Ok(line) = line else {
                continue;
            };
            if sink.send(line).await.is_err() {
                break;
            }
        }
    };
    let reader = async move {
        while let Some(Ok(line)) = stream.next().await {
            let req: Envelope<AgentRequest> = match serde_json::from_str(&line) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "ignored a malformed request");
                    continue;
                }
            };
            let tx = tx.clone();
            let hooks = hooks.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let shutdown = matches!(req.body, AgentRequest::Shutdown { .. });
                let body = hooks.handle(req.body).await;
                let _ = tx.send(Envelope { id: req.id, body }).await;
                if shutdown {
                    // Let the reply leave before the agent stops.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    stop.notify_one();
                }
            });
        }
    };
    tokio::select! {
        _ = writer => {},
        _ = reader => {},
        _ = health => {},
        _ = crashes => {},
        _ = metrics => {},
    }
}

/// Least time between two supervision reports on a connection: processes that crash in a
/// loop, however many, cannot make the agent flood the control plane.
pub const SUPERVISION_REPORT_EVERY: Duration = Duration::from_secs(1);

/// Sends the supervisor's crash report on this connection, unsolicited: once at once (a
/// control plane that just started learns it), then whenever it changed, at most once every
/// [`SUPERVISION_REPORT_EVERY`].
async fn forward_crashes(supervisor: Supervisor, tx: mpsc::Sender<Envelope<AgentReply>>) {
    let mut changes = supervisor.crash_changes();
    let mut last = None;
    loop {
        let report = supervisor.crashes();
        if last.as_ref() != Some(&report) {
            let frame = Envelope {
                id: stratus_protocol::UNSOLICITED_ID,
                body: AgentReply::Supervision {
                    report: report.clone(),
                },
            };
            if tx.send(frame).await.is_err() {
                return std::future::pending().await;
            }
            last = Some(report);
        }
        tokio::time::sleep(SUPERVISION_REPORT_EVERY).await;
        if changes.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Sends each scheduled health result on this connection, unsolicited; results missed while
/// the connection was slow are skipped, since a newer one follows.
async fn forward_health(
    mut results: tokio::sync::broadcast::Receiver<stratus_protocol::HealthResult>,
    tx: mpsc::Sender<Envelope<AgentReply>>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let result = match results.recv().await {
            Ok(r) => r,
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return std::future::pending().await,
        };
        let frame = Envelope {
            id: stratus_protocol::UNSOLICITED_ID,
            body: AgentReply::Health { result },
        };
        if tx.send(frame).await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// The shared code cache and its key. Without a readable key the cache is not used: a key
/// anyone could guess would let whoever can write the cache directory run native code here.
fn code_cache(cfg: &AgentConfig) -> (Option<PathBuf>, [u8; 32]) {
    let (Some(dir), Some(file)) = (&cfg.cache_dir, &cfg.cache_key_file) else {
        return (None, [0u8; 32]);
    };
    match std::fs::read_to_string(file) {
        Ok(secret) if !secret.trim().is_empty() => (
            Some(dir.clone()),
            stratus_plugin_runtime::cache_key_of_secret(&secret),
        ),
        Ok(_) => {
            tracing::warn!(file = %file.display(), "the code cache key file is empty; compiling every plugin here");
            (None, [0u8; 32])
        }
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "cannot read the code cache key; compiling every plugin here");
            (None, [0u8; 32])
        }
    }
}
