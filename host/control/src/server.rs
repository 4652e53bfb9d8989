//! `stratus serve`: the control plane process. It owns the state directory (one control plane
//! per directory, enforced with a lock), accepts agents and operators on a loopback port, and
//! hands operator requests to the application layer ([`App`]), which runs the work as tasks and
//! resumes unfinished work when it starts.

use crate::app::App;
use crate::dispatcher::Dispatcher;
use crate::paths::{CACHE_KEY, CONTROL_TOKEN, ControlInfo, StatePaths};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use stratus_cloud::{CloudFiles, KeyStore};
use stratus_engine::logs::{Component, Logs, Subject};
use stratus_engine::{Engine, EngineParts};
use stratus_model::state::DeploymentState;
use stratus_protocol::{Envelope, Hello, OperatorReply, OperatorRequest, Welcome};
use stratus_provider::{LocalProvider, ProviderRegistry};
use stratus_store::Store;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("another control plane (pid {0}) already serves this state directory")]
    AlreadyRunning(String),
    #[error("{context}: {message}")]
    Setup { context: String, message: String },
}

fn setup<E: std::fmt::Display>(context: &str) -> impl FnOnce(E) -> ServeError + '_ {
    move |e| ServeError::Setup {
        context: context.to_string(),
        message: e.to_string(),
    }
}

pub struct ServeOptions {
    pub state_dir: PathBuf,
    /// The `stratus` binary that agents run as.
    pub agent_program: PathBuf,
    /// Exit once no deployment is active (set when `stratus launch` started us).
    pub exit_when_idle: bool,
    /// Runs tiers' custom scaling rules (`[tiers.x.scaling] rule`); without it they warn.
    pub scalers: Option<Arc<dyn crate::app::ScalerRules>>,
    /// Compiles each uploaded package once into the agents' code cache (the binary passes
    /// one backed by the plugin runtime); `None`: every agent compiles what it loads.
    pub precompiler: Option<Arc<dyn stratus_engine::Precompiler>>,
    /// Starts the HTTP API over the same [`App`] once it is ready (the binary passes
    /// `stratus-http`'s, which this crate must not depend on).
    pub http: Option<HttpStart>,
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
}

/// Runs the control plane until it is asked to stop (or, with `exit_when_idle`, goes idle).
pub async fn serve(opts: ServeOptions) -> Result<(), ServeError> {
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
    let files = CloudFiles::local(paths.cloud_files()).map_err(setup("opening cloud files"))?;
    let token = keys
        .get_or_generate(CONTROL_TOKEN)
        .map_err(setup("control token"))?;
    keys.get_or_generate(CACHE_KEY)
        .map_err(setup("plugin cache key"))?;

    let listener = bind(&store).await?;
    let addr: SocketAddr = listener.local_addr().map_err(setup("control port"))?;
    let dispatcher = Dispatcher::new(logs.clone(), |c| {
        stratus_cloud::digest(&stratus_cloud::Secret::new(c))
    });
    let local = LocalProvider::new(paths.path().to_path_buf(), opts.agent_program.clone());
    // Further provider types (cloud drivers, SSH) register their factories here.
    let providers = ProviderRegistry::new(Arc::new(local));
    let agent_args = vec![
        "--cache-dir".to_string(),
        paths.cache().to_string_lossy().into_owned(),
        "--cache-key-file".to_string(),
        keys.dir().join(CACHE_KEY).to_string_lossy().into_owned(),
    ];
    let engine = Engine::new(EngineParts {
        state_dir: paths.path().to_path_buf(),
        store: store.clone(),
        providers: Arc::new(providers),
        agents: Arc::new(dispatcher.clone()),
        keys,
        files,
        cloud_files_dir: paths.cloud_files(),
        logs: logs.clone(),
        control_addr: addr,
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
    let control = Control {
        app,
        store: store.clone(),
        logs: logs.clone(),
        handshakes: dispatcher.handshakes().clone(),
        dispatcher,
        token: token.expose().to_string(),
        shutdown: Arc::new(Notify::new()),
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
    publish(&paths, addr.port(), http)?;
    logs.info(
        Component::Dispatcher,
        Subject::default(),
        &format!(
            "control plane listening on {addr} (pid {})",
            std::process::id()
        ),
    );

    let accept = {
        let control = control.clone();
        async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
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
    logs.info(
        Component::Dispatcher,
        Subject::default(),
        "control plane stopped",
    );
    Ok(())
}

/// Binds the port the previous control plane of this state directory used, so that its agents
/// (which know only that address) find their way back; a fresh port the first time.
async fn bind(store: &Store) -> Result<TcpListener, ServeError> {
    let previous = store
        .meta(PORT_KEY)
        .ok()
        .flatten()
        .and_then(|p| p.parse::<u16>().ok());
    if let Some(port) = previous {
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            Ok(l) => return Ok(l),
            Err(e) => tracing::warn!(
                port,
                error = %e,
                "previous control port unavailable; agents of running servers cannot reconnect"
            ),
        }
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
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
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(paths.control_lock())
        .map_err(setup("opening the control lock"))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
        let pid = std::fs::read_to_string(paths.control_file()).unwrap_or_default();
        ServeError::AlreadyRunning(pid.trim().to_string())
    })
}

fn publish(paths: &StatePaths, port: u16, http: Option<String>) -> Result<(), ServeError> {
    let info = ControlInfo {
        pid: std::process::id(),
        port,
        http,
    };
    let tmp = paths.root.join("control.json.tmp");
    let text = serde_json::to_string(&info).map_err(setup("control.json"))?;
    std::fs::write(&tmp, text).map_err(setup("writing control.json"))?;
    std::fs::rename(&tmp, paths.control_file()).map_err(setup("writing control.json"))
}

impl Control {
    async fn connection(&self, stream: TcpStream) {
        let Some((mut conn, hello)) = self.handshakes.hello(stream, &self.logs).await else {
            return;
        };
        match hello {
            Hello::Agent {
                deployment,
                server_id,
                credential,
                pid,
            } => {
                self.dispatcher
                    .serve_agent(conn, deployment, server_id, credential, pid)
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
                if conn.send(&Welcome::Welcome).await.is_err() {
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
