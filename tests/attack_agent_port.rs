//! A stranger's attacks on the real control plane's control port (docs/operating.md, "The
//! control port: TLS and certificates"; docs/architecture.md, "Strangers get little").

use crate::common::*;
use std::time::Duration;

#[path = "../host/cloud/tests/local_program/mod.rs"]
pub(crate) mod local_program;
use local_program::LocalProgram;

/// The stranger's uid below: no user of the machine, no program user of a provider.
const STRANGER_UID: u32 = 0x6b5e_0002;

/// Loopback addresses a local program may connect from: any of 127.0.0.0/8.
pub(crate) const LOOPBACK_SOURCES: [&str; 6] = [
    "127.0.0.1",
    "127.0.0.2",
    "127.0.0.3",
    "127.0.9.9",
    "127.42.0.1",
    "127.255.255.254",
];

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

/// CPU time (user + system, in clock ticks) process `pid` has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = read(std::path::Path::new(&format!("/proc/{pid}/stat")));
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // Fields 14 and 15 of stat(5), counted from the state (field 3) here.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Sets the soft limit on open files of process `pid` (hard limit unchanged).
fn soft_nofile(pid: u32, soft: u64) {
    let hard = read(std::path::Path::new(&format!("/proc/{pid}/limits")))
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4).map(str::to_string))
        .unwrap();
    let out = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={soft}:{hard}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// A control plane out of descriptors (a systemd service's soft limit is 1,024; a large
/// fleet's connections exceed it) used to retry `accept` at once, forever, spinning a core
/// while the backlog held a connection. Now it waits a little between attempts.
#[test]
fn a_control_plane_out_of_descriptors_does_not_spin() {
    let st = Stratus::new();
    let file = st.write_file("fds.toml", &hello_deployment("fds", 1));
    st.ok(&["launch", file.to_str().unwrap()]);
    let pid = st.control_pid().unwrap();
    let open_now = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    let limits = read(std::path::Path::new(&format!("/proc/{pid}/limits")));
    let soft_before: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3).and_then(|n| n.parse().ok()))
        .unwrap();
    soft_nofile(pid, open_now + 16);
    let addr = control_addr(&st);
    // Silent peers of the control plane's own uid (not capped per peer): they fill the
    // descriptors left, and the rest wait in the backlog.
    let held: Vec<_> = (0..64)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    drop(held);
    soft_nofile(pid, soft_before);
    // 100 ticks a second: a spinning loop uses ~200 in 2 s.
    assert!(
        used < 60,
        "the control plane used {used} ticks of CPU in 2 s"
    );
    terminate(&st, "fds");
}

/// `MAX_PENDING` (256) silent connections used to take every place of the control port, each
/// for its 5 s hello limit: every other peer was closed at once, so reconnecting agents turned
/// LOST (and were replaced) and the operator's own CLI could not log in, for as long as the
/// stranger renewed them. Then one peer had at most `MAX_PENDING_PER_PEER` waiting, but this
/// machine was not counted: a plugin's program (as its server's program user) still took
/// every place from 127.0.0.1, or 32 from each address of 127.0.0.0/8. Now a local peer is
/// the user that opened its socket, whatever its address; the operator still gets in.
#[test]
fn a_local_program_cannot_take_every_place_of_the_control_port() {
    use stratus_control::handshake::{MAX_PENDING, MAX_PENDING_PER_PEER};
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (to run the stranger as another user)");
        return;
    }
    let st = Stratus::new();
    let file = st.write_file("door.toml", &hello_deployment("door", 1));
    st.ok(&["launch", file.to_str().unwrap()]);
    let addr = control_addr(&st);
    let mut stranger = LocalProgram::hold(STRANGER_UID, addr, MAX_PENDING + 44, &LOOPBACK_SOURCES);
    assert_eq!(
        stranger.open_once_settled(MAX_PENDING_PER_PEER),
        MAX_PENDING_PER_PEER,
        "the stranger's connections left open"
    );
    // While the stranger holds what it may, the operator logs in (from the control plane's
    // own uid, as root's CLI does).
    let token = read(&st.dir().join("keys/control-token"));
    let hello = format!(r#"{{"role":"operator","token":"{}"}}"#, token.trim());
    let answer = answer_to(&st, addr, &hello);
    assert!(
        answer.as_ref().is_ok_and(|a| a.contains("welcome")),
        "the operator was not let in while a local program held connections: {answer:?}"
    );
    drop(stranger);
    terminate(&st, "door");
    let log = read(&st.dir().join("logs/dispatcher.log"));
    assert!(
        log.contains(
            "too many connections from one peer, or from strangers together, waiting to log in"
        ),
        "{log}"
    );
}

