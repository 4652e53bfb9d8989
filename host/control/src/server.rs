//! `stratus serve`: the control plane process. It owns the state directory (one control plane
//! per directory, enforced with a lock), accepts agents and operators on its control port (TLS
//! with its [`ControlIdentity`], loopback unless `--listen` says otherwise), and hands operator
//! requests to the application layer ([`App`]), which runs the work as tasks and resumes
//! unfinished work when it starts.

use crate::app::App;
use crate::dispatcher::Dispatcher;
use crate::paths::{CACHE_KEY, CONTROL_TOKEN, ControlInfo, StatePaths};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use stratus_cloud::{CloudFiles, KeyStore};
use stratus_engine::logs::{Component, Logs, Subject};
use stratus_engine::{Engine, EngineParts};
use stratus_model::state::DeploymentState;
use stratus_protocol::{ControlIdentity, Envelope, Hello, OperatorReply, OperatorRequest, Welcome};
use stratus_provider::{LocalProvider, ProviderRegistry};
use stratus_store::Store;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("another control plane (pid {0}) already serves this state directory")]
    AlreadyRunning(String),
    #[error("{context}: {message}")]
    Setup { context: String, message: String },
    #[error(
        "the control port would speak plaintext on {0}, which is not a loopback address: agents' \
         credentials and the operator's token would cross the network in the clear (drop \
         --agent-plaintext)"
    )]
    PlaintextOffLoopback(String),
    #[error("the file endpoint cannot listen on {addr} (files-listen): {error}")]
    FilesListen {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

fn setup<E: std::fmt::Display>(context: &str) -> impl FnOnce(E) -> ServeError + '_ {
    move |e| ServeError::Setup {
        context: context.to_string(),
        message: e.to_string(),
    }
}

pub struct ServeOptions {
    pub state_dir: PathBuf,
    /// What local servers' agents run as (`stratus-agent`, or `stratus agent`).
    pub agent_program: stratus_provider::AgentProgram,
    /// Exit once no deployment is active (set when `stratus launch` started us).
    pub exit_when_idle: bool,
    /// Runs tiers' custom scaling rules (`[tiers.x.scaling] rule`); without it they warn.
    pub scalers: Option<Arc<dyn crate::app::ScalerRules>>,
    /// Compiles each uploaded package once into the agents' code cache (the binary passes
    /// one backed by the plugin runtime); `None`: every agent compiles what it loads.
    pub precompiler: Option<Arc<dyn stratus_engine::Precompiler>>,
    /// Provider types beyond `local` (the binary passes the cloud-driver factory, backed by the
    /// plugin runtime, which this crate must not link).
    pub provider_factories: Vec<Arc<dyn stratus_provider::ProviderFactory>>,
    /// Starts the HTTP API over the same [`App`] once it is ready (the binary passes
    /// `stratus-http`'s, which this crate must not depend on).
    pub http: Option<HttpStart>,
    /// Where the control port listens; `None`: 127.0.0.1, on the port this state directory's
    /// control plane had before (its agents know only that one), else a new one.
    pub listen: Option<SocketAddr>,
    /// The address agents are told to dial (a host name or an IP address, and the control
    /// port); `None`: the listen address (127.0.0.1 when that is unspecified, 0.0.0.0).
    pub advertise: Option<stratus_protocol::DialAddress>,
    /// Where the file endpoint listens; `None`: a fresh port of the listen address at each
    /// start (agents learn it at the handshake; a fixed one is for firewalls).
    pub files_listen: Option<SocketAddr>,
    /// Whose certificate the control port presents, or none.
    pub agent_tls: AgentTls,
    /// Where cloud files are kept: `None`, `<state>/cloud-files`; else a directory or an
    /// `s3://` bucket (see `CloudFiles::from_setting`).
    pub cloud_files: Option<String>,
    /// Hand agents the shared compiled-code cache; `false`: each agent compiles what it
    /// loads, as an agent on another machine (no shared disk) does.
    pub agent_code_cache: bool,
    /// The configuration file's `[providers.NAME]` tables, which every deployment may name.
    pub control_providers: crate::config::ControlProviders,
}

/// How the control port speaks to agents and operators.
#[derive(Debug, Clone, Default)]
pub enum AgentTls {
    /// TLS with the identity in `<state>/tls/`, generated at first start.
    #[default]
    Generated,
    /// TLS with an operator's PEM certificate chain and key.
    Given { cert: PathBuf, key: PathBuf },
    /// No TLS, on loopback only (to measure what TLS costs); refused on any other address.
    Plaintext,
}

