//! A control plane the test starts itself (`stratus serve` with its own flags, in the
//! background), the control port it publishes, and waiting for a line in a log.

use super::{Stratus, wait_gone};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use stratus_protocol::Fingerprint;

/// How long `stratus serve` may take to publish `control.json`.
const SERVE_LIMIT: Duration = Duration::from_secs(30);

/// The control plane's published address and certificate fingerprint (`control.json`).
pub fn control_info(dir: &Path) -> Option<(String, Fingerprint)> {
    let text = std::fs::read_to_string(dir.join("control.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let address = v["address"].as_str()?.to_string();
    let fingerprint = v["fingerprint"].as_str()?.parse().ok()?;
    Some((address, fingerprint))
}

/// A TLS connection to the control port of `dir`, pinning its certificate as agents do.
pub fn control_tls(dir: &Path) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let (address, fingerprint) = control_info(dir).expect("control.json with a fingerprint");
    let config = stratus_protocol::tls::pinned_client_config(&fingerprint);
    let name = stratus_protocol::tls::server_name("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let tcp = TcpStream::connect(&address).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Sends one line to the control port of `dir` over TLS and returns the line it answers.
pub fn control_line(dir: &Path, line: &str) -> String {
    let mut tls = control_tls(dir);
    tls.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while tls.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        answer.push(byte[0]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// `stratus serve` with `args`, in the background; waits until it published `control.json`
/// (panics with its stderr if it exits first).
pub fn serve(st: &Stratus, args: &[&str]) -> Child {
    let mut child = st
        .cmd()
        .arg("serve")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start stratus serve");
    let start = Instant::now();
    while control_info(st.dir()).is_none() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("stratus serve exited with {status}: {err}");
        }
        assert!(start.elapsed() < SERVE_LIMIT, "serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// `stratus serve` with `args` expected to refuse to start: its exit status and stderr.
pub fn serve_refused(st: &Stratus, args: &[&str]) -> String {
    let out = st
        .cmd()
        .arg("serve")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start stratus serve")
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "serve {args:?} started: {err}");
    err
}

/// Ends a `serve` started by [`serve`] (the harness's guard shuts it down too).
pub fn stop(st: &Stratus, mut child: Child) {
    let _ = st.run(&["shutdown"]);
    if !wait_gone(child.id(), Duration::from_secs(10)) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Waits up to `limit` for the file at `path` to contain `needle`; returns its text then (or
/// at the limit, for the caller's assertion to show).
pub fn wait_for_text(path: &Path, needle: &str, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) || start.elapsed() > limit {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits up to `limit` for the control plane's log `logs/<name>` (e.g. `dispatcher.log`) to
/// contain `needle`; panics with the log if it does not.
pub fn wait_for_log(st: &Stratus, name: &str, needle: &str, limit: Duration) -> String {
    let path = st.dir().join("logs").join(name);
    let text = wait_for_text(&path, needle, limit);
    assert!(
        text.contains(needle),
        "no `{needle}` in {} within {limit:?}:\n{text}",
        path.display()
    );
    text
}

/// The file endpoint's URL, from the control plane's start-up line in `dispatcher.log`.
pub fn files_url(st: &Stratus) -> String {
    let log = wait_for_log(st, "dispatcher.log", "files at ", Duration::from_secs(10));
    let at = log.rfind("files at ").unwrap() + "files at ".len();
    log[at..].split(',').next().unwrap().trim().to_string()
}
