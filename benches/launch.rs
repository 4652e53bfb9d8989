//! Launch benchmark (a bench binary, not a timed test): the hello example with N application
//! servers (plus 1 load balancer and 1 database) on the local provider, from `stratus launch`
//! to RUNNING, for several N in one run. Reports wall time, the control plane's RSS (at RUNNING
//! and its peak), the agents' RSS (mean and max), and the wall time of `stratus terminate`.
//! Sizes whose agents would not fit in the memory available (by the agents' proportional set size
//! measured at the previous size) are skipped with the reason. `STRATUS_BENCH_BIN` runs another
//! build of `stratus`, to compare two builds by alternating runs.
//!
//! Each launch after the first starts after `sync` and at least [`SETTLE`] after the previous
//! run's state directory was removed (`STRATUS_BENCH_SETTLE_SECS` sets another wait; 0 none):
//! on ext4 without a journal, an inode freed less than 60 s ago is not handed out again, and
//! every file made meanwhile steps over the freed ones, which made a launch right after
//! another one's terminate up to a fifth slower (BENCHMARKS.md, "sixteenth round").
//!
//! Run: `cargo bench --bench launch -- 10 100 500 three-tier` (release build). `three-tier`
//! launches `examples/three-tier` (real MariaDB, greeter, HAProxy) three times.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// The agent's proportional share of memory: its private pages plus its share of the pages it
/// maps with the other agents (the binary, libc). What N agents add up to, unlike RSS, which
/// counts the shared pages once per agent.
fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = rollup.lines().find(|l| l.starts_with("Pss:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mem_available_kib() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn deployment(n: usize) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("examples/hello/deployment.toml")).unwrap();
    let plugins = root.join("plugins");
    text.replace(
        "\"../../plugins/hello-proxy\"",
        &format!("\"{}\"", plugins.join("hello-proxy").display()),
    )
    .replace(
        "\"../../plugins/hello\"",
        &format!("\"{}\"", plugins.join("hello").display()),
    )
    .replace(
        "\"datasource.sql\"",
        &format!(
            "\"{}\"",
            root.join("examples/hello/datasource.sql").display()
        ),
    )
    .replace("min = 2\nmax = 4", &format!("min = {n}\nmax = {n}"))
}

struct Run {
    n: usize,
    seconds: f64,
    control_kib: u64,
    control_peak_kib: u64,
    terminate_seconds: f64,
    agent_mean_kib: u64,
    agent_max_kib: u64,
    agent_pss_mean_kib: u64,
}

/// How long after the previous run's files were removed the next launch starts.
const SETTLE: Duration = Duration::from_secs(65);

/// Waits until [`SETTLE`] (or `STRATUS_BENCH_SETTLE_SECS`) has passed since `removed`.
fn settle(removed: Option<Instant>) {
    let wait = std::env::var("STRATUS_BENCH_SETTLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(SETTLE, Duration::from_secs);
    if let Some(removed) = removed {
        std::thread::sleep(wait.saturating_sub(removed.elapsed()));
    }
}

/// Writes dirty pages out (freed inodes' table blocks included), so that the kernel's
/// reuse delay for them is the short one.
fn sync_disks() {
    let _ = Command::new("sync").status();
}

/// The binary under test: this build's, or `STRATUS_BENCH_BIN` (to compare two builds
/// side by side, alternating runs of each).
fn stratus(state: &Path) -> Command {
    let bin = std::env::var_os("STRATUS_BENCH_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_stratus").into());
    let mut c = Command::new(bin);
    c.env("STRATUS_STATE_DIR", state);
    c
}

fn run(n: usize) -> Result<Run, String> {
    let state = tempfile::Builder::new()
        .prefix("stratus-bench-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let file = state.path().join("bench.toml");
    std::fs::write(&file, deployment(n)).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let out = stratus(state.path())
        .args(["launch", "--verbose"])
        .arg(&file)
        .output()
        .map_err(|e| e.to_string())?;
    let seconds = start.elapsed().as_secs_f64();
    let result = if out.status.success() {
        let status = stratus(state.path())
            .args(["status", "--output", "json"])
            .output()
            .map_err(|e| e.to_string())?;
        let v: serde_json::Value =
            serde_json::from_slice(&status.stdout).map_err(|e| e.to_string())?;
        let pids: Vec<u32> = v["deployments"][0]["tiers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|t| t["servers"].as_array().cloned().unwrap_or_default())
            .filter_map(|s| s["pid"].as_u64().map(|p| p as u32))
            .collect();
        let rss: Vec<u64> = pids.iter().filter_map(|p| rss_kib(*p)).collect();
        let pss: Vec<u64> = pids.iter().filter_map(|p| pss_kib(*p)).collect();
        let control: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(state.path().join("control.json")).unwrap_or_default(),
        )
        .unwrap_or_default();
        let control_pid = control["pid"].as_u64().unwrap_or(0) as u32;
        let control_kib = rss_kib(control_pid).unwrap_or(0);
        let terminate = Instant::now();
        let ended = stratus(state.path())
            .args(["terminate", "hello"])
            .output()
            .map_err(|e| e.to_string())?;
        let terminate_seconds = terminate.elapsed().as_secs_f64();
        if !ended.status.success() {
            return Err(format!(
                "terminate failed: {}",
                String::from_utf8_lossy(&ended.stderr)
            ));
        }
        Ok(Run {
            n,
            seconds,
            control_kib,
            control_peak_kib: status_kib(control_pid, "VmHWM:").unwrap_or(0),
            terminate_seconds,
            agent_mean_kib: rss.iter().sum::<u64>() / rss.len().max(1) as u64,
            agent_max_kib: rss.iter().copied().max().unwrap_or(0),
            agent_pss_mean_kib: pss.iter().sum::<u64>() / pss.len().max(1) as u64,
        })
    } else {
        Err(format!(
            "launch failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    };
    let _ = stratus(state.path()).args(["terminate", "hello"]).output();
    let _ = stratus(state.path()).arg("shutdown").output();
    std::thread::sleep(Duration::from_millis(200));
    result
}

/// Seconds from `stratus launch examples/three-tier/deployment.toml` to RUNNING.
fn three_tier() -> Result<f64, String> {
    let state = tempfile::Builder::new()
        .prefix("stratus-bench-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/three-tier/deployment.toml");
    let start = Instant::now();
    let out = stratus(state.path())
        .arg("launch")
        .arg(&file)
        .output()
        .map_err(|e| e.to_string())?;
    let seconds = start.elapsed().as_secs_f64();
    let _ = stratus(state.path()).args(["terminate", "shop"]).output();
    let _ = stratus(state.path()).arg("shutdown").output();
    if out.status.success() {
        Ok(seconds)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "three-tier") {
        let runs: Vec<String> = (0..3)
            .map(|_| match three_tier() {
                Ok(s) => format!("{s:.2} s"),
                Err(e) => format!("failed: {e}"),
            })
            .collect();
        println!(
            "three-tier example, time to RUNNING (3 runs): {}",
            runs.join(", ")
        );
    }
    let mut sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if sizes.is_empty() && !args.iter().any(|a| a == "three-tier") {
        sizes = vec![10, 100, 500];
    }
    println!(
        "| N app servers | servers in all | time to RUNNING | control plane RSS (peak) | agent RSS mean | agent RSS max | agent PSS mean | terminate |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut per_agent_kib = 0u64;
    let mut removed = None;
    for n in sizes {
        let servers = n + 2;
        let need = per_agent_kib * servers as u64;
        let available = mem_available_kib();
        if per_agent_kib > 0 && need > available * 8 / 10 {
            println!(
                "| {n} | {servers} | skipped: ~{} MiB of agents needed, {} MiB available | | | | | |",
                need / 1024,
                available / 1024
            );
            continue;
        }
        settle(removed);
        let outcome = run(n);
        sync_disks();
        removed = Some(Instant::now());
        match outcome {
            Ok(r) => {
                per_agent_kib = per_agent_kib.max(r.agent_pss_mean_kib);
                println!(
                    "| {} | {servers} | {:.2} s | {:.1} MiB ({:.1} MiB) | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.2} s |",
                    r.n,
                    r.seconds,
                    r.control_kib as f64 / 1024.0,
                    r.control_peak_kib as f64 / 1024.0,
                    r.agent_mean_kib as f64 / 1024.0,
                    r.agent_max_kib as f64 / 1024.0,
                    r.agent_pss_mean_kib as f64 / 1024.0,
                    r.terminate_seconds
                );
            }
            Err(e) => println!("| {n} | {servers} | {e} | | | | | |"),
        }
    }
}
