//! A stranger's attacks on the real control plane's file endpoint (docs/operating.md, "Cloud
//! files"): what anyone who can reach its port can make it do before proving who they are.

use crate::common::*;
use std::io::{Read, Write};
use std::time::Duration;

/// The file endpoint's `host:port`, from the control plane's log line.
fn files_addr(st: &Stratus) -> String {
    let log = read(&st.dir().join("logs/dispatcher.log"));
    let at = log.rfind("files at ").expect("the file endpoint is logged") + "files at ".len();
    let url = log[at..].split(',').next().unwrap().trim();
    url.trim_start_matches("https://").to_string()
}

/// The certificate fingerprint the control plane publishes (any client may read it).
fn fingerprint(st: &Stratus) -> stratus_protocol::Fingerprint {
    let control: serde_json::Value =
        serde_json::from_str(&read(&st.dir().join("control.json"))).unwrap();
    control["fingerprint"].as_str().unwrap().parse().unwrap()
}

/// Sends two pipelined requests with a made-up credential on one TLS connection and reads
/// until the endpoint closes it; returns how many were answered 401.
fn wrong_credentials(addr: &str, pin: &stratus_protocol::Fingerprint) -> usize {
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let config = stratus_protocol::tls::pinned_client_config(pin);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let client = rustls::ClientConnection::new(config, name).unwrap();
    let mut tls = rustls::StreamOwned::new(client, tcp);
    let request = format!(
        "GET /v1/objects/sha256/{} HTTP/1.1\r\nhost: x\r\nx-stratus-deployment: flood\r\n\
         x-stratus-server: app-1\r\nauthorization: Bearer {}\r\n\r\n",
        "0".repeat(64),
        "f".repeat(64)
    );
    tls.write_all(request.repeat(2).as_bytes()).unwrap();
    let mut seen = Vec::new();
    let _ = tls.read_to_end(&mut seen);
    String::from_utf8_lossy(&seen)
        .matches("HTTP/1.1 401 ")
        .count()
}

/// Every refused credential used to write a line to `control.log`, and a connection stayed
/// open for more: a stranger pipelining wrong credentials grew the log as fast as one
/// connection carried them and rotated the control plane's history away (10 MiB × 3). Now a
/// refusal ends its connection (one request per TLS handshake), and refusals are counted and
/// logged at most once per `REFUSAL_LOG_GAP`.
#[test]
fn a_flood_of_wrong_credentials_does_not_flood_the_control_log() {
    let st = Stratus::new();
    let file = st.write_file("flood.toml", &hello_deployment("flood", 1));
    st.ok(&["launch", file.to_str().unwrap()]);
    let (addr, pin) = (files_addr(&st), fingerprint(&st));
    let log = st.dir().join("logs/control.log");
    let lines_before = read(&log).lines().count();
    const CONNECTIONS: usize = 200;
    for _ in 0..CONNECTIONS {
        let answered = wrong_credentials(&addr, &pin);
        assert_eq!(answered, 1, "one refusal per connection, then it is closed");
    }
    let control_log = read(&log);
    let added = control_log.lines().count() - lines_before;
    assert!(
        added <= 5,
        "{CONNECTIONS} refused requests wrote {added} lines to control.log"
    );
    assert!(
        control_log.contains("refused requests with a wrong credential"),
        "the refusals are still reported: {control_log}"
    );
    assert!(
        !control_log.contains(&"f".repeat(64)),
        "the forged credential is not logged"
    );
    terminate(&st, "flood");
}

/// The file endpoint did not count peers of the control plane's own machine, so a plugin's
/// program (as its server's program user) could hold every one of `MAX_CONNECTIONS` places
/// while agents waited. Now a local peer is the user that opened its socket: whatever loopback
/// addresses it connects from it holds `MAX_UNPROVEN_PER_PEER`, and others are still answered.
#[test]
fn a_local_program_holds_only_its_share_of_the_file_endpoint() {
    use crate::attack_agent_port::LOOPBACK_SOURCES;
    use crate::attack_agent_port::local_program::LocalProgram;
    use stratus_cloud::endpoint::{MAX_CONNECTIONS, MAX_UNPROVEN_PER_PEER};
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (to run the stranger as another user)");
        return;
    }
    let st = Stratus::new();
    let file = st.write_file("share.toml", &hello_deployment("share", 1));
    st.ok(&["launch", file.to_str().unwrap()]);
    let (addr, pin) = (files_addr(&st), fingerprint(&st));
    let mut stranger = LocalProgram::hold(
        0x6b5e_0003,
        addr.parse().unwrap(),
        MAX_CONNECTIONS + 100,
        &LOOPBACK_SOURCES,
    );
    assert_eq!(
        stranger.open_once_settled(MAX_UNPROVEN_PER_PEER),
        MAX_UNPROVEN_PER_PEER,
        "the stranger's connections left open"
    );
    // Another peer (the control plane's own uid, as its local agents) is still answered.
    assert_eq!(wrong_credentials(&addr, &pin), 1);
    drop(stranger);
    terminate(&st, "share");
    let log = read(&st.dir().join("logs/control.log"));
    assert!(
        log.contains("closed connections of peers already holding"),
        "{log}"
    );
}