/// One plugin deployed on nine local servers has nine program users: 32 waiting connections
/// each took all 256 places, and the control plane's own agents and operators were closed at
/// once. Now local programs together hold at most `MAX_PENDING_LOCAL`.
#[test]
fn many_local_programs_together_cannot_take_every_place_of_the_control_port() {
    use stratus_control::handshake::{MAX_PENDING, MAX_PENDING_LOCAL, MAX_PENDING_PER_PEER};
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (to run the strangers as other users)");
        return;
    }
    let st = Stratus::new();
    let file = st.write_file("crowd.toml", &hello_deployment("crowd", 1));
    st.ok(&["launch", file.to_str().unwrap()]);
    let addr = control_addr(&st);
    let users = MAX_PENDING / MAX_PENDING_PER_PEER + 1;
    let mut strangers: Vec<LocalProgram> = (0..users as u32)
        .map(|i| {
            LocalProgram::hold(
                STRANGER_UID + 16 + i,
                addr,
                MAX_PENDING_PER_PEER,
                &LOOPBACK_SOURCES,
            )
        })
        .collect();
    assert_eq!(
        local_program::open_together(&mut strangers, MAX_PENDING_LOCAL),
        MAX_PENDING_LOCAL,
        "the strangers' connections left open"
    );
    let token = read(&st.dir().join("keys/control-token"));
    let hello = format!(r#"{{"role":"operator","token":"{}"}}"#, token.trim());
    let answer = answer_to(&st, addr, &hello);
    assert!(
        answer.as_ref().is_ok_and(|a| a.contains("welcome")),
        "the operator was not let in while local programs held connections: {answer:?}"
    );
    drop(strangers);
    terminate(&st, "crowd");
}

/// A refused hello used to say whether the deployment and server exist ("an agent with a
/// wrong credential") or not ("an agent of an unknown server"): anyone who completes TLS could
/// list a control plane's deployments and servers. Now both read alike.
#[test]
fn a_refusal_does_not_tell_which_servers_exist() {
    let st = Stratus::new();
    let file = st.write_file("names.toml", &hello_deployment("names", 1));
    st.ok(&["launch", file.to_str().unwrap()]);
    let addr = control_addr(&st);
    let hello = |dep: &str, server: &str| {
        let line = format!(
            r#"{{"role":"agent","deployment":"{dep}","server_id":"{server}","credential":"{}","pid":1}}"#,
            "0".repeat(64)
        );
        answer_to(&st, addr, &line).unwrap()
    };
    let real = hello("names", "app-1");
    let made_up_server = hello("names", "app-9");
    let made_up_deployment = hello("payroll", "db-1");
    assert!(real.contains("refused"), "{real}");
    assert_eq!(real, made_up_server);
    assert_eq!(real, made_up_deployment);
    terminate(&st, "names");
}

/// A CLI the running control plane turned away used to conclude that none ran, start
/// another (which stopped at once on the state directory's lock) and say "could not start
/// the control plane". Now it says what happened.
#[test]
fn a_cli_turned_away_is_told_so_not_that_no_control_plane_runs() {
    let st = Stratus::new();
    let file = st.write_file("away.toml", &hello_deployment("away", 1));
    st.ok(&["launch", file.to_str().unwrap()]);
    let token_file = st.dir().join("keys/control-token");
    let token = read(&token_file);
    std::fs::write(&token_file, "x".repeat(token.trim().len())).unwrap();
    let out = st.run(&["scale", "away", "app", "2"]);
    std::fs::write(&token_file, &token).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("the control plane refused us") && !err.contains("could not start"),
        "{err}"
    );
    terminate(&st, "away");
}
