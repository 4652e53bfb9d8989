//! Limits a hostile plugin attacks with help from its own programs, in real launches: a FIFO
//! planted where the component writes must not block an agent thread (each open refused at
//! once, no thread left in `fifo_open`, none piling up with every health check), and a
//! spawned process writing past `disk-mb` after the last hook is stopped, the service CRITICAL
//! with the reason.

use crate::common;

use common::{Stratus, one_service, package_copy, read, server_root, servers, terminate};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Polls deployment `dep` until `done` holds, for at most `limit`.
fn wait_for(st: &Stratus, dep: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let d = st.deployment(dep);
        if done(&d) || Instant::now() > deadline {
            return d;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn health_of(d: &Value) -> Value {
    servers(d, "h")[0]["services"][0]["health"].clone()
}

fn service_dir(st: &Stratus, dep: &str) -> PathBuf {
    let d = st.deployment(dep);
    let server = servers(&d, "h")[0].clone();
    let id = server["services"][0]["id"].as_str().unwrap().to_string();
    server_root(st, dep, &server).join("mnt/services").join(id)
}

/// The agent's threads, and how many of them sleep in `fifo_open`.
fn threads(pid: u32) -> (usize, usize) {
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .collect();
    let in_fifo = tasks
        .iter()
        .filter(|t| read(&t.path().join("wchan")).contains("fifo_open"))
        .count();
    (tasks.len(), in_fifo)
}

#[test]
fn a_planted_fifo_is_refused_at_open_and_never_holds_an_agent_thread() {
    let st = Stratus::new();
    let package = package_copy(&st, "fifo", "hostile", |t| {
        t.replace(
            "programs = [\"/usr/bin/echo\"]",
            "programs = [\"/usr/bin/echo\", \"/usr/bin/mkfifo\"]",
        )
    });
    let health = "health = { interval = \"1s\", timeout = \"1s\" }\n";
    let file = one_service(
        &st,
        "hfifo",
        &package,
        "attack = \"fs-fifo\", health = \"fifo\"",
        health,
    );
    // Without the refusal, configure would block in open past its 2 s limit.
    st.ok(&["launch", file.to_str().unwrap()]);

    let log = read(&service_dir(&st, "hfifo").join("hostile.log"));
    assert!(!log.contains("LEAKED"), "{log}");
    assert_eq!(log.matches(": refused (").count(), 2, "{log}");

    // Every health check writes to the FIFO; each fails at once and names why.
    let d = wait_for(&st, "hfifo", Duration::from_secs(15), |d| {
        health_of(d)["message"]
            .as_str()
            .is_some_and(|m| m.contains("FIFO"))
    });
    let h = health_of(&d);
    assert_eq!(h["status"], "UNKNOWN", "{d}");
    let message = h["message"].as_str().unwrap();
    assert!(
        message.contains("planted-fifo") && message.contains("regular files"),
        "{message}"
    );

    let pid = st.agent_pids()[0];
    let (before, stuck) = threads(pid);
    assert_eq!(stuck, 0, "agent threads blocked in fifo_open");
    std::thread::sleep(Duration::from_secs(6));
    let (after, stuck) = threads(pid);
    assert_eq!(stuck, 0, "agent threads blocked in fifo_open");
    // Tokio's blocking pool may start a thread or two; one per check would be six.
    assert!(
        after <= before + 2,
        "agent threads grew from {before} to {after}"
    );
    terminate(&st, "hfifo");
}

/// Pids whose working directory is `dir` (the service's processes start there).
fn processes_in(dir: &std::path::Path) -> Vec<u32> {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c == dir))
        .collect()
}

#[test]
fn a_process_writing_past_disk_mb_after_the_last_hook_is_stopped_and_the_service_critical() {
    let st = Stratus::new();
    let package = package_copy(&st, "writer", "hostile", |t| {
        t.replace(
            "programs = [\"/usr/bin/echo\"]",
            "programs = [\"/usr/bin/echo\", \"/bin/sh\"]\ndisk-mb = 20",
        )
    });
    let health = "health = { interval = \"1s\", timeout = \"1s\" }\n";
    let file = one_service(
        &st,
        "hwriter",
        &package,
        "attack = \"fs-spawn-writer\", mb = \"300\"",
        health,
    );
    // The writer waits a second: every hook, and so the launch, is within the limit.
    st.ok(&["launch", file.to_str().unwrap()]);
    let launched = Instant::now();
    let dir = service_dir(&st, "hwriter");

    let d = wait_for(&st, "hwriter", Duration::from_secs(20), |d| {
        health_of(d)["status"] == "CRITICAL"
    });
    let h = health_of(&d);
    assert_eq!(h["status"], "CRITICAL", "{d}");
    let message = h["message"].as_str().unwrap();
    assert!(
        message.contains("over its disk-mb limit of 20 MiB")
            && message.contains("processes were stopped: writer"),
        "{message}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_in(&dir).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        processes_in(&dir),
        Vec::<u32>::new(),
        "the writer still runs"
    );
    assert!(
        launched.elapsed() < Duration::from_secs(15),
        "stopped only after {:?}",
        launched.elapsed()
    );
    // It stays CRITICAL: its own health check (OK) does not hide the reason.
    std::thread::sleep(Duration::from_secs(3));
    let d = st.deployment("hwriter");
    assert_eq!(health_of(&d)["status"], "CRITICAL", "{d}");
    terminate(&st, "hwriter");
}
