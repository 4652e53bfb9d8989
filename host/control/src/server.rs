//! `stratus serve`: the control plane process. It owns the state directory (one control plane
//! per directory, enforced with a lock), accepts agents and operators on a loopback port,
//! runs launches and terminations as tasks, and resumes unfinished work when it starts.

use crate::dispatcher::Dispatcher;
use crate::paths::{CACHE_KEY, CONTROL_TOKEN, ControlInfo, StatePaths};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use stratus_cloud::{CloudFiles, KeyStore};
use stratus_engine::logs::{Component, Logs, Subject};
use stratus_engine::{Engine, EngineParts};
use stratus_model::spec::DeploymentSpec;
use stratus_model::state::DeploymentState;
use stratus_protocol::{Connection, Envelope, Hello, OperatorReply, OperatorRequest, Welcome};
use stratus_provider::LocalProvider;
use stratus_store::Store;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;

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
}

#[derive(Clone)]
struct Control {
    engine: Engine,
    store: Store,
    logs: Logs,
    dispatcher: Dispatcher,
    token: String,
    tasks: Arc<Mutex<HashMap<String, JoinHandle<()>>>>,
    shutdown: Arc<Notify>,
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
    let provider = LocalProvider::new(paths.path().to_path_buf(), opts.agent_program.clone());
    let agent_args = vec![
        "--cache-dir".to_string(),
        paths.cache().to_string_lossy().into_owned(),
        "--cache-key-file".to_string(),
        keys.dir().join(CACHE_KEY).to_string_lossy().into_owned(),
    ];
    let engine = Engine::new(EngineParts {
        state_dir: paths.path().to_path_buf(),
        store: store.clone(),
        provider: Arc::new(provider),
        agents: Arc::new(dispatcher.clone()),
        keys,
        files,
        cloud_files_dir: paths.cloud_files(),
        logs: logs.clone(),
        control_addr: addr,
        agent_args,
    });
    let control = Control {
        engine,
        store: store.clone(),
        logs: logs.clone(),
        dispatcher,
        token: token.expose().to_string(),
        tasks: Arc::default(),
        shutdown: Arc::new(Notify::new()),
    };
    tokio::spawn(crate::monitor::watch_agents(
        control.engine.clone(),
        control.dispatcher.clone(),
    ));
    control.resume().await;
    publish(&paths, addr.port())?;
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

fn publish(paths: &StatePaths, port: u16) -> Result<(), ServeError> {
    let info = ControlInfo {
        pid: std::process::id(),
        port,
    };
    let tmp = paths.root.join("control.json.tmp");
    let text = serde_json::to_string(&info).map_err(setup("control.json"))?;
    std::fs::write(&tmp, text).map_err(setup("writing control.json"))?;
    std::fs::rename(&tmp, paths.control_file()).map_err(setup("writing control.json"))
}

impl Control {
    /// Picks up where a previous control plane stopped: agents may reconnect, launches and
    /// terminations in flight continue from their journal.
    async fn resume(&self) {
        let Ok(rows) = self.store.deployments::<DeploymentState>() else {
            return;
        };
        for row in rows {
            for s in self
                .store
                .servers::<stratus_model::state::AgentState>(&row.name)
                .unwrap_or_default()
            {
                if s.agent_state != stratus_model::state::AgentState::Terminated {
                    self.dispatcher
                        .expect(
                            (row.name.clone(), s.id.clone()),
                            s.credential_digest.clone(),
                        )
                        .await;
                }
            }
            let spec = match DeploymentSpec::from_str(&row.spec_toml, &row.spec_path) {
                Ok(spec) => spec,
                Err(e) => {
                    self.logs.error(
                        Component::MonitorDeployment,
                        Subject {
                            deployment: Some(&row.name),
                            ..Subject::default()
                        },
                        &format!("cannot resume: {e}"),
                    );
                    continue;
                }
            };
            match row.state {
                DeploymentState::Pending | DeploymentState::Launching => {
                    self.logs.info(
                        Component::MonitorDeployment,
                        Subject {
                            deployment: Some(&row.name),
                            ..Subject::default()
                        },
                        "resuming launch after control plane restart",
                    );
                    self.spawn_launch(spec).await;
                }
                DeploymentState::Stopping => self.spawn_terminate(spec, None).await,
                _ => {}
            }
        }
    }

    async fn spawn_launch(&self, spec: DeploymentSpec) {
        let engine = self.engine.clone();
        let name = spec.name.to_string();
        let handle = tokio::spawn(async move {
            let _ = engine.launch(&spec).await;
        });
        self.tasks.lock().await.insert(name, handle);
    }

    /// Terminates `spec`'s deployment; `keep_disks` is `None` for a resumed terminate, which
    /// keeps to the choice it was started with.
    async fn spawn_terminate(&self, spec: DeploymentSpec, keep_disks: Option<bool>) {
        let engine = self.engine.clone();
        let name = spec.name.to_string();
        let previous = self.tasks.lock().await.remove(&name);
        let handle = tokio::spawn(async move {
            // A launch still running is stopped first: terminate wins.
            if let Some(p) = previous {
                p.abort();
                let _ = p.await;
            }
            let _ = match keep_disks {
                Some(keep) => engine.terminate(&spec, keep).await,
                None => engine.resume_terminate(&spec).await,
            };
        });
        self.tasks.lock().await.insert(name, handle);
    }

