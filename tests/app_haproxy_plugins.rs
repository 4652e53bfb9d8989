//! The haproxy and app plugins against real processes, driven through the plugin runtime with
//! one shared supervisor across calls (as an agent does). HAProxy balances over two tiny
//! backends on their own loopback addresses and soft-reloads without dropping a request in
//! flight; the greeter reads its table from a MariaDB the test starts, connecting from its own
//! address, which the database's per-address grant lets in.

#[path = "app_haproxy_plugins/harness.rs"]
mod harness;

use harness::{Mariadb, Service, StopOnDrop, backend, context, copy_dir, free_port, get, pkg_dir};
use std::net::{Ipv4Addr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use stratus_model::context::{
    Credential, Dependency, DependencyKind, HealthStatus, HookCall, Port, ProxyNode, ServerInfo,
};
use stratus_plugin_runtime::{ProcessState, Supervisor};

const LB: Ipv4Addr = Ipv4Addr::new(127, 66, 0, 1);
const NODE_A: Ipv4Addr = Ipv4Addr::new(127, 66, 0, 2);
const NODE_B: Ipv4Addr = Ipv4Addr::new(127, 66, 0, 3);
const APP: Ipv4Addr = Ipv4Addr::new(127, 66, 1, 1);
const DB: Ipv4Addr = Ipv4Addr::new(127, 66, 1, 2);
const STRANGER: Ipv4Addr = Ipv4Addr::new(127, 66, 1, 3);
const PASSWORD: &str = "greeter-pw-\"quoted\"";

/// Which backends answer `n` consecutive requests.
#[track_caller]
fn answering(port: u16, n: usize) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..n {
        let (status, body) = get(LB, port, "/");
        assert_eq!(status, 200, "{body}");
        seen.insert(body);
    }
    seen
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
    let (tx, held) = mpsc::channel();
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
    assert!(
        svc_dir.join("haproxy-1.ready").exists(),
        "the ready socket is missing"
    );
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
    let release = held.recv_timeout(Duration::from_secs(10)).unwrap();
    let ProcessState::Running(old_pid) = sup.state("lb", "haproxy-2") else {
        panic!("haproxy-2 is not running");
    };
    lb.call(start_proxy(vec![a.clone()])).await;
    assert!(matches!(
        sup.state("lb", "haproxy-3"),
        ProcessState::Running(_)
    ));
    // The old generation stays to finish the held request instead of being killed.
    assert_eq!(sup.state("lb", "haproxy-2"), ProcessState::Running(old_pid));
    release.send(()).unwrap();
    let (status, body) = slow.join().unwrap();
    assert_eq!(status, 200, "the pending request was dropped: {body}");
    assert!(body.starts_with("node-"), "{body}");
    assert_eq!(answering(port, 4), ["node-a"].map(String::from).into());
    // The old generation drains and exits by itself (SIGUSR1 from `-sf`).
    let deadline = Instant::now() + Duration::from_secs(10);
    while matches!(sup.state("lb", "haproxy-2"), ProcessState::Running(_)) {
        assert!(
            Instant::now() < deadline,
            "haproxy-2 (pid {old_pid}) never exited"
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
    let left: Vec<_> = std::fs::read_dir(&svc_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
        .collect();
    assert!(left.is_empty(), "ready sockets left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_serves_the_greetings_table_from_its_own_address() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Supervisor::new(dir.path().join("logs"));
    let _stop = StopOnDrop(sup.clone());
    let db_port = free_port(DB);
    let db = Mariadb::start(dir.path(), DB, db_port);
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
