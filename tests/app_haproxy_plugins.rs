//! The haproxy and app plugins against real processes, driven through the plugin runtime with
//! one shared supervisor across calls (as an agent does). HAProxy balances over two tiny
//! backends on their own loopback addresses and soft-reloads without dropping a request in
//! flight; the greeter reads its table from a MariaDB the test starts, connecting from its own
//! address, which the database's per-address grant lets in.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use stratus_model::context::{
    Credential, Dependency, DependencyKind, HealthStatus, HookCall, Port, ProxyNode, ServerInfo,
    ServiceContext,
};
use stratus_plugin_runtime::{
    CallEnv, CallFailure, HookOutcome, HookValue, Labels, Package, Plugin, ProcessState, Runtime,
    RuntimeConfig, Supervisor, dirs_of,
};

const LB: Ipv4Addr = Ipv4Addr::new(127, 66, 0, 1);
const NODE_A: Ipv4Addr = Ipv4Addr::new(127, 66, 0, 2);
const NODE_B: Ipv4Addr = Ipv4Addr::new(127, 66, 0, 3);
const APP: Ipv4Addr = Ipv4Addr::new(127, 66, 1, 1);
const DB: Ipv4Addr = Ipv4Addr::new(127, 66, 1, 2);
const STRANGER: Ipv4Addr = Ipv4Addr::new(127, 66, 1, 3);
const PASSWORD: &str = "greeter-pw-\"quoted\"";

/// Stops every process the test's supervisor started, also when an assertion fails.
struct StopOnDrop(Supervisor);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let sup = self.0.clone();
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(sup.stop_all(Duration::from_secs(10)))
        });
    }
}

/// One plugin, one service context and the supervisor shared by all its calls.
struct Service {
    plugin: Plugin,
    sup: Supervisor,
    ctx: ServiceContext,
}

