//! A stranger's attacks on the real control plane's control port (docs/operating.md, "The
//! control port: TLS and certificates"; docs/architecture.md, "Strangers get little").

use crate::common::*;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The control port's `host:port`, as the control plane publishes it.
fn control_addr(st: &Stratus) -> std::net::SocketAddr {
    let control: serde_json::Value =
        serde_json::from_str(&read(&st.dir().join("control.json"))).unwrap();
    control["address"].as_str().unwrap().parse().unwrap()
}

/// A TLS connection from 127.0.0.1 (pinning the published certificate) sends `line` and
/// returns the line answered, or why there was none.
fn answer_to(st: &Stratus, addr: std::net::SocketAddr, line: &str) -> Result<String, String> {
    use std::io::{BufRead, Write};
    let control: serde_json::Value =
        serde_json::from_str(&read(&st.dir().join("control.json"))).unwrap();
    let pin: stratus_protocol::Fingerprint =
        control["fingerprint"].as_str().unwrap().parse().unwrap();
    let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let config = stratus_protocol::tls::pinned_client_config(&pin);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let client = rustls::ClientConnection::new(config, name).unwrap();
    let mut tls = rustls::StreamOwned::new(client, tcp);
    tls.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    std::io::BufReader::new(tls)
        .read_line(&mut answer)
        .map_err(|e| e.to_string())?;
    Ok(answer)
}

/// Opens `count` connections to `addr` from 127.0.0.2 that send nothing.
async fn silent_from_another_peer(
    addr: std::net::SocketAddr,
    count: usize,
) -> Vec<tokio::net::TcpStream> {
    let mut held = Vec::new();
    for _ in 0..count {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        held.push(socket.connect(addr).await.unwrap());
    }
    held
}

/// How many of `held` the control plane has not closed.
async fn still_open(held: &mut [tokio::net::TcpStream]) -> usize {
    let mut open = 0;
    for tcp in held {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_millis(20), tcp.read(&mut buf)).await;
        if read.is_err() {
            open += 1;
        }
    }
    open
}

/// `MAX_PENDING` (256) silent connections used to take every place of the control port, each
/// for its 5 s hello limit: every other peer was closed at once, so reconnecting agents turned
/// LOST (and were replaced) and the operator's own CLI could not log in, for as long as the
/// stranger renewed them. Now one peer has at most `MAX_PENDING_PER_PEER` waiting; others
/// are heard meanwhile.
#[test]
fn a_stranger_cannot_take_every_place_of_the_control_port() {
    use stratus_control::handshake::{MAX_PENDING, MAX_PENDING_PER_PEER};
    let st = Stratus::new();
    let file = st.write_file("door.toml", &hello_deployment("door", 1));
    st.ok(&["launch", file.to_str().unwrap()]);
    let addr = control_addr(&st);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut held = rt.block_on(silent_from_another_peer(addr, MAX_PENDING + 44));
    std::thread::sleep(Duration::from_millis(300));
    // While the stranger holds what it may, another peer is still heard.
    let answer = answer_to(&st, addr, r#"{"role":"operator","token":"guess"}"#);
    assert!(
        answer
            .as_ref()
            .is_ok_and(|a| a.contains("wrong control token")),
        "a peer from this machine was not heard while a stranger held connections: {answer:?}"
    );
    let open = rt.block_on(still_open(&mut held));
    assert_eq!(
        open, MAX_PENDING_PER_PEER,
        "the stranger's connections left open"
    );
    drop(held);
    terminate(&st, "door");
    let log = read(&st.dir().join("logs/dispatcher.log"));
    assert!(
        log.contains("too many connections from one peer waiting to log in"),
        "{log}"
    );
}