impl AgentTls {
    /// Refuses a plaintext control port listening or advertised anywhere but loopback.
    pub fn check(
        &self,
        listen: Option<SocketAddr>,
        advertise: Option<&stratus_protocol::DialAddress>,
    ) -> Result<(), ServeError> {
        if !matches!(self, AgentTls::Plaintext) {
            return Ok(());
        }
        if let Some(addr) = listen.filter(|a| !a.ip().is_loopback()) {
            return Err(ServeError::PlaintextOffLoopback(addr.to_string()));
        }
        match advertise.filter(|a| !a.is_loopback()) {
            Some(addr) => Err(ServeError::PlaintextOffLoopback(addr.to_string())),
            None => Ok(()),
        }
    }
}

impl ServeOptions {
    /// Refuses what must not start (see [`AgentTls::check`]), before anything starts.
    pub fn check(&self) -> Result<(), ServeError> {
        self.agent_tls.check(self.listen, self.advertise.as_ref())
    }
}

/// What a further transport needs to serve the operator: the application layer, the state
/// directory's layout and the component logs (mutations are logged with their caller).
#[derive(Clone)]
pub struct TransportContext {
    pub app: App,
    pub paths: StatePaths,
    pub logs: Logs,
    pub store: Store,
}

/// Starts a transport and answers the address it serves on (recorded in `control.json`), or
/// why it could not start.
pub type HttpStart = Box<
    dyn FnOnce(TransportContext) -> futures::future::BoxFuture<'static, Result<String, String>>
        + Send,
>;

/// The serving side: sockets, the handshake, and operator requests handed to [`App`].
#[derive(Clone)]
struct Control {
    app: App,
    store: Store,
    logs: Logs,
    dispatcher: Dispatcher,
    token: String,
    shutdown: Arc<Notify>,
    handshakes: crate::handshake::Handshakes,
    /// The control port's TLS; `None` with [`AgentTls::Plaintext`].
    tls: Option<TlsAcceptor>,
}