impl Service {
    async fn new(package: &str, ctx: ServiceContext, sup: &Supervisor) -> Service {
        let rt = Runtime::new(RuntimeConfig {
            cache_dir: None,
            cache_key: [3; 32],
            max_concurrent_calls: 2,
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

    async fn try_call(&self, call: HookCall) -> Result<HookOutcome, CallFailure> {
        let env = CallEnv {
            dirs: dirs_of(&call),
            server_address: self.ctx.server.address.clone(),
            supervisor: self.sup.clone(),
            capabilities: None,
            secrets: call.secrets(),
            labels: Labels::of(&call),
        };
        self.plugin.call(&call, &env).await
    }

    async fn call(&self, call: HookCall) -> HookOutcome {
        let hook = call.name();
        match self.try_call(call).await {
            Ok(o) => o,
            Err(f) => panic!("{hook} failed: {}\nlogs: {:?}", f.kind, f.logs),
        }
    }

    async fn hook(&self, hook: &str) -> HookOutcome {
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

    async fn health(&self) -> HealthStatus {
        match self.hook("health-check").await.value {
            HookValue::Health(h) => h.status,
            other => panic!("health-check returned {other:?}"),
        }
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(Path::new(&self.ctx.service_dir).join(name)).unwrap()
    }
}

fn pkg_dir(name: &str) -> std::path::PathBuf {
    stratus_plugin_artifacts::package_dir(name)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn context(dir: &Path, tier: &str, name: &str, ip: Ipv4Addr, port: u16) -> ServiceContext {
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
fn get(ip: Ipv4Addr, port: u16, path: &str) -> (u16, String) {
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

/// A backend answering its own name; `/slow` answers after a second and reports on `seen`
/// that it has the request, so the test can reload while the response is pending.
fn backend(ip: Ipv4Addr, name: &'static str, seen: mpsc::Sender<&'static str>) -> u16 {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || serve(conn, name, &seen));
        }
    });
    port
}

fn serve(conn: TcpStream, name: &str, seen: &mpsc::Sender<&'static str>) {
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
        let _ = seen.send("slow");
        std::thread::sleep(Duration::from_secs(1));
    }
    let mut conn = conn;
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
        name.len()
    );
}

/// Which backends answer `n` consecutive requests.
fn answering(port: u16, n: usize) -> std::collections::BTreeSet<String> {
    (0..n)
        .map(|_| {
            let (status, body) = get(LB, port, "/");
            assert_eq!(status, 200, "{body}");
            body
        })
        .collect()
}

fn node(name: &str, ip: &str, port: u16) -> ProxyNode {
    ProxyNode {
        server: ServerInfo {
            id: name.into(),
            name: name.into(),
            address: ip.into(),
        },
        port,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_balances_reloads_softly_and_keeps_a_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Supervisor::new(dir.path().join("logs"));
    let _stop = StopOnDrop(sup.clone());
    let svc_dir = dir.path().join("a7");
    std::fs::create_dir_all(&svc_dir).unwrap();
    let port = free_port(LB);
    let lb = Service::new("haproxy", context(&svc_dir, "lb", "lb", LB, port), &sup).await;
    let (tx, slow_seen) = mpsc::channel();
    let a = node(
        "node-a",
        &NODE_A.to_string(),
        backend(NODE_A, "node-a", tx.clone()),
    );
    let b = node("node-b", &NODE_B.to_string(), backend(NODE_B, "node-b", tx));

    lb.hook("configure").await;
    assert!(
        lb.file("haproxy.cfg")
            .contains(&format!("bind {LB}:{port}"))
    );
    lb.hook("start").await;
    lb.hook("start").await; // idempotent: still one generation
    assert_eq!(lb.file("generations.txt"), "haproxy-1\n");
    assert_eq!(lb.health().await, HealthStatus::Ok);
    assert_eq!(get(LB, port, "/").0, 503, "no nodes yet");

    let both = vec![a.clone(), b.clone()];
    let start_proxy = |nodes: Vec<ProxyNode>| HookCall::StartProxy {
        ctx: lb.ctx.clone(),
        nodes,
    };
    lb.call(start_proxy(both.clone())).await;
    assert_eq!(
        answering(port, 6),
        ["node-a", "node-b"].map(String::from).into()
    );

    // A request in flight across a reload that drops its node from the set.
    let slow = std::thread::spawn(move || get(LB, port, "/slow"));
    slow_seen.recv_timeout(Duration::from_secs(10)).unwrap();
    let gen1 = match sup.state("lb", "haproxy-2") {
        ProcessState::Running(pid) => pid,
        other => panic!("haproxy-2 is {other:?}"),
    };
    lb.call(start_proxy(vec![a.clone()])).await;
    let (status, body) = slow.join().unwrap();
    assert_eq!(status, 200, "the pending request was dropped: {body}");
    assert!(body.starts_with("node-"), "{body}");
    assert_eq!(answering(port, 4), ["node-a"].map(String::from).into());
    // The old generation drains and exits by itself (SIGUSR1 from `-sf`).
    let deadline = Instant::now() + Duration::from_secs(10);
    while matches!(sup.state("lb", "haproxy-2"), ProcessState::Running(_)) {
        assert!(
            Instant::now() < deadline,
            "haproxy-2 (pid {gen1}) never exited"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!lb.file("haproxy.cfg").contains("node-b"));

    // remove-nodes drops nodes from the current set.
    lb.call(start_proxy(both)).await;
    lb.call(HookCall::RemoveNodes {
        ctx: lb.ctx.clone(),
        nodes: vec![a.clone()],
    })
    .await;
    assert_eq!(
        lb.file("nodes.txt"),
        format!("node-b {}:{}\n", b.server.address, b.port)
    );
    assert_eq!(answering(port, 4), ["node-b"].map(String::from).into());

    // An invalid node is refused with haproxy's own message; the running config stays.
    let before = lb.file("haproxy.cfg");
    let bad = node("bad", "999.0.0.1", 80);
    let err = lb
        .try_call(start_proxy(vec![b.clone(), bad]))
        .await
        .unwrap_err();
    let msg = err.kind.to_string();
    assert!(
        msg.contains("could not resolve address '999.0.0.1'"),
        "{msg}"
    );
    assert_eq!(lb.file("haproxy.cfg"), before);
    assert_eq!(answering(port, 2), ["node-b"].map(String::from).into());

    // stop ends every generation and the port closes.
    lb.hook("stop").await;
    for g in 1..=5 {
        let state = sup.state("lb", &format!("haproxy-{g}"));
        assert!(
            !matches!(state, ProcessState::Running(_)),
            "haproxy-{g} is {state:?}"
        );
    }
    assert_eq!(lb.health().await, HealthStatus::Critical);
    assert!(TcpStream::connect((LB, port)).is_err());
}

/// A MariaDB server of the test's own, stopped (by pid) on drop.
struct Mariadb {
    child: Child,
    socket: std::path::PathBuf,
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Mariadb {
    fn start(dir: &Path, port: u16) -> Mariadb {
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
            .arg(format!("--bind-address={DB}"))
            .arg(format!("--port={port}"))
            .spawn()
            .unwrap();
        let db = Mariadb { child, socket };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect((DB, port)).is_err() {
            assert!(Instant::now() < deadline, "mariadbd did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        db
    }

    fn sql(&self, sql: &str) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_serves_the_greetings_table_from_its_own_address() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Supervisor::new(dir.path().join("logs"));
    let _stop = StopOnDrop(sup.clone());
    let db_port = free_port(DB);
    let db = Mariadb::start(dir.path(), db_port);
    let esc = PASSWORD.replace('"', "\\\"");
    db.sql(&format!(
        "CREATE DATABASE hello; CREATE TABLE hello.greetings (id INT PRIMARY KEY, message TEXT); \
         INSERT INTO hello.greetings VALUES (1, 'hello'), (2, 'bonjour'); \
         CREATE USER 'greeter'@'{APP}' IDENTIFIED BY \"{esc}\"; \
         GRANT SELECT ON hello.* TO 'greeter'@'{APP}';"
    ));

    let svc_dir = dir.path().join("a9");
    std::fs::create_dir_all(&svc_dir).unwrap();
    let port = free_port(APP);
    let mut ctx = context(&svc_dir, "app", "app", APP, port);
    ctx.dependencies.push(Dependency {
        service: "db".into(),
        kind: DependencyKind::DataSource,
        servers: vec![ServerInfo {
            id: "db-1".into(),
            name: "shop-db-1".into(),
            address: DB.to_string(),
        }],
        ports: vec![Port {
            name: "mysql".into(),
            private_port: db_port,
            public_port: db_port,
        }],
        credentials: vec![Credential {
            name: "app".into(),
            user: "greeter".into(),
            password: PASSWORD.into(),
        }],
        database: Some("hello".into()),
        settings: Vec::new(),
    });
    let app = Service::new("app", ctx, &sup).await;

    // Without the binary, install-service says which file is missing.
    let err = app
        .try_call(HookCall::InstallService {
            ctx: app.ctx.clone(),
        })
        .await;
    assert!(
        err.unwrap_err()
            .kind
            .to_string()
            .contains("bin/greeter is missing")
    );
    copy_dir(&pkg_dir("app").join("bin"), &svc_dir.join("bin"));
    app.hook("install-service").await;
    app.hook("configure").await;
    let conf = app.file("greeter.toml");
    for fact in [
        format!("listen_address = \"{APP}\""),
        format!("listen_port = {port}"),
        format!("db_host = \"{DB}\""),
        format!("db_port = {db_port}"),
        "db_name = \"hello\"".into(),
        "server_name = \"shop-app-1\"".into(),
    ] {
        assert!(
            conf.contains(&fact),
            "{fact} missing from the rendered config"
        );
    }
    assert_eq!(
        app.health().await,
        HealthStatus::Critical,
        "not started yet"
    );
    app.hook("start").await;
    app.hook("start").await; // idempotent
    assert_eq!(app.health().await, HealthStatus::Ok);

    let (status, body) = get(APP, port, "/");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        r#"{"server":"shop-app-1","greetings":[{"id":1,"message":"hello"},{"id":2,"message":"bonjour"}]}"#
    );
    assert_eq!(get(APP, port, "/nope").0, 404);

    // The grant names the app's address: moving it to another address locks the app out.
    db.sql(&format!(
        "RENAME USER 'greeter'@'{APP}' TO 'greeter'@'{STRANGER}';"
    ));
    let (status, body) = get(APP, port, "/");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(&format!("database {DB}:{db_port}")), "{body}");
    // MariaDB names the client's source address: the greeter's own, not 127.0.0.1.
    assert!(
        body.contains(&format!("Host '{APP}' is not allowed")),
        "{body}"
    );
    assert!(!body.contains("quoted"), "the password leaked: {body}");

    // Without a database at all the error still names its address.
    drop(db);
    let (status, body) = get(APP, port, "/");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(&format!("database {DB}:{db_port}")), "{body}");

    app.hook("stop").await;
    app.hook("stop").await; // stopping a stopped service succeeds
    assert_eq!(app.health().await, HealthStatus::Critical);
    assert!(TcpStream::connect((APP, port)).is_err());
}
