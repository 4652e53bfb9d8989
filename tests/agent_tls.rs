//! The agent protocol over TLS, with the real binary: every byte between the agents and the
//! control plane, captured by a relay in between, is TLS (no credential, no word of the
//! handshake); an agent whose control address leads to an impostor refuses it before sending
//! anything and does not hammer it; a plaintext control port is refused off loopback; bad
//! bootstrap files are named; a peer stalling its TLS handshake holds up nobody.

use crate::common;

use common::serve::{control_info, control_line, serve, stop, wait_for_text};
use common::{Stratus, hello_deployment};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stratus_protocol::{Bootstrap, ControlIdentity, Fingerprint};

/// A TCP relay on loopback that forwards every connection to the control port named in
/// `control.json` and records every byte, both ways.
struct Relay {
    address: String,
    to_control: Arc<Mutex<Vec<u8>>>,
    from_control: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn start(state: PathBuf) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let relay = Relay {
            address: listener.local_addr().unwrap().to_string(),
            to_control: Arc::default(),
            from_control: Arc::default(),
            stop: Arc::default(),
        };
        let (up, down, stop) = (
            relay.to_control.clone(),
            relay.from_control.clone(),
            relay.stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((agent, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let Some((control, _)) = control_info(&state) else {
                    continue;
                };
                let Ok(control) = TcpStream::connect(control) else {
                    continue;
                };
                agent.set_nonblocking(false).unwrap();
                pump(
                    agent.try_clone().unwrap(),
                    control.try_clone().unwrap(),
                    up.clone(),
                );
                pump(control, agent, down.clone());
            }
        });
        relay
    }

    fn captured(&self) -> (Vec<u8>, Vec<u8>) {
        (
            self.to_control.lock().unwrap().clone(),
            self.from_control.lock().unwrap().clone(),
        )
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies `from` to `to` on a thread, appending every byte to `log`, until either side closes.
fn pump(mut from: TcpStream, mut to: TcpStream, log: Arc<Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            log.lock().unwrap().extend_from_slice(&buf[..n]);
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every bootstrap file of `deployment`'s servers.
fn bootstraps(st: &Stratus, deployment: &str) -> Vec<(PathBuf, Bootstrap)> {
    let dir = st.dir().join("servers").join(deployment);
    let mut found = Vec::new();
    for server in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = server.path().join("root/agent/bootstrap.json");
        if let Ok(b) = Bootstrap::read(&path) {
            found.push((path, b));
        }
    }
    found
}

#[test]
fn every_byte_between_agents_and_the_control_plane_is_tls() {
    let st = Stratus::new();
    let relay = Relay::start(st.dir().to_path_buf());
    let serving = serve(&st, &["--advertise", &relay.address]);
    let file = st.write_file("wiretap.toml", &hello_deployment("wiretap", 1));
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = st.deployment("wiretap");
    assert_eq!(d["state"], "RUNNING", "{d}");

    let servers = bootstraps(&st, "wiretap");
    assert_eq!(servers.len(), 3, "lb, one app server, db");
    let (_, fingerprint) = control_info(st.dir()).unwrap();
    let (up, down) = relay.captured();
    assert!(
        up.len() > 1000 && down.len() > 1000,
        "the agents went through the relay"
    );
    // TLS handshake records (0x16) open the agents' side; TLS 1.3 replies to it.
    assert_eq!(&up[..2], &[0x16, 0x03], "{:?}", &up[..8]);
    assert_eq!(&down[..3], &[0x16, 0x03, 0x03], "{:?}", &down[..8]);
    for (path, b) in &servers {
        assert_eq!(b.control, relay.address, "{}", path.display());
        assert_eq!(b.fingerprint, fingerprint);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        for (side, bytes) in [("to", &up), ("from", &down)] {
            assert!(
                !contains(bytes, b.credential.as_bytes()),
                "a credential crossed {side} the control plane in the clear"
            );
        }
    }
    for word in [
        "credential",
        "role",
        "hello",
        "wiretap",
        "server_id",
        "welcome",
    ] {
        assert!(
            !contains(&up, word.as_bytes()),
            "{word} on the wire to the control plane"
        );
        assert!(
            !contains(&down, word.as_bytes()),
            "{word} on the wire from it"
        );
    }
    common::terminate(&st, "wiretap");
    stop(&st, serving);
}

/// An impostor on the address agents dial: a TLS server with a certificate of its own that
/// records the connections it gets and any byte that arrives inside TLS.
struct Impostor {
    address: String,
    fingerprint: Fingerprint,
    connections: Arc<Mutex<Vec<Instant>>>,
    received: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    _identity_dir: tempfile::TempDir,
}

impl Impostor {
    fn start() -> Impostor {
        let dir = tempfile::tempdir().unwrap();
        let identity = ControlIdentity::load_or_generate(dir.path()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let impostor = Impostor {
            address: listener.local_addr().unwrap().to_string(),
            fingerprint: identity.fingerprint,
            connections: Arc::default(),
            received: Arc::default(),
            stop: Arc::default(),
            _identity_dir: dir,
        };
        let (connections, received, stop) = (
            impostor.connections.clone(),
            impostor.received.clone(),
            impostor.stop.clone(),
        );
        let config = identity.server_config();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((tcp, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                connections.lock().unwrap().push(Instant::now());
                tcp.set_nonblocking(false).unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = tls.read(&mut buf) {
                    received.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            }
        });
        impostor
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn an_agent_refuses_a_control_plane_with_another_certificate_and_sends_it_nothing() {
    let st = Stratus::new();
    let impostor = Impostor::start();
    let serving = serve(&st, &["--advertise", &impostor.address]);
    let (_, real) = control_info(st.dir()).unwrap();
    // Its servers never handshake: fail their launch in 15 s rather than the default minute.
    let lured = hello_deployment("lured", 1)
        + "[tiers.db.launch]\nboot-timeout = \"15s\"\n\
           [tiers.app.launch]\nboot-timeout = \"15s\"\n\
           [tiers.lb.launch]\nboot-timeout = \"15s\"\n";
    let file = st.write_file("lured.toml", &lured);
    let mut launch = st.launch_in_background(&file);

    // The first server's agent dials the impostor and says why it hangs up.
    let start = Instant::now();
    let (path, bootstrap) = loop {
        if let Some(found) = bootstraps(&st, "lured").into_iter().next() {
            break found;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no server launched"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(bootstrap.fingerprint, real);
    let log = path.with_file_name("agent.log");
    let expected = format!(
        "control plane certificate {} does not match the pinned {}",
        impostor.fingerprint, real
    );
    let text = wait_for_text(&log, &expected, Duration::from_secs(30));
    assert!(text.contains(&expected), "{}: {text}", log.display());
    assert!(
        !text.contains(&bootstrap.credential),
        "credential in the agent log"
    );

    // No retry storm: within the next 5 s each agent came at most once more.
    let first = impostor.connections.lock().unwrap().len();
    std::thread::sleep(Duration::from_secs(5));
    let agents = bootstraps(&st, "lured").len();
    let after = impostor.connections.lock().unwrap().len();
    assert!(
        after - first <= agents,
        "{first} then {after} connections from {agents} agents"
    );
    assert!(
        impostor.received.lock().unwrap().is_empty(),
        "the agent sent the impostor data inside TLS"
    );
    // The server shows as not connected, not RUNNING.
    let d = st.deployment("lured");
    assert_ne!(d["state"], "RUNNING", "{d}");
    for tier in d["tiers"].as_array().unwrap() {
        for s in tier["servers"].as_array().unwrap() {
            assert_ne!(s["agent"], "RUNNING", "{s}");
        }
    }
    st.ok(&["terminate", "lured"]);
    let _ = launch.kill();
    let _ = launch.wait();
    stop(&st, serving);
}

#[test]
fn a_plaintext_control_port_is_refused_off_loopback() {
    let st = Stratus::new();
    for args in [
        ["--listen", "192.0.2.1:7000", "--agent-plaintext"],
        ["--advertise", "192.0.2.1:7000", "--agent-plaintext"],
    ] {
        let out = st.cmd().arg("serve").args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(
            err.contains("192.0.2.1:7000, which is not a loopback address"),
            "{err}"
        );
        assert!(!st.dir().join("control.json").exists());
        assert!(
            !st.dir().join("tls").exists(),
            "nothing started before the refusal"
        );
    }
    // With TLS (the default) the same address is not refused for its security; this one is
    // not on this machine, so binding it fails.
    let out = st
        .cmd()
        .args(["serve", "--listen", "192.0.2.1:7000"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("binding the control port 192.0.2.1:7000"),
        "{err}"
    );
    // An agent asked for plaintext towards a remote control plane refuses before dialing.
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("bootstrap.json");
    let bootstrap = Bootstrap {
        control: "192.0.2.1:7000".into(),
        fingerprint: Fingerprint::of(b"x"),
        deployment: "d".into(),
        server_id: "s-1".into(),
        address: "127.0.0.9".into(),
        credential: "c0ffee".into(),
    };
    bootstrap.write(&file).unwrap();
    let out = agent(&st, &file, root.path(), &["--plaintext"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("refusing to send the credential in plaintext"),
        "{err}"
    );
}

fn agent(st: &Stratus, bootstrap: &Path, root: &Path, extra: &[&str]) -> std::process::Output {
    st.cmd()
        .arg("agent")
        .arg("--bootstrap")
        .arg(bootstrap)
        .arg("--root")
        .arg(root)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn a_bad_bootstrap_file_is_named_with_its_field() {
    let st = Stratus::new();
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("bootstrap.json");
    std::fs::write(
        &file,
        r#"{"control":"127.0.0.1:7000","fingerprint":"sha256:abc","deployment":"d",
            "server_id":"s","address":"127.0.0.9","credential":"c0ffee"}"#,
    )
    .unwrap();
    let out = agent(&st, &file, root.path(), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("field `fingerprint`"), "{err}");
    let log = std::fs::read_to_string(root.path().join("agent/agent.log")).unwrap();
    assert!(log.contains("field `fingerprint`"), "{log}");
    assert!(!log.contains("c0ffee") && !err.contains("c0ffee"));

    std::fs::write(&file, "{}").unwrap();
    let out = agent(&st, &file, root.path(), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing field `control`"), "{err}");
}

#[test]
fn peers_stalling_their_tls_handshake_hold_up_nobody_and_the_key_stays_private() {
    let st = Stratus::new();
    let serving = serve(&st, &[]);
    let (address, fingerprint) = control_info(st.dir()).unwrap();
    // 50 peers: half send the start of a ClientHello and stop, half send nothing.
    let stalled: Vec<TcpStream> = (0..50)
        .map(|i| {
            let mut s = TcpStream::connect(&address).unwrap();
            if i % 2 == 0 {
                s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
            }
            s
        })
        .collect();
    let start = Instant::now();
    let pong = control_line(st.dir(), r#"{"role":"operator","token":"guess"}"#);
    assert!(pong.contains("refused"), "{pong}");
    // Handshakes one after another would wait out 5 s for each of the 50 peers; 20 s leaves
    // room for a loaded machine.
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "answered after {:?} (handshake limit 5 s)",
        start.elapsed()
    );
    st.ok(&["status"]);
    drop(stalled);

    // The identity: the key 0600 in a 0700 directory, the published fingerprint its
    // certificate's, and no key material in any log.
    let tls = st.dir().join("tls");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode(&tls.join("control.key")).mode() & 0o777, 0o600);
    assert_eq!(mode(&tls).mode() & 0o777, 0o700);
    let id =
        ControlIdentity::from_files(&tls.join("control.crt"), &tls.join("control.key")).unwrap();
    assert_eq!(id.fingerprint, fingerprint);
    let key = std::fs::read_to_string(tls.join("control.key")).unwrap();
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let logs = st.dir().join("logs");
    for entry in std::fs::read_dir(&logs).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        assert!(
            !text.contains(&body[..32]),
            "key in {}",
            entry.path().display()
        );
    }
    let log = std::fs::read_to_string(logs.join("dispatcher.log")).unwrap();
    assert!(
        log.contains(&format!("TLS, certificate {fingerprint}")),
        "{log}"
    );
    stop(&st, serving);
}
