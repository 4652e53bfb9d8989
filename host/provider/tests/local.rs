//! The local provider with real processes: shell scripts stand in for the agent.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, getpgid};
use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use stratus_provider::{
    CloudProvider, LaunchRequest, LaunchedServer, LocalHandle, LocalProvider, Presence,
    ProviderError,
};

const CREDENTIAL: &str = "not-a-real-credential-0123";

/// Kills the process groups a test started if it fails half-way.
struct Cleanup(Vec<u32>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pgid in &self.0 {
            let _ = killpg(Pid::from_raw(*pgid as i32), Signal::SIGKILL);
        }
    }
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// An agent that logs its arguments, starts a background child, records its pid and execs.
const FORKING_AGENT: &str = r#"echo "args: $*"
while [ $# -gt 0 ]; do case "$1" in --root) root="$2"; shift;; esac; shift; done
sleep 60 &
echo $! > "$root/agent/child.tmp" && mv "$root/agent/child.tmp" "$root/agent/child.pid"
exec sleep 60"#;

fn request(deployment: &str, server_id: &str) -> LaunchRequest {
    LaunchRequest {
        deployment: deployment.into(),
        server_id: server_id.into(),
        server_name: format!("{deployment}-{server_id}"),
        control_addr: "127.0.0.1:7000".parse().unwrap(),
        fingerprint: stratus_protocol::Fingerprint::of(b"control certificate"),
        credential: CREDENTIAL.into(),
        agent_args: vec!["--extra".into(), "x".into()],
    }
}

/// The agent's pid, from the server's handle.
fn pid(server: &LaunchedServer) -> u32 {
    LocalHandle::of_server(server).unwrap().pid
}

/// The server's root, from its handle.
fn root_of(server: &LaunchedServer) -> PathBuf {
    LocalHandle::of_server(server).unwrap().root
}

/// Whether the provider describes the server as existing.
async fn exists(provider: &LocalProvider, server: &LaunchedServer) -> bool {
    provider.describe(&server.handle).await == Presence::Exists
}

/// Running = exists and is not a zombie waiting to be reaped.
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .map(|(_, r)| r.trim_start().as_bytes()[0]),
            Some(b'Z' | b'X')
        ),
        Err(_) => false,
    }
}

fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(s) = std::fs::read_to_string(path) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} never appeared", path.display());
}