/// Runs the control plane until it is asked to stop (or, with `exit_when_idle`, goes idle).
pub async fn serve(opts: ServeOptions) -> Result<(), ServeError> {
    opts.check()?;
    let paths = StatePaths::new(&opts.state_dir);
    std::fs::create_dir_all(paths.logs()).map_err(setup("creating the state directory"))?;
    // Hook logs carry what plugins said; the program user every plugin's programs share must
    // not read one deployment's from another.
    std::fs::set_permissions(
        paths.logs(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .map_err(setup("closing the logs directory"))?;
    let _lock = lock(&paths)?;
    let store = Store::open(paths.db()).map_err(setup("opening the journal"))?;
    let logs = Logs::open(paths.path(), store.clone()).map_err(setup("opening logs"))?;
    let keys = KeyStore::open(paths.keys()).map_err(setup("opening key management"))?;
    let files = CloudFiles::from_setting(opts.cloud_files.as_deref(), &paths.cloud_files())
        .map_err(setup("opening cloud files"))?;
    let token = keys
        .get_or_generate(CONTROL_TOKEN)
        .map_err(setup("control token"))?;
    keys.get_or_generate(CACHE_KEY)
        .map_err(setup("plugin cache key"))?;

    let identity = identity(&opts)?;
    let tls = match opts.agent_tls {
        AgentTls::Plaintext => None,
        _ => Some(TlsAcceptor::from(identity.server_config())),
    };
    let listener = bind(&store, opts.listen).await?;
    let addr: SocketAddr = listener.local_addr().map_err(setup("control port"))?;
    let dial_addr = (opts.advertise.clone()).unwrap_or_else(|| dialable(addr).into());
    let dispatcher = Dispatcher::new(logs.clone(), |c| {
        stratus_cloud::digest(&stratus_cloud::Secret::new(c))
    });
    // Always HTTPS, whatever the control port speaks: agents pin the same certificate.
    let files_url = crate::files_endpoint::start(
        files.clone(),
        dispatcher.clone(),
        identity.server_config(),
        opts.files_listen.unwrap_or(SocketAddr::new(addr.ip(), 0)),
        &dial_addr,
    )
    .await?;
    dispatcher.set_files_endpoint(files_url.clone());
    let local = LocalProvider::new(paths.path().to_path_buf(), opts.agent_program.clone());
    // Further provider types (cloud drivers, SSH) register their factories here.
    let mut providers = ProviderRegistry::new(Arc::new(local));
    for factory in &opts.provider_factories {
        providers.add_factory(factory.clone());
    }
    let mut agent_args = match opts.agent_code_cache {
        true => vec![
            "--cache-dir".to_string(),
            paths.cache().to_string_lossy().into_owned(),
            "--cache-key-file".to_string(),
            keys.dir().join(CACHE_KEY).to_string_lossy().into_owned(),
        ],
        false => Vec::new(),
    };
    if tls.is_none() {
        agent_args.push("--plaintext".into());
    }
    let engine = Engine::new(EngineParts {
        state_dir: paths.path().to_path_buf(),
        store: store.clone(),
        providers: Arc::new(providers),
        agents: Arc::new(dispatcher.clone()),
        keys,
        files,
        cloud_files_dir: paths.cloud_files(),
        logs: logs.clone(),
        control_addr: dial_addr.clone(),
        control_fingerprint: identity.fingerprint,
        agent_args,
        precompiler: opts.precompiler.clone(),
    });
    tokio::spawn(crate::monitor::heartbeat(
        engine.clone(),
        dispatcher.clone(),
    ));
    tokio::spawn(crate::monitor::watch_agents(
        engine.clone(),
        dispatcher.clone(),
    ));
    let mut app = App::new(engine, store.clone(), logs.clone());
    if let Some(scalers) = opts.scalers.clone() {
        app = app.with_scalers(scalers);
    }
    (opts.control_providers)
        .publish(&paths)
        .map_err(setup("publishing the configuration's providers"))?;
    app = app.with_control_providers(opts.control_providers.clone());
    let control = Control {
        app,
        store: store.clone(),
        logs: logs.clone(),
        handshakes: dispatcher.handshakes().clone(),
        dispatcher,
        token: token.expose().to_string(),
        shutdown: Arc::new(Notify::new()),
        tls,
    };
    control.app.resume().await;
    tokio::spawn(control.app.clone().watch_losses());
    tokio::spawn(control.app.clone().watch_scaling_rules());
    let health = control.dispatcher.health_results();
    tokio::spawn(control.app.clone().watch_health(health));
    tokio::spawn(crate::metrics::watch(
        control.app.metrics().clone(),
        store.clone(),
        control.dispatcher.clone(),
    ));
    let reports = control.dispatcher.supervision_reports();
    tokio::spawn(crate::supervision::watch(
        store.clone(),
        logs.clone(),
        reports,
    ));
    let http = match opts.http {
        Some(start) => Some(
            start(TransportContext {
                app: control.app.clone(),
                paths: paths.clone(),
                logs: logs.clone(),
                store: store.clone(),
            })
            .await
            .map_err(|message| ServeError::Setup {
                context: "starting the HTTP API".into(),
                message,
            })?,
        ),
        None => None,
    };
    let fingerprint = control.tls.as_ref().map(|_| identity.fingerprint);
    publish(&paths, dialable(addr), fingerprint, http)?;
    let security = match fingerprint {
        Some(f) => format!("TLS, certificate {f}"),
        None => "plaintext".into(),
    };
    logs.info(
        Component::Dispatcher,
        Subject::default(),
        &format!(
            "control plane listening on {addr} ({security}; agents dial {dial_addr}; files at \
             {files_url}, cloud files in {}) (pid {})",
            CloudFiles::describe_setting(opts.cloud_files.as_deref(), &paths.cloud_files()),
            std::process::id()
        ),
    );

    let accept = {
        let control = control.clone();
        async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    // Out of descriptors, accept fails at once while the backlog holds a peer:
                    // retried without a pause, it would spin a core.
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let control = control.clone();
                tokio::spawn(async move { control.connection(stream).await });
            }
        }
    };
    let idle = control.clone().idle_watch(opts.exit_when_idle);
    tokio::select! {
        _ = accept => {},
        _ = control.shutdown.notified() => {},
        _ = idle => {},
    }
    let _ = std::fs::remove_file(paths.control_file());
    let _ = crate::config::ControlProviders::default().publish(&paths);
    logs.info(
        Component::Dispatcher,
        Subject::default(),
        "control plane stopped",
    );
    Ok(())
}

