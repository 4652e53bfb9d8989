//! Auto-recovery with real software: the three-tier example (HAProxy, two greeter app servers,
//! MariaDB) through the real binary. A killed app server is replaced and both sides follow:
//! HAProxy balances exactly the new set, MariaDB lets in the new address and refuses the old
//! one. A killed database server is replaced, its data source loaded again, and the app
//! servers are reconfigured to its new address and restarted, so rows come through again.

use crate::common;

use common::{Stratus, read, server_root, servers, wait_gone};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpSocket;

const DEP: &str = "shop";

/// Every process whose command line mentions the state directory (agents, mariadbd,
/// haproxy and the greeters all run with paths inside it).
fn processes_under(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&needle) && common::alive(pid) {
            out.push((pid, cmd));
        }
    }
    out
}

/// The one service directory of a server.
fn service_dir(st: &Stratus, server: &Value) -> PathBuf {
    let dir = server_root(st, DEP, server).join("mnt/services");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries.remove(0)
}

fn address(server: &Value) -> Ipv4Addr {
    server["address"].as_str().unwrap().parse().unwrap()
}

fn addresses(list: &[Value]) -> BTreeSet<Ipv4Addr> {
    list.iter().map(address).collect()
}

/// The addresses in the `server` lines of HAProxy's running configuration.
fn balanced(st: &Stratus, lb: &Value) -> BTreeSet<Ipv4Addr> {
    read(&service_dir(st, lb).join("haproxy.cfg"))
        .lines()
        .filter(|l| l.trim_start().starts_with("server "))
        .filter_map(|l| l.split_whitespace().nth(2))
        .map(|a| a.rsplit_once(':').unwrap().0.parse().unwrap())
        .collect()
}

/// Runs SQL as the database server's admin (the plugin's generated login) over its socket.
fn admin_sql(st: &Stratus, db: &Value, sql: &str) -> String {
    let dir = service_dir(st, db);
    let out = std::process::Command::new("/usr/bin/mariadb")
        .arg(format!(
            "--defaults-file={}/private/admin.cnf",
            dir.display()
        ))
        .arg(format!("--socket={}/private/mariadb.sock", dir.display()))
        .args(["--batch", "--skip-column-names", "-e", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The hosts MariaDB has accounts for, other than its own local ones.
fn account_hosts(st: &Stratus, db: &Value) -> BTreeSet<Ipv4Addr> {
    admin_sql(st, db, "SELECT host FROM mysql.user")
        .lines()
        .filter_map(|h| h.trim().parse().ok())
        .filter(|h: &Ipv4Addr| *h != Ipv4Addr::LOCALHOST)
        .collect()
}

/// The first packet MariaDB sends to a client connecting from `source`.
async fn greeting_from(source: Ipv4Addr, db: SocketAddr) -> Vec<u8> {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from((source, 0))).unwrap();
    let mut stream = sock.connect(db).await.unwrap();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    buf.truncate(n);
    buf
}

async fn assert_refused(source: Ipv4Addr, db: SocketAddr) {
    let text = String::from_utf8_lossy(&greeting_from(source, db).await).into_owned();
    assert!(
        text.contains("is not allowed to connect"),
        "{source}: {text}"
    );
}

async fn assert_admitted(source: Ipv4Addr, db: SocketAddr) {
    let greeting = greeting_from(source, db).await;
    assert_eq!(
        greeting.get(4),
        Some(&10u8),
        "{source} gets the protocol-10 handshake: {}",
        String::from_utf8_lossy(&greeting)
    );
}

/// Requests through the load balancer until each of `names` answered with rows from MariaDB.
fn rows_from_every_app(endpoint: &str, names: &[String]) {
    let mut seen = BTreeSet::new();
    for _ in 0..12 {
        let response = common::http::get_root(endpoint);
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response.contains("Hello from the database tier")
                && response.contains("Hallo aus der Datenbank"),
            "{response}"
        );
        seen.extend(names.iter().filter(|n| response.contains(n.as_str())));
    }
    assert_eq!(seen.len(), names.len(), "answered: {seen:?} of {names:?}");
}

/// Kills every process of a server at once, as a crashed machine would end them: its agent's
/// process group and every program it supervises (they lead groups of their own).
fn kill_server(st: &Stratus, server: &Value) {
    let pid = server["pid"].as_u64().unwrap() as u32;
    let mut pids = vec![pid];
    pids.extend(
        processes_under(&server_root(st, DEP, server))
            .into_iter()
            .map(|(p, _)| p),
    );
    assert!(pids.len() > 1, "the server runs programs: {pids:?}");
    for p in &pids {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{p}")])
            .output();
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &p.to_string()])
            .output();
    }
    for p in pids {
        assert!(wait_gone(p, Duration::from_secs(10)), "{p} survived");
    }
}