#[tokio::test]
async fn launch_runs_the_agent_and_terminate_kills_its_whole_group() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = script(tmp.path(), "agent.sh", FORKING_AGENT);
    let provider = LocalProvider::new(tmp.path().join("state"), agent);
    let server = provider.launch(request("shop", "s1")).await.unwrap();
    let _cleanup = Cleanup(vec![pid(&server)]);

    let root = tmp.path().join("state/servers/shop/s1/root");
    assert_eq!(root_of(&server), root);
    assert!(root.join("mnt/services").is_dir());
    let [a, _, _, d] = server.address.octets();
    assert!(a == 127 && server.address != std::net::Ipv4Addr::LOCALHOST && d != 0);

    let cred = root.join("agent/bootstrap.json");
    let mode = std::fs::metadata(&cred).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let bootstrap = stratus_protocol::Bootstrap::read(&cred).unwrap();
    assert!(bootstrap.credential == CREDENTIAL, "credential differs");
    assert_eq!(bootstrap.control, "127.0.0.1:7000");
    assert_eq!(bootstrap.address, server.address.to_string());
    assert_eq!(
        (bootstrap.deployment.as_str(), bootstrap.server_id.as_str()),
        ("shop", "s1")
    );
    assert_eq!(bootstrap.fingerprint, request("shop", "s1").fingerprint);

    let child: u32 = wait_for_file(&root.join("agent/child.pid"))
        .trim()
        .parse()
        .unwrap();
    let out = std::fs::read_to_string(root.join("agent/agent.out")).unwrap();
    let expected = format!(
        "args: agent --bootstrap {} --root {} --extra x",
        cred.display(),
        root.display(),
    );
    assert!(out.contains(&expected), "agent.out: {out}");

    let pgid = getpgid(Some(Pid::from_raw(pid(&server) as i32))).unwrap();
    assert_eq!(
        pgid.as_raw() as u32,
        pid(&server),
        "agent leads its own group"
    );
    assert_ne!(
        pgid,
        getpgid(None).unwrap(),
        "not in the control plane's group"
    );
    assert!(exists(&provider, &server).await);
    assert!(running(pid(&server)) && running(child));

    provider
        .terminate(&server, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(!running(pid(&server)), "agent survived");
    assert!(!running(child), "agent's child survived");
    assert!(!exists(&provider, &server).await);
    assert!(
        provider.leased_addresses().unwrap().is_empty(),
        "lease released"
    );
    // Already gone is fine.
    provider
        .terminate(&server, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(
        root.join("agent/bootstrap.json").exists(),
        "terminate removes nothing"
    );
}

#[tokio::test]
async fn an_agent_ignoring_sigterm_is_killed_after_the_grace() {
    let tmp = tempfile::tempdir().unwrap();
    // Ignored signals stay ignored across exec, so `sleep` itself ignores SIGTERM.
    let agent = script(tmp.path(), "stubborn.sh", "trap '' TERM\nexec sleep 60");
    let provider = LocalProvider::new(tmp.path().join("state"), agent);
    let server = provider.launch(request("shop", "s1")).await.unwrap();
    let _cleanup = Cleanup(vec![pid(&server)]);
    assert!(exists(&provider, &server).await);
    provider
        .terminate(&server, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(!running(pid(&server)));
}

#[tokio::test]
async fn two_providers_on_one_state_dir_never_share_an_address() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = script(tmp.path(), "agent.sh", "exec sleep 60");
    let state = tmp.path().join("state");
    let p1 = LocalProvider::new(state.clone(), agent.clone());
    let p2 = LocalProvider::new(state, agent);
    // Spawned tasks run their blocking launches at the same time, contending for the lock.
    let mut tasks = Vec::new();
    for i in 0..4 {
        for (p, d) in [(&p1, "one"), (&p2, "two")] {
            let (p, req) = (p.clone(), request(d, &format!("s{i}")));
            tasks.push(tokio::spawn(async move { p.launch(req).await }));
        }
    }
    let mut servers = Vec::new();
    for t in tasks {
        servers.push(t.await.unwrap().unwrap());
    }
    let mut cleanup = Cleanup(servers.iter().map(pid).collect());

    let addresses: HashSet<_> = servers.iter().map(|s| s.address).collect();
    assert_eq!(addresses.len(), 8, "{addresses:?}");
    assert_eq!(p2.leased_addresses().unwrap().len(), 8);

    for s in &servers {
        p1.terminate(s, Duration::from_secs(10)).await.unwrap();
    }
    cleanup.0.clear();
    assert!(p1.leased_addresses().unwrap().is_empty());
}

#[tokio::test]
async fn bad_names_and_missing_programs_fail_without_leaking_leases() {
    let tmp = tempfile::tempdir().unwrap();
    let provider = LocalProvider::new(tmp.path().join("state"), tmp.path().join("no-such-agent"));
    let err = provider
        .launch(request("../escape", "s1"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::InvalidName { .. }), "{err}");
    let err = provider.launch(request("shop", "s1")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Spawn { .. }), "{err}");
    assert!(!err.to_string().contains(CREDENTIAL));
    assert!(provider.leased_addresses().unwrap().is_empty());
}

#[test]
fn launch_request_debug_hides_the_credential() {
    let shown = format!("{:?}", request("shop", "s1"));
    assert!(!shown.contains(CREDENTIAL) && shown.contains("redacted"));
}

#[tokio::test]
async fn agents_outlive_the_provider_and_a_relaunch_replaces_them() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = script(tmp.path(), "agent.sh", FORKING_AGENT);
    let state = tmp.path().join("state");
    let first = LocalProvider::new(state.clone(), agent.clone())
        .launch(request("shop", "s1"))
        .await
        .unwrap();
    let mut cleanup = Cleanup(vec![pid(&first)]);
    let child_file = root_of(&first).join("agent/child.pid");
    let first_child: u32 = wait_for_file(&child_file).trim().parse().unwrap();
    std::fs::remove_file(&child_file).unwrap();

    // A new provider (a restarted control plane) still sees the first agent.
    let provider = LocalProvider::new(state, agent);
    assert!(exists(&provider, &first).await);

    // Launching the same server again, as a retried step does, replaces the first agent.
    let second = provider.launch(request("shop", "s1")).await.unwrap();
    cleanup.0.push(pid(&second));
    assert!(
        !running(pid(&first)) && !running(first_child),
        "the first agent was stopped"
    );
    assert!(exists(&provider, &second).await);
    assert_eq!(
        second.address, first.address,
        "the server keeps its address"
    );
    assert_eq!(provider.leased_addresses().unwrap().len(), 1);

    wait_for_file(&child_file);
    provider
        .terminate(&second, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(!exists(&provider, &second).await);
}