/// The control port's identity: the operator's, or the one in `<state>/tls/` (generated the
/// first time, naming the listen address and the advertised host, name or address, too).
fn identity(opts: &ServeOptions) -> Result<ControlIdentity, ServeError> {
    let context = "the control port's TLS identity";
    if let AgentTls::Given { cert, key } = &opts.agent_tls {
        return ControlIdentity::from_files(cert, key).map_err(setup(context));
    }
    let listen = opts
        .listen
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified());
    let names: Vec<String> = (listen.map(|ip| ip.to_string()).into_iter())
        .chain(opts.advertise.as_ref().map(|a| a.host().to_string()))
        .collect();
    ControlIdentity::load_or_generate_with_names(&opts.state_dir, &names).map_err(setup(context))
}

/// `addr` as a peer on this machine dials it: an unspecified address (0.0.0.0, ::) is reached
/// on loopback.
fn dialable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

/// Binds `listen`; with port 0 (the default), the port the previous control plane of this
/// state directory used, so that its agents (which know only that address) find their way
/// back, and a fresh port the first time.
async fn bind(store: &Store, listen: Option<SocketAddr>) -> Result<TcpListener, ServeError> {
    let wanted = listen.unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    if wanted.port() != 0 {
        let context = format!("binding the control port {wanted}");
        return TcpListener::bind(wanted).await.map_err(setup(&context));
    }
    let previous = store
        .meta(PORT_KEY)
        .ok()
        .flatten()
        .and_then(|p| p.parse::<u16>().ok());
    if let Some(port) = previous {
        match TcpListener::bind((wanted.ip(), port)).await {
            Ok(l) => return Ok(l),
            Err(e) => tracing::warn!(
                port,
                error = %e,
                "previous control port unavailable; agents of running servers cannot reconnect"
            ),
        }
    }
    let listener = TcpListener::bind(wanted)
        .await
        .map_err(setup("binding the control port"))?;
    let port = listener.local_addr().map_err(setup("control port"))?.port();
    store
        .set_meta(PORT_KEY, &port.to_string())
        .map_err(setup("recording the control port"))?;
    Ok(listener)
}

const PORT_KEY: &str = "control/port";

fn lock(paths: &StatePaths) -> Result<nix::fcntl::Flock<std::fs::File>, ServeError> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(paths.control_lock())
        .map_err(setup("opening the control lock"))?;
    let deadline = std::time::Instant::now() + DYING_HOLDER_WAIT;
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            // A holder that no longer runs is a process still closing its files: the lock is
            // free once it has, so it is waited for rather than reported as running.
            Err((f, _))
                if holder(paths).is_some_and(|pid| !crate::process_runs::process_runs(pid))
                    && std::time::Instant::now() < deadline =>
            {
                file = f;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(_) => {
                let pid = holder(paths).map_or_else(|| "unknown".into(), |p| p.to_string());
                return Err(ServeError::AlreadyRunning(pid));
            }
        }
    }
}

/// Longest a new control plane waits for the lock of one that exited but has not finished
/// closing its files (a process's threads close them after its main thread is a zombie).
const DYING_HOLDER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The process `control.json` names, if it names one.
fn holder(paths: &StatePaths) -> Option<u32> {
    paths.control_info().map(|info| info.pid)
}

fn publish(
    paths: &StatePaths,
    addr: SocketAddr,
    fingerprint: Option<stratus_protocol::Fingerprint>,
    http: Option<String>,
) -> Result<(), ServeError> {
    let info = ControlInfo {
        pid: std::process::id(),
        port: addr.port(),
        address: Some(addr.to_string()),
        fingerprint,
        http,
    };
    let tmp = paths.root.join("control.json.tmp");
    let text = serde_json::to_string(&info).map_err(setup("control.json"))?;
    std::fs::write(&tmp, text).map_err(setup("writing control.json"))?;
    std::fs::rename(&tmp, paths.control_file()).map_err(setup("writing control.json"))
}

