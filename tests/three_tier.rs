//! The seed's deployment with real software, launched by the real binary: HAProxy in front of
//! two greeter application servers reading from MariaDB. GET on the load balancer returns rows
//! from MariaDB and reaches both application servers; MariaDB refuses an address that was not
//! granted; terminate leaves no mariadbd, haproxy or greeter behind.

use crate::common;

use common::{Stratus, servers, wait_gone};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpSocket;

/// Every process whose command line mentions the state directory: the agents and everything
/// they supervise (mariadbd, haproxy and the greeter all run with paths inside it).
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tier_example_serves_rows_from_mariadb_through_haproxy() {
    let st = Stratus::new();
    let file = stratus_plugin_artifacts::repo_root().join("examples/three-tier/deployment.toml");
    let started = Instant::now();
    st.ok(&["launch", file.to_str().unwrap()]);
    eprintln!(
        "three-tier example RUNNING after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let d = st.deployment("shop");
    assert_eq!(d["state"], "RUNNING", "{d}");
    let endpoint = d["endpoints"][0].as_str().unwrap().to_string();
    let mut servers_seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let response = common::http::get_root(&endpoint);
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response.contains("Hello from the database tier"),
            "{response}"
        );
        assert!(response.contains("Hallo aus der Datenbank"), "{response}");
        for name in ["shop-app-1", "shop-app-2"] {
            if response.contains(name) {
                servers_seen.insert(name);
            }
        }
    }
    assert_eq!(
        servers_seen.len(),
        2,
        "consecutive requests reach both app servers: {servers_seen:?}"
    );

    // MariaDB lets in exactly the granted addresses (the app servers), not this one.
    let addr_of = |tier: &str| -> Vec<Ipv4Addr> {
        servers(&d, tier)
            .iter()
            .map(|s| s["address"].as_str().unwrap().parse().unwrap())
            .collect()
    };
    let db = SocketAddr::from((addr_of("db")[0], 3306));
    let refused = greeting_from(Ipv4Addr::new(127, 0, 0, 1), db).await;
    let text = String::from_utf8_lossy(&refused);
    assert!(text.contains("is not allowed to connect"), "{text}");
    let granted = greeting_from(addr_of("app")[0], db).await;
    assert_eq!(
        granted.get(4),
        Some(&10u8),
        "a granted address gets the protocol-10 handshake"
    );

    let running = processes_under(st.dir());
    for program in ["mariadbd", "haproxy", "greeter"] {
        assert!(
            running.iter().any(|(_, c)| c.contains(program)),
            "{program} runs: {running:?}"
        );
    }
    st.ok(&["terminate", "shop"]);
    for (pid, cmd) in &running {
        assert!(
            wait_gone(*pid, Duration::from_secs(15)),
            "still running after terminate: {cmd}"
        );
    }
    assert!(
        processes_under(st.dir())
            .iter()
            .all(|(_, c)| c.contains(" serve ")),
        "{:?}",
        processes_under(st.dir())
    );
}