#[tokio::test]
async fn a_process_group_that_is_not_ours_is_never_signalled() {
    let tmp = tempfile::tempdir().unwrap();
    let provider = LocalProvider::new(tmp.path().join("state"), tmp.path().join("unused"));
    // As if a recorded agent pid had been recycled by an unrelated process group.
    let mut stranger = std::process::Command::new("sleep")
        .arg("30")
        .process_group(0)
        .spawn()
        .unwrap();
    let _cleanup = Cleanup(vec![stranger.id()]);
    let recorded = stratus_provider::LaunchedServer {
        server_id: "s1".into(),
        address: "127.9.9.9".parse().unwrap(),
        handle: LocalHandle {
            root: tmp.path().join("state/servers/shop/s1/root"),
            pid: stranger.id(),
        }
        .to_handle("local"),
    };
    assert!(!exists(&provider, &recorded).await);
    provider
        .terminate(&recorded, Duration::from_millis(100))
        .await
        .unwrap();
    assert!(
        stranger.try_wait().unwrap().is_none(),
        "the stranger must still run"
    );
    stranger.kill().unwrap();
    stranger.wait().unwrap();
}

/// An agent that joins the cgroup the provider made for it (as the real agent does, in every
/// hierarchy listed in the file `cgroup-dirs` beside it), starts a daemon in a new session (out of its process
/// group), records the daemon's pid and its own cgroup, then dies.
const DAEMONIZING_AGENT: &str = r#"while [ $# -gt 0 ]; do case "$1" in --root) root="$2"; shift;; esac; shift; done
for d in $(cat "$(dirname "$0")/cgroup-dirs"); do echo $$ > "$d/cgroup.procs"; done
setsid sh -c 'sleep 300 >/dev/null 2>&1 & echo $! > "$0/agent/daemon.tmp"; mv "$0/agent/daemon.tmp" "$0/agent/daemon.pid"' "$root" &
cat /proc/self/cgroup > "$root/agent/cgroup"
wait
exit 0"#;

#[tokio::test]
async fn terminate_kills_a_daemon_of_a_dead_agent_through_its_cgroup() {
    let containment = stratus_containment::Containment::detect();
    if !containment.is_available() {
        eprintln!(
            "skipped: no usable cgroup hierarchy ({})",
            containment.describe()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let agent = script(tmp.path(), "agent.sh", DAEMONIZING_AGENT);
    let provider = LocalProvider::new(tmp.path().join("state"), agent);
    let (_, cgroup) = stratus_provider::agent_cgroup(&provider.server_root("shop", "d1")).unwrap();
    let dirs: Vec<String> = cgroup
        .paths()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    std::fs::write(tmp.path().join("cgroup-dirs"), dirs.join("\n")).unwrap();
    let server = provider.launch(request("shop", "d1")).await.unwrap();
    let root = &root_of(&server);
    let daemon: u32 = wait_for_file(&root.join("agent/daemon.pid"))
        .trim()
        .parse()
        .unwrap();
    // Kill the daemon even if the test fails before terminate.
    struct KillPid(u32);
    impl Drop for KillPid {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(Pid::from_raw(self.0 as i32), Signal::SIGKILL);
        }
    }
    let _guard = KillPid(daemon);
    let cgroups = wait_for_file(&root.join("agent/cgroup"));
    let name = cgroups
        .lines()
        .find_map(|l| {
            l.rsplit('/')
                .next()
                .filter(|n| n.starts_with("stratus-shop-d1-"))
        })
        .unwrap_or_else(|| panic!("the agent is not in its own cgroup: {cgroups}"))
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(pid(&server)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !running(pid(&server)),
        "the stand-in agent should have exited"
    );
    assert!(running(daemon), "the daemon outlives the agent's group");

    provider
        .terminate(&server, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(
        !running(daemon),
        "terminate left the daemon {daemon} running"
    );
    let left: Vec<PathBuf> = containment
        .root()
        .child(&name)
        .paths()
        .into_iter()
        .filter(|p| p.exists())
        .collect();
    assert!(left.is_empty(), "cgroup directories left: {left:?}");
}