/// Polls the deployment until `done` holds, for at most `limit`.
fn wait_for(st: &Stratus, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let d = st.deployment(DEP);
        if done(&d) || Instant::now() > deadline {
            return d;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn launch(st: &Stratus) -> Value {
    let file = stratus_plugin_artifacts::repo_root().join("examples/three-tier/deployment.toml");
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = st.deployment(DEP);
    assert_eq!(d["state"], "RUNNING", "{d}");
    d
}

fn events(st: &Stratus) -> String {
    st.ok(&["events", "--deployment", DEP])
}

/// Terminates and checks that nothing the test started is left.
fn terminate_all(st: &Stratus) {
    let running = processes_under(st.dir());
    st.ok(&["terminate", DEP]);
    for (pid, cmd) in &running {
        assert!(
            wait_gone(*pid, Duration::from_secs(15)),
            "still running after terminate: {cmd}"
        );
    }
    let left: Vec<_> = processes_under(st.dir())
        .into_iter()
        .filter(|(_, c)| !c.contains(" serve "))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Nothing runs any more from the lost server's root.
fn nothing_left_of(st: &Stratus, server: &Value) {
    let root = server_root(st, DEP, server);
    let start = Instant::now();
    loop {
        let left = processes_under(&root);
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "left of {}: {left:?}",
            server["id"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_app_server_is_replaced_and_haproxy_and_mariadb_follow() {
    let st = Stratus::new();
    let d = launch(&st);
    let app = servers(&d, "app");
    let old = app[0].clone();
    let old_address = address(&old);
    let db = SocketAddr::from((address(&servers(&d, "db")[0]), 3306));
    assert_admitted(old_address, db).await;
    kill_server(&st, &old);

    let d = wait_for(&st, Duration::from_secs(90), |d| {
        d["state"] == "RUNNING" && servers(d, "app").iter().all(|s| s["id"] != "app-1")
    });
    assert_eq!(d["state"], "RUNNING", "{d}\n{}", events(&st));
    let app = servers(&d, "app");
    let ids: Vec<&str> = app.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["app-2", "app-3"], "{d}");
    for s in &app {
        assert_eq!(s["agent"], "RUNNING", "{s}");
        assert_eq!(s["services"][0]["state"], "RUNNING", "{s}");
    }
    let live = addresses(&app);
    assert!(!live.contains(&old_address), "{live:?}");
    nothing_left_of(&st, &old);

    // HAProxy balances exactly the live app servers.
    let lb = &servers(&d, "lb")[0];
    assert_eq!(balanced(&st, lb), live, "haproxy.cfg");

    // MariaDB has accounts for exactly the live addresses, admits the new one and refuses
    // the old one.
    let db_server = &servers(&d, "db")[0];
    assert_eq!(account_hosts(&st, db_server), live, "mysql.user hosts");
    let new_address = address(&app[1]);
    assert_admitted(new_address, db).await;
    assert_refused(old_address, db).await;

    // Requests through the load balancer reach both live servers and bring rows.
    let endpoint = d["endpoints"][0].as_str().unwrap();
    rows_from_every_app(endpoint, &["shop-app-2".into(), "shop-app-3".into()]);

    let ev = events(&st);
    assert!(ev.contains("replaced by app-3, RUNNING after"), "{ev}");
    terminate_all(&st);
}

/// The greeter's rendered database host on an app server.
fn db_host_of(st: &Stratus, app: &Value) -> String {
    let text = read(&service_dir(st, app).join("greeter.toml"));
    text.lines()
        .find_map(|l| l.strip_prefix("db_host = "))
        .unwrap_or_else(|| panic!("no db_host in {text}"))
        .trim_matches('"')
        .to_string()
}

/// The pids of the greeters running on `server`.
fn greeters_of(st: &Stratus, server: &Value) -> BTreeSet<u32> {
    processes_under(&server_root(st, DEP, server))
        .into_iter()
        .filter(|(_, c)| c.contains("greeter --config"))
        .map(|(p, _)| p)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_database_server_is_replaced_and_the_app_servers_follow_it() {
    let st = Stratus::new();
    let d = launch(&st);
    let old_db = servers(&d, "db")[0].clone();
    let app = servers(&d, "app");
    let greeters_before: Vec<BTreeSet<u32>> = app.iter().map(|s| greeters_of(&st, s)).collect();
    for (s, g) in app.iter().zip(&greeters_before) {
        assert!(!g.is_empty(), "a greeter runs on {}", s["id"]);
        assert_eq!(db_host_of(&st, s), old_db["address"].as_str().unwrap());
    }
    kill_server(&st, &old_db);

    let d = wait_for(&st, Duration::from_secs(120), |d| {
        d["state"] == "RUNNING" && servers(d, "db").iter().all(|s| s["id"] != "db-1")
    });
    assert_eq!(d["state"], "RUNNING", "{d}\n{}", events(&st));
    let db = servers(&d, "db");
    assert_eq!(db.len(), 1, "{d}");
    assert_eq!(db[0]["id"], "db-2", "{d}");
    assert_eq!(db[0]["services"][0]["state"], "RUNNING", "{d}");
    let new_db = address(&db[0]);
    assert_ne!(new_db, address(&old_db));
    nothing_left_of(&st, &old_db);

    // The app servers are the same ones, reconfigured to the new address and restarted.
    let app_after = servers(&d, "app");
    assert_eq!(addresses(&app_after), addresses(&app), "{d}");
    for (s, before) in app_after.iter().zip(&greeters_before) {
        assert_eq!(db_host_of(&st, s), new_db.to_string(), "{}", s["id"]);
        let now = greeters_of(&st, s);
        assert!(!now.is_empty(), "a greeter runs on {}", s["id"]);
        assert!(
            now.is_disjoint(before),
            "{}: the greeter was restarted ({before:?} -> {now:?})",
            s["id"]
        );
    }
    let ev = events(&st);
    for id in ["app-1", "app-2"] {
        for hook in ["configure", "stop", "start"] {
            let calls = ev
                .lines()
                .filter(|l| l.contains(&format!("calling hook {hook} (service/app/{id}/{hook}")))
                .count();
            assert_eq!(calls, 2, "{hook} on {id} ran again once:\n{ev}");
        }
    }
    // The data source was loaded into the new server: exactly the app servers may use it,
    // and the rows come through the load balancer.
    assert_eq!(account_hosts(&st, &db[0]), addresses(&app_after));
    let count = admin_sql(&st, &db[0], "SELECT COUNT(*) FROM shop.greetings");
    assert_eq!(count.trim(), "3");
    let endpoint = d["endpoints"][0].as_str().unwrap();
    rows_from_every_app(endpoint, &["shop-app-1".into(), "shop-app-2".into()]);
    assert!(ev.contains("replaced by db-2, RUNNING after"), "{ev}");
    terminate_all(&st);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_server_killed_during_the_launch_is_replaced_and_the_launch_completes() {
    let st = Stratus::new();
    let file = stratus_plugin_artifacts::repo_root().join("examples/three-tier/deployment.toml");
    st.ok(&["launch", "--no-wait", file.to_str().unwrap()]);
    // Its agent is up and MariaDB is being installed: the launch is well under way.
    let d = wait_for(&st, Duration::from_secs(60), |d| {
        d["tiers"].as_array().is_some_and(|t| !t.is_empty())
            && servers(d, "db")
                .first()
                .is_some_and(|db| db["agent"] == "RUNNING")
    });
    let db = servers(&d, "db")[0].clone();
    assert_eq!(db["agent"], "RUNNING", "{d}");
    kill_server(&st, &db);
    let killed = Instant::now();
    let after = st.deployment(DEP);
    assert_eq!(
        after["state"], "LAUNCHING",
        "killed during the launch: {after}"
    );

    let d = wait_for(&st, Duration::from_secs(150), |d| d["state"] != "LAUNCHING");
    let ev = events(&st);
    assert_eq!(d["state"], "RUNNING", "{d}\n{ev}");
    // A call cut short by the dead agent waits only briefly for it (seconds, not the minute
    // a restarting control plane's agents get), so the replacement comes soon.
    assert!(
        killed.elapsed() < Duration::from_secs(45),
        "RUNNING {:?} after the kill\n{ev}",
        killed.elapsed()
    );
    let db = servers(&d, "db");
    assert_eq!(db.len(), 1, "{d}");
    assert_eq!(db[0]["id"], "db-2", "{d}");
    let app = servers(&d, "app");
    for s in &app {
        assert_eq!(s["services"][0]["state"], "RUNNING", "{s}");
        assert_eq!(db_host_of(&st, s), db[0]["address"].as_str().unwrap());
    }
    assert_eq!(account_hosts(&st, &db[0]), addresses(&app));
    let endpoint = d["endpoints"][0].as_str().unwrap();
    rows_from_every_app(endpoint, &["shop-app-1".into(), "shop-app-2".into()]);
    terminate_all(&st);
}