impl Control {
    async fn connection(&self, stream: TcpStream) {
        let peer = stream.peer_addr().ok().map(|a| a.ip());
        let hello = self.handshakes.hello(stream, self.tls.as_ref(), &self.logs);
        let Some((mut conn, hello)) = hello.await else {
            return;
        };
        match hello {
            Hello::Agent {
                deployment,
                server_id,
                credential,
                pid,
                address,
            } => {
                let reported = crate::dispatcher::Reported {
                    claimed: address,
                    peer,
                };
                self.dispatcher
                    .serve_agent_at(conn, deployment, server_id, credential, pid, reported)
                    .await;
            }
            Hello::Operator { token } => {
                if !constant_time_eq(token.as_bytes(), self.token.as_bytes()) {
                    let why = crate::handshake::Rejection::WrongToken;
                    self.handshakes.reject(why, &self.logs);
                    let _ = conn
                        .send(&Welcome::Refused {
                            reason: "wrong control token".into(),
                        })
                        .await;
                    return;
                }
                if conn.send(&Welcome::Welcome { files: None }).await.is_err() {
                    return;
                }
                while let Ok(req) = conn.recv::<Envelope<OperatorRequest>>().await {
                    let body = self.operator(req.body).await;
                    if conn.send(&Envelope { id: req.id, body }).await.is_err() {
                        break;
                    }
                }
            }
        }
    }

    /// One operator request, answered through the application layer.
    async fn operator(&self, req: OperatorRequest) -> OperatorReply {
        let accepted = |deployment: String| OperatorReply::Accepted { deployment };
        let result = match req {
            OperatorRequest::Ping => {
                return OperatorReply::Pong {
                    pid: std::process::id(),
                };
            }
            OperatorRequest::Shutdown => {
                self.shutdown.notify_one();
                return OperatorReply::Done;
            }
            OperatorRequest::Launch { file } => self.app.launch(&file).await.map(accepted),
            OperatorRequest::Terminate { name, keep_disks } => self
                .app
                .terminate(&name, keep_disks)
                .await
                .map(|()| accepted(name)),
            OperatorRequest::Scale {
                name,
                tier,
                count,
                min,
                max,
            } => self
                .app
                .scale(&name, &tier, count, min, max)
                .await
                .map(|_| accepted(name)),
            OperatorRequest::AgentLog { deployment, server } => self
                .app
                .agent_log(&deployment, &server)
                .await
                .map(|log| OperatorReply::AgentLog {
                    text: log.text,
                    cut: log.cut,
                }),
            OperatorRequest::Apply { file, dry_run } => {
                self.app
                    .apply(&file, dry_run)
                    .await
                    .map(|plan| OperatorReply::Applied {
                        deployment: plan.deployment,
                        changes: plan.changes,
                    })
            }
        };
        result.unwrap_or_else(|e| OperatorReply::Error {
            message: e.to_string(),
            kind: e.kind(),
        })
    }

    /// Resolves when the control plane has had nothing to do for a while.
    async fn idle_watch(self, enabled: bool) {
        if !enabled {
            std::future::pending::<()>().await;
        }
        let mut idle_for = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let busy_task = self.app.busy().await;
            let active = self
                .store
                .deployments::<DeploymentState>()
                .map(|rows| {
                    rows.iter().any(|r| {
                        !matches!(
                            r.state,
                            DeploymentState::Terminated | DeploymentState::Failed { .. }
                        )
                    })
                })
                .unwrap_or(true);
            idle_for = if busy_task || active { 0 } else { idle_for + 1 };
            if idle_for >= 10 {
                return;
            }
        }
    }
}

/// Compares secrets without leaking their common prefix length through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_holder(paths: &StatePaths, pid: u32) {
        let info = crate::paths::ControlInfo {
            pid,
            port: 1,
            address: None,
            fingerprint: None,
            http: None,
        };
        std::fs::write(paths.control_file(), serde_json::to_string(&info).unwrap()).unwrap();
    }

    fn hold(paths: &StatePaths) -> nix::fcntl::Flock<std::fs::File> {
        let file = std::fs::File::create(paths.control_lock()).unwrap();
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap()
    }

    #[test]
    fn a_lock_held_by_a_running_control_plane_is_reported_at_once_with_its_pid() {
        let dir = tempfile::tempdir().unwrap();
        let paths = StatePaths::new(dir.path());
        let _held = hold(&paths);
        name_holder(&paths, std::process::id());
        let err = lock(&paths).err().unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "another control plane (pid {}) already serves this state directory",
                std::process::id()
            )
        );
    }

    /// A control plane that exited is a zombie while its other threads still close its files:
    /// the next one waits for the lock they release instead of refusing to start.
    #[test]
    fn a_lock_still_held_by_an_exited_control_plane_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let paths = StatePaths::new(dir.path());
        let held = hold(&paths);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        while crate::process_runs::process_runs(child.id()) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        name_holder(&paths, child.id());
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(held);
        });
        let got = lock(&paths);
        release.join().unwrap();
        child.wait().unwrap();
        assert!(got.is_ok(), "{:?}", got.err());
    }
}