    async fn connection(&self, stream: TcpStream) {
        let mut conn = Connection::new(stream);
        let hello = match tokio::time::timeout(Duration::from_secs(10), conn.recv::<Hello>()).await
        {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                self.logs.warn(
                    Component::Dispatcher,
                    Subject::default(),
                    &format!("rejected a connection: {e}"),
                );
                return;
            }
            Err(_) => return,
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
                    self.logs.warn(
                        Component::Dispatcher,
                        Subject::default(),
                        "refused an operator connection: wrong control token",
                    );
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

    async fn operator(&self, req: OperatorRequest) -> OperatorReply {
        match req {
            OperatorRequest::Ping => OperatorReply::Pong {
                pid: std::process::id(),
            },
            OperatorRequest::Shutdown => {
                self.shutdown.notify_one();
                OperatorReply::Done
            }
            OperatorRequest::Launch { file } => match self.launch(&file).await {
                Ok(name) => OperatorReply::Accepted { deployment: name },
                Err(message) => OperatorReply::Error { message },
            },
            OperatorRequest::Terminate { name, keep_disks } => {
                match self.terminate(&name, keep_disks).await {
                    Ok(()) => OperatorReply::Accepted { deployment: name },
                    Err(message) => OperatorReply::Error { message },
                }
            }
        }
    }

    async fn launch(&self, file: &str) -> Result<String, String> {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
        let (spec, warnings) = validate_for_launch(&text, file).await?;
        let name = spec.name.to_string();
        if let Some(row) = self
            .store
            .deployment::<DeploymentState>(&name)
            .map_err(|e| e.to_string())?
        {
            match row.state {
                DeploymentState::Terminated => {}
                DeploymentState::Failed { .. } => {
                    // Launching a failed deployment again resumes it: done steps are skipped.
                }
                // The same file again is nothing to do; launch reports it RUNNING.
                DeploymentState::Running if row.spec_toml == text => return Ok(name),
                DeploymentState::Pending | DeploymentState::Launching => {
                    // Already on its way (perhaps resumed after a restart): follow it.
                    let tasks = self.tasks.lock().await;
                    let running = tasks.get(&name).is_some_and(|h| !h.is_finished());
                    drop(tasks);
                    if !running {
                        self.record_warnings(&name, &warnings);
                        self.spawn_launch(spec).await;
                    }
                    return Ok(name);
                }
                other => {
                    return Err(format!(
                        "deployment {name} is {other}; terminate it before launching it again"
                    ));
                }
            }
        }
        // Refused before the deployment is recorded or any server starts.
        self.engine
            .check_capacity(&spec)
            .map_err(|e| e.to_string())?;
        self.store
            .put_deployment(&name, file, &text, &DeploymentState::Launching)
            .map_err(|e| e.to_string())?;
        self.record_warnings(&name, &warnings);
        self.spawn_launch(spec).await;
        Ok(name)
    }

    /// Launch validation's warnings (e.g. programs that run arbitrary code) become events.
    fn record_warnings(&self, name: &str, warnings: &[stratus_model::SpecError]) {
        for w in warnings {
            let subject = Subject {
                deployment: Some(name),
                ..Subject::default()
            };
            self.logs
                .warn(Component::ConfigurationWorker, subject, &w.to_string());
        }
    }

    async fn terminate(&self, name: &str, keep_disks: bool) -> Result<(), String> {
        let row = self
            .store
            .deployment::<DeploymentState>(name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no deployment named {name}"))?;
        if row.state == DeploymentState::Terminated {
            return Err(format!("deployment {name} is already TERMINATED"));
        }
        let spec =
            DeploymentSpec::from_str(&row.spec_toml, &row.spec_path).map_err(|e| e.to_string())?;
        self.spawn_terminate(spec, Some(keep_disks)).await;
        Ok(())
    }

    /// Resolves when the control plane has had nothing to do for a while.
    async fn idle_watch(self, enabled: bool) {
        if !enabled {
            std::future::pending::<()>().await;
        }
        let mut idle_for = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let busy_task = self.tasks.lock().await.values().any(|h| !h.is_finished());
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

/// The launch checks of a deployment file (every package held against its manifest), off the
/// async threads because they read package archives. Nothing is created when they fail.
async fn validate_for_launch(
    text: &str,
    file: &str,
) -> Result<(DeploymentSpec, Vec<stratus_model::SpecError>), String> {
    let (text, file) = (text.to_string(), file.to_string());
    tokio::task::spawn_blocking(move || DeploymentSpec::from_str_for_launch(&text, &file))
        .await
        .map_err(|e| format!("validating the deployment file: {e}"))?
        .map_err(|e| e.to_string())
}

/// Compares secrets without leaking their common prefix length through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
