//! Shared setup for `app_haproxy_plugins`: plugin calls with one supervisor, tiny HTTP
//! backends and client, and a MariaDB server of the test's own.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use stratus_model::context::{HealthStatus, HookCall, Port, ServerInfo, ServiceContext};
use stratus_plugin_runtime::{
    CallEnv, CallFailure, HookOutcome, HookValue, Labels, Package, Plugin, Runtime, RuntimeConfig,
    Supervisor, dirs_of,
};

/// Stops every process the test's supervisor started, also when an assertion fails.
pub struct StopOnDrop(pub Supervisor);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let sup = self.0.clone();
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(sup.stop_all(Duration::from_secs(10)))
        });
    }
}

/// One plugin, one service context and the supervisor shared by all its calls.
pub struct Service {
    plugin: Plugin,
    sup: Supervisor,
    pub ctx: ServiceContext,
}

impl Service {
    pub async fn new(package: &str, ctx: ServiceContext, sup: &Supervisor) -> Service {
        let rt = Runtime::new(RuntimeConfig {
            cache_dir: None,
            cache_key: [3; 32],
            max_concurrent_calls: 2,
            max_component_bytes: stratus_plugin_runtime::DEFAULT_MAX_COMPONENT_BYTES,
        })
        .unwrap();
        let pkg = Package::open(&stratus_plugin_artifacts::package_dir(package)).unwrap();
        let plugin = rt.load(&pkg).await.unwrap();
        // Install: the package's files land in the service directory.
        copy_dir(
            &pkg_dir(package).join("cfg"),
            &Path::new(&ctx.service_dir).join("cfg"),
        );
        Service {
            plugin,
            sup: sup.clone(),
            ctx,
        }
    }

    pub async fn try_call(&self, call: HookCall) -> Result<HookOutcome, CallFailure> {
        let env = CallEnv {
            sealed_package: None,
            dirs: dirs_of(&call),
            server_address: self.ctx.server.address.clone(),
            supervisor: self.sup.clone(),
            capabilities: None,
            secrets: call.secrets(),
            labels: Labels::of(&call),
        };
        self.plugin.call(&call, &env).await
    }

    pub async fn call(&self, call: HookCall) -> HookOutcome {
        let hook = call.name();
        match self.try_call(call).await {
            Ok(o) => o,
            Err(f) => panic!("{hook} failed: {}\nlogs: {:?}", f.kind, f.logs),
        }
    }

    pub async fn hook(&self, hook: &str) -> HookOutcome {
        let ctx = self.ctx.clone();
        self.call(match hook {
            "install-service" => HookCall::InstallService { ctx },
            "configure" => HookCall::Configure { ctx },
            "start" => HookCall::Start { ctx },
            "stop" => HookCall::Stop { ctx },
            _ => HookCall::HealthCheck { ctx },
        })
        .await
    }

    pub async fn health(&self) -> HealthStatus {
        match self.hook("health-check").await.value {
            HookValue::Health(h) => h.status,
            other => panic!("health-check returned {other:?}"),
        }
    }

    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(Path::new(&self.ctx.service_dir).join(name)).unwrap()
    }
}

pub fn pkg_dir(name: &str) -> PathBuf {
    stratus_plugin_artifacts::package_dir(name)
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

pub fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn context(dir: &Path, tier: &str, name: &str, ip: Ipv4Addr, port: u16) -> ServiceContext {
    ServiceContext {
        deployment: "shop".into(),
        tier: tier.into(),
        server: ServerInfo {
            id: format!("{tier}-1"),
            name: format!("shop-{tier}-1"),
            address: ip.to_string(),
        },
        service_id: "7".into(),
        service_name: name.into(),
        service_dir: dir.to_str().unwrap().into(),
        settings: Vec::new(),
        ports: vec![Port {
            name: "http".into(),
            private_port: port,
            public_port: port,
        }],
        credentials: Vec::new(),
        data_source: None,
        dependencies: Vec::new(),
    }
}

/// `GET path` with a fresh connection; returns the status code and body.
pub fn get(ip: Ipv4Addr, port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect((ip, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

/// The test's handle on a held `/slow` request: sending on it lets the response go.
pub type Release = mpsc::Sender<()>;

/// A backend answering its own name. A `/slow` request is held until the test releases it
/// (the handle arrives on `held`), so the test can reload while the response is pending.
pub fn backend(ip: Ipv4Addr, name: &'static str, held: mpsc::Sender<Release>) -> u16 {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let held = held.clone();
            std::thread::spawn(move || serve(conn, name, &held));
        }
    });
    port
}

fn serve(conn: TcpStream, name: &str, held: &mpsc::Sender<Release>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut first = String::new();
    // Health checks connect and close without a request.
    if reader.read_line(&mut first).unwrap_or(0) == 0 {
        return;
    }
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 2 {
        line.clear();
    }
    if first.starts_with("GET /slow") {
        let (release, wait) = mpsc::channel();
        let _ = held.send(release);
        let _ = wait.recv_timeout(Duration::from_secs(30));
    }
    let mut conn = conn;
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
        name.len()
    );
}

/// A MariaDB server of the test's own, stopped (by pid) on drop.
pub struct Mariadb {
    child: Child,
    socket: PathBuf,
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Mariadb {
    pub fn start(dir: &Path, ip: Ipv4Addr, port: u16) -> Mariadb {
        let data = dir.join("data");
        let out = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--user=root", "--skip-test-db"])
            .arg(format!("--datadir={}", data.display()))
            .arg("--auth-root-authentication-method=socket")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let socket = dir.join("db.sock");
        let child = Command::new("/usr/sbin/mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--log-error={}", dir.join("db.err").display()))
            .arg(format!("--pid-file={}", dir.join("db.pid").display()))
            .args(["--user=root", "--skip-name-resolve"])
            .arg(format!("--bind-address={ip}"))
            .arg(format!("--port={port}"))
            .spawn()
            .unwrap();
        let db = Mariadb { child, socket };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect((ip, port)).is_err() {
            assert!(Instant::now() < deadline, "mariadbd did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        db
    }

    pub fn sql(&self, sql: &str) {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "--user=root", "--batch"])
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--execute={sql}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
