//! One-time launch credentials, with the real binary: the credential in a server's bootstrap
//! (a cloud instance's user-data, readable from its metadata service for its whole life)
//! admits nobody once the agent is up, because the control plane replaced it inside the
//! pinned connection; and a control plane that stopped before recording a replacement still
//! admits the agent, which presents the credential before its newest.

use crate::common;

use common::serve::control_line;
use common::{Stratus, agent_credential, hello_deployment, launch_credential, server_root};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// What the control port answers an agent's hello for `server` of `dep` with `credential`.
fn hello(st: &Stratus, dep: &str, server: &str, credential: &str) -> String {
    let line = format!(
        r#"{{"role":"agent","deployment":"{dep}","server_id":"{server}","credential":"{credential}","pid":1}}"#
    );
    control_line(st.dir(), &line)
}

/// Launches hello with one app server and returns the app server's root.
fn launched(st: &Stratus, dep: &str) -> std::path::PathBuf {
    let file = st.write_file(&format!("{dep}.toml"), &hello_deployment(dep, 1));
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = st.deployment(dep);
    assert_eq!(d["state"], "RUNNING", "{d}");
    server_root(st, dep, &common::servers(&d, "app")[0])
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_launch_credential_admits_nobody_once_the_agent_is_up() {
    let st = Stratus::new();
    let root = launched(&st, "once");
    let launch = launch_credential(&root);
    let stored = root.join("agent/credential");
    assert_eq!(mode(&stored), 0o600, "the replacement is the agent's alone");
    let current = agent_credential(&root);
    assert_ne!(current, launch, "the launch credential was replaced");
    assert_eq!(current.len(), launch.len(), "a token like the launch one");
    assert!(current.bytes().all(|b| b.is_ascii_alphanumeric()));
    let answer = hello(&st, "once", "app-1", &launch);
    assert!(
        answer.contains("unknown server or wrong credential"),
        "{answer}"
    );
    // The replacement is the live credential: presented by another, it is a reuse.
    let answer = hello(&st, "once", "app-1", &current);
    assert!(answer.contains("already in use"), "{answer}");
    // Every server of the deployment, not only the first of a tier.
    let d = st.deployment("once");
    for tier in ["lb", "app", "db"] {
        for server in common::servers(&d, tier) {
            let root = server_root(&st, "once", &server);
            assert_ne!(
                agent_credential(&root),
                launch_credential(&root),
                "{server}"
            );
        }
    }
    common::assert_no_secret_leaked(&st, |_| true);
    let logs = common::every_file(&st.dir().join("logs"));
    for file in logs.iter().chain([root.join("agent/agent.log")].iter()) {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        assert!(
            !text.contains(&current),
            "{} holds the credential",
            file.display()
        );
    }
    common::terminate(&st, "once");
}

/// A control plane that stopped after the agent stored its new credential but before
/// recording it knows only the one before (here the launch credential): the agent's newest is
/// refused, it presents the one before, and gets in.
#[test]
fn an_agent_whose_replacement_was_not_recorded_gets_back_in() {
    let st = Stratus::new();
    let root = launched(&st, "lapse");
    let launch = launch_credential(&root);
    let newest = agent_credential(&root);
    let control = st.control_pid().unwrap();
    st.ok(&["shutdown"]);
    assert!(common::wait_gone(control, Duration::from_secs(60)));
    // What the store holds when the control plane stopped before recording the replacement.
    let db = rusqlite::Connection::open(st.dir().join("stratus.db")).unwrap();
    let digest = stratus_cloud::digest(&stratus_cloud::Secret::new(launch.as_str()));
    let changed = db
        .execute(
            "UPDATE servers SET credential_digest = ?1 WHERE deployment = 'lapse' AND id = 'app-1'",
            [&digest],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);

    let serving = common::serve::serve(&st, &[]);
    let log = st.dir().join("logs/dispatcher.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !common::read(&log).contains("deployment=lapse server=app-1 agent handshake accepted")
        || common::read(&log)
            .matches("server=app-1 agent handshake accepted")
            .count()
            < 2
    {
        assert!(Instant::now() < deadline, "{}", common::read(&log));
        std::thread::sleep(Duration::from_millis(200));
    }
    let agent_log = common::read(&root.join("agent/agent.log"));
    assert!(
        agent_log.contains("the credential presented was refused; presenting the one before it"),
        "{agent_log}"
    );
    let answer = hello(&st, "lapse", "app-1", &newest);
    assert!(answer.contains("wrong credential"), "{answer}");
    let d = common::wait_for(&st, "lapse", Duration::from_secs(60), |d| {
        common::servers(d, "app")[0]["agent"] == "RUNNING"
    });
    assert_eq!(d["state"], "RUNNING", "{d}");
    common::terminate(&st, "lapse");
    common::serve::stop(&st, serving);
}

/// Starts a second agent exactly as the provider started `pid`'s (same bootstrap and root).
fn second_agent_like(pid: u32) -> std::process::Child {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let mut args = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8(a.to_vec()).unwrap());
    let program = args.next().unwrap();
    std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .output();
}

/// Waits until the dispatcher logged `line` or `second` exited (the bug: it gave up).
fn wait_logged(st: &Stratus, second: &mut std::process::Child, line: &str) -> bool {
    let log = st.dir().join("logs/dispatcher.log");
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if common::read(&log).contains(line) {
            return true;
        }
        if let Ok(Some(status)) = second.try_wait() {
            panic!("the second agent gave up ({status}) before the dispatcher logged {line:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// An agent refused because its server's credential is "already in use" (the control plane
/// has not yet seen its previous connection end: a host that lost its connection without a
/// FIN, an agent started again while the old one hangs) presented the right credential. It
/// presents it again rather than older ones, which the control plane can only refuse as wrong,
/// after which the agent would give up and its server be lost.
#[test]
fn an_agent_refused_as_in_use_presents_the_same_credential_until_it_gets_in() {
    let st = Stratus::new();
    let file = st.write_file("inuse.toml", &hello_deployment("inuse", 1));
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = st.deployment("inuse");
    let server = &common::servers(&d, "app")[0];
    let first = server["pid"].as_u64().unwrap() as u32;
    let stored = agent_credential(&server_root(&st, "inuse", server));
    // The first agent hangs with its connection open: the control plane drops it only at its
    // heartbeat limit, and meanwhile the second agent is refused as a reuse.
    signal(first, "-STOP");
    let mut second = second_agent_like(first);
    let refused = format!(
        "refused agent handshake from pid {}: credential already in use",
        second.id()
    );
    let accepted = format!("agent handshake accepted (pid {})", second.id());
    let refused_seen = wait_logged(&st, &mut second, &refused);
    let accepted_seen = refused_seen && wait_logged(&st, &mut second, &accepted);
    let still_running = common::alive(second.id());
    // Ended as a provider ends an agent, so that it removes the cgroup it made for services.
    signal(second.id(), "-TERM");
    if !common::wait_gone(second.id(), Duration::from_secs(20)) {
        signal(second.id(), "-KILL");
    }
    let _ = second.wait();
    signal(first, "-KILL");
    signal(first, "-CONT");
    assert!(
        refused_seen,
        "the second agent was never refused as a reuse"
    );
    assert!(accepted_seen, "the second agent never got in");
    assert!(still_running);
    // Only the stored credential (the launch one is refused as wrong) could get it in; no
    // refusal or acceptance names it.
    let log = common::read(&st.dir().join("logs/dispatcher.log"));
    assert!(
        !log.contains(&stored),
        "the dispatcher log holds a credential"
    );
    common::terminate(&st, "inuse");
}
