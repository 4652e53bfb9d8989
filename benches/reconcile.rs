//! Reconcile benchmark (a bench binary, not a timed test), with the release `stratus` binary on
//! the local provider, each part in a fresh state directory:
//!
//! * `scale`: hello launched with app `min = 10, max = 100`, then `stratus scale hello app 100`
//!   and `stratus scale hello app 10`, each timed until the command exits 0 (the tier RUNNING
//!   at its target), several cycles in the same deployment.
//! * `hello-loss`: hello (2 app servers, `recovery-grace = "2s"`); one app server's process
//!   group is killed and the time from the kill until status shows the deployment RUNNING with
//!   the replacement's services RUNNING is measured, beside the engine's own event.
//! * `three-tier-loss`: the same on `examples/three-tier` (real HAProxy and MariaDB), killing an
//!   app server, then (`three-tier-db`) the database server.
//!
//! Where the time goes is read from the event journal's millisecond timestamps.
//!
//! Run: `cargo bench --bench reconcile -- [scale] [hello-loss] [three-tier-loss]
//! [three-tier-db] [--runs N]` (all parts and 3 runs when none is named).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// How often status is polled while waiting for a replacement; the measured recovery times
/// are late by at most this plus one status call.
const POLL: Duration = Duration::from_millis(50);
/// Longest wait for a replacement before the run counts as failed.
const RECOVERY_LIMIT: Duration = Duration::from_secs(120);

/// A fresh state directory with its control plane; dropping it terminates what is left,
/// stops the control plane, ends every agent group and cgroup it recorded, and removes it.
struct Bench {
    state: tempfile::TempDir,
    deployment: String,
    /// `stratus events --follow` writing to `events.log`: without `--follow` the verb prints
    /// only the first 1000 events.
    follower: std::process::Child,
}

impl Bench {
    fn new(deployment: &str) -> Bench {
        use std::os::unix::fs::PermissionsExt;
        let state = tempfile::Builder::new()
            .prefix("stratus-bench-")
            .tempdir()
            .expect("tempdir");
        // Program users reach their service directories by absolute path through it.
        std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o711))
            .expect("chmod state dir");
        let log = std::fs::File::create(state.path().join("events.log")).expect("events.log");
        let follower = Command::new(env!("CARGO_BIN_EXE_stratus"))
            .env("STRATUS_STATE_DIR", state.path())
            .args(["events", "--follow", "--deployment", deployment])
            .stdout(log)
            .spawn()
            .expect("follow events");
        Bench {
            state,
            deployment: deployment.to_string(),
            follower,
        }
    }

    fn dir(&self) -> &Path {
        self.state.path()
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_stratus"))
            .env("STRATUS_STATE_DIR", self.dir())
            .args(args)
            .output()
            .expect("run stratus")
    }

    /// Runs a verb and fails with its output unless it exits 0.
    fn ok(&self, args: &[&str]) -> Result<String, String> {
        let out = self.run(args);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "stratus {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Seconds a verb takes to exit 0.
    fn timed(&self, args: &[&str]) -> Result<f64, String> {
        let start = Instant::now();
        self.ok(args)?;
        Ok(start.elapsed().as_secs_f64())
    }

    fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir().join(name);
        std::fs::write(&p, text).expect("write deployment file");
        p
    }

    fn deployment(&self) -> Result<Value, String> {
        let text = self.ok(&["status", "--output", "json"])?;
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        v["deployments"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["name"] == self.deployment.as_str()))
            .cloned()
            .ok_or_else(|| format!("no deployment {} in status", self.deployment))
    }

    /// The deployment's events so far, parsed (the follower polls every 200 ms).
    fn events(&self) -> Vec<Event> {
        std::thread::sleep(Duration::from_millis(500));
        let text = std::fs::read_to_string(self.dir().join("events.log")).unwrap_or_default();
        text.lines().filter_map(Event::parse).collect()
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let pids = self.deployment().map(|d| pids(&d)).unwrap_or_default();
        let _ = self.run(&["terminate", &self.deployment]);
        let control = std::fs::read_to_string(self.dir().join("control.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["pid"].as_u64());
        let _ = self.run(&["shutdown"]);
        let _ = self.follower.kill();
        let _ = self.follower.wait();
        if let Some(pid) = control {
            wait_gone(pid as u32, Duration::from_secs(5));
        }
        for pid in pids {
            if !wait_gone(pid, Duration::from_secs(5)) {
                kill_group(pid);
            }
        }
        // Whatever a failed run left in a server's cgroup ends with it.
        let servers = self.dir().join("servers");
        for dep in std::fs::read_dir(&servers).into_iter().flatten().flatten() {
            for server in std::fs::read_dir(dep.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if let Some((_, cg)) = stratus_provider::agent_cgroup(&server.path().join("root")) {
                    let _ = cg.destroy();
                }
            }
        }
    }
}

/// One line of `stratus events`: `2026-12-01T15:20:01.123Z INFO  component dep/server: msg`.
#[derive(Debug, Clone)]
struct Event {
    /// Milliseconds since midnight UTC.
    ms: i64,
    who: String,
    message: String,
}

impl Event {
    fn parse(line: &str) -> Option<Event> {
        let (time, rest) = line.split_once(' ')?;
        let clock = time.split_once('T')?.1.trim_end_matches('Z');
        let mut parts = clock.split(':');
        let h: i64 = parts.next()?.parse().ok()?;
        let m: i64 = parts.next()?.parse().ok()?;
        let s: f64 = parts.next()?.parse().ok()?;
        let rest = rest.trim_start();
        let (_level, rest) = rest.split_once(' ')?;
        let (who, message) = rest.trim_start().split_once(": ")?;
        Some(Event {
            ms: (h * 3600 + m * 60) * 1000 + (s * 1000.0).round() as i64,
            who: who.to_string(),
            message: message.to_string(),
        })
    }
}

/// The 1, 5 and 15 minute load averages: the machine is shared, so every part says how busy
/// it was.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn now_ms_of_day() -> i64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    ms.rem_euclid(86_400_000)
}

fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty()
        && !stat
            .split(") ")
            .nth(1)
            .is_some_and(|rest| rest.starts_with('Z'))
}

fn wait_gone(pid: u32, limit: Duration) -> bool {
    let start = Instant::now();
    while alive(pid) {
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Kills an agent's whole process group, as a crashed machine would end it.
fn kill_group(pid: u32) -> bool {
    Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Every agent pid in a deployment's status.
fn pids(d: &Value) -> Vec<u32> {
    d["tiers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["servers"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s["pid"].as_u64().map(|p| p as u32))
        .collect()
}

/// The live (not TERMINATED) servers of a tier.
fn servers(d: &Value, tier: &str) -> Vec<Value> {
    d["tiers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["name"] == tier)
        .flat_map(|t| t["servers"].as_array().cloned().unwrap_or_default())
        .filter(|s| s["agent"] != "TERMINATED")
        .collect()
}

fn all_running(list: &[Value]) -> bool {
    list.iter().all(|s| {
        s["agent"] == "RUNNING"
            && s["services"]
                .as_array()
                .is_some_and(|v| v.iter().all(|v| v["state"] == "RUNNING"))
    })
}

/// The hello example with absolute paths, app bounds `min..=max`, and `extra` lines added to
/// the app tier.
fn hello(min: u32, max: u32, extra: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("examples/hello/deployment.toml")).unwrap();
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let proxy = stratus_plugin_artifacts::package_dir("hello-proxy");
    text.replace(
        "\"../../plugins/hello-proxy\"",
        &format!("\"{}\"", proxy.display()),
    )
    .replace(
        "\"../../plugins/hello\"",
        &format!("\"{}\"", hello.display()),
    )
    .replace(
        "\"datasource.sql\"",
        &format!(
            "\"{}\"",
            root.join("examples/hello/datasource.sql").display()
        ),
    )
    .replace(
        "[tiers.app]\nmin = 2\nmax = 4\n",
        &format!("[tiers.app]\nmin = {min}\nmax = {max}\n{extra}"),
    )
}

/// examples/three-tier with absolute paths and `extra` lines added to every tier.
fn three_tier(extra: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("examples/three-tier");
    let text = std::fs::read_to_string(dir.join("deployment.toml")).unwrap();
    let mut text = text
        .replace(
            "\"../../plugins/",
            &format!("\"{}/", root.join("plugins").display()),
        )
        .replace(
            "\"datasource.sql\"",
            &format!("\"{}\"", dir.join("datasource.sql").display()),
        );
    for tier in ["db", "app", "lb"] {
        let header = format!("[tiers.{tier}]\n");
        text = text.replace(&header, &format!("{header}{extra}"));
    }
    text
}

/// Median, min and max of a sample.
fn summary(xs: &[f64]) -> String {
    if xs.is_empty() {
        return "no successful run".to_string();
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    format!(
        "median {median:.2} s, min {:.2} s, max {:.2} s ({} runs)",
        v[0],
        v[v.len() - 1],
        v.len()
    )
}

/// Prints the gaps between consecutive events of a window whose gap is at least `min_gap_ms`,
/// and the time from the window's start to the first and last event of each kind of message
/// (its text up to the first digit or server id).
fn breakdown(events: &[Event], start_ms: i64, end_ms: i64) {
    let window: Vec<&Event> = events
        .iter()
        .filter(|e| e.ms >= start_ms - 5 && e.ms <= end_ms + 5)
        .collect();
    println!("    {} events in the window", window.len());
    let mut kinds: Vec<(String, i64, i64, usize)> = Vec::new();
    for e in &window {
        let kind = kind_of(e);
        match kinds.iter_mut().find(|k| k.0 == kind) {
            Some(k) => {
                k.2 = e.ms;
                k.3 += 1;
            }
            None => kinds.push((kind, e.ms, e.ms, 1)),
        }
    }
    for (kind, first, last, n) in kinds {
        println!(
            "    +{:>6} ms .. +{:>6} ms  x{n:<4} {kind}",
            first - start_ms,
            last - start_ms
        );
    }
}

/// An event's kind: its component and message with numbers and server ids blurred.
fn kind_of(e: &Event) -> String {
    let component = e.who.split(' ').next().unwrap_or("");
    let message: String = e
        .message
        .split(' ')
        .map(|w| {
            if w.chars().any(|c| c.is_ascii_digit()) {
                "#"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let message: String = message.chars().take(70).collect();
    format!("{component}: {message}")
}

/// Longest a `stratus scale` is followed before the run counts as failed (the CLI's own
/// default is 900 s).
const SCALE_TIMEOUT: &str = "120";

/// Times of the scale cycles that completed.
#[derive(Default)]
struct ScaleSamples {
    ups: Vec<f64>,
    downs: Vec<f64>,
    gones: Vec<f64>,
}

/// Scale-up 10 → 100 and scale-down 100 → 10 of hello's app tier, `runs` cycles. A failed
/// cycle ends the part; the cycles before it are still summarized.
fn scale(runs: usize) -> Result<(), String> {
    println!("## hello app tier: scale-up 10 -> 100, scale-down 100 -> 10");
    let bench = Bench::new("hello");
    let file = bench.write_file("hello.toml", &hello(10, 100, ""));
    let launch = bench.timed(&["launch", file.to_str().unwrap()])?;
    println!("launch with 10 app servers: {launch:.2} s");
    let mut samples = ScaleSamples::default();
    let mut result = Ok(());
    for run in 1..=runs {
        result = scale_cycle(&bench, run, &mut samples);
        if result.is_err() {
            break;
        }
    }
    println!(
        "scale-up 10 -> 100: {} (target <= 3 s)",
        summary(&samples.ups)
    );
    println!(
        "scale-down 100 -> 10: {} (target <= 2 s)",
        summary(&samples.downs)
    );
    println!(
        "scale-down, until the removed agents are gone: {}",
        summary(&samples.gones)
    );
    result
}

/// One cycle 10 → 100 → 10; the event breakdown is shown for the first cycle and for any
/// step that missed its target.
fn scale_cycle(bench: &Bench, run: usize, samples: &mut ScaleSamples) -> Result<(), String> {
    let start = now_ms_of_day();
    let up = bench.timed(&["scale", "hello", "app", "100", "--timeout", SCALE_TIMEOUT])?;
    let end = now_ms_of_day();
    let d = bench.deployment()?;
    let app = servers(&d, "app");
    if d["state"] != "RUNNING" || app.len() != 100 || !all_running(&app) {
        return Err(format!("after scale-up: {}", brief(&d)));
    }
    println!("run {run}: scale-up 10 -> 100: {up:.2} s");
    if run == 1 || up > 3.0 {
        breakdown(&bench.events(), start, end);
    }
    samples.ups.push(up);

    let before: Vec<u32> = app
        .iter()
        .filter_map(|s| s["pid"].as_u64())
        .map(|p| p as u32)
        .collect();
    let start = now_ms_of_day();
    let started = Instant::now();
    let down = bench.timed(&["scale", "hello", "app", "10", "--timeout", SCALE_TIMEOUT]);
    let end = now_ms_of_day();
    let down = down.map_err(|e| {
        breakdown(&bench.events(), start, end);
        format!(
            "{e}; now: {}",
            bench.deployment().map(|d| brief(&d)).unwrap_or(e.clone())
        )
    })?;
    let d = bench.deployment()?;
    let app = servers(&d, "app");
    let kept = pids(&d);
    let leaving: Vec<u32> = before.into_iter().filter(|p| !kept.contains(p)).collect();
    let left = leaving.len() == 90
        && leaving
            .iter()
            .all(|&p| wait_gone(p, Duration::from_secs(30)));
    let gone = started.elapsed().as_secs_f64();
    if d["state"] != "RUNNING" || app.len() != 10 || !all_running(&app) || !left {
        return Err(format!(
            "after scale-down (removed agents all gone: {left}): {}",
            brief(&d)
        ));
    }
    println!(
        "run {run}: scale-down 100 -> 10: {down:.2} s (the 90 removed agents gone after \
         {gone:.2} s)"
    );
    if run == 1 || down > 2.0 {
        breakdown(&bench.events(), start, end);
    }
    samples.downs.push(down);
    samples.gones.push(gone);
    Ok(())
}

/// A deployment's state and reason, and its servers that are not RUNNING.
fn brief(d: &Value) -> String {
    let odd: Vec<String> = d["tiers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["servers"].as_array().cloned().unwrap_or_default())
        .filter(|s| s["agent"] != "RUNNING" && s["agent"] != "TERMINATED")
        .map(|s| format!("{} agent {}", s["id"], s["agent"]))
        .collect();
    format!(
        "deployment {} {} (reason: {}); servers not RUNNING: [{}]",
        d["name"],
        d["state"],
        d["reason"],
        odd.join(", ")
    )
}

/// What one loss measured.
struct Recovery {
    /// From the kill until status showed the deployment RUNNING with the replacement RUNNING.
    observed: f64,
    /// The engine's own `… RUNNING after X s` event.
    reported: String,
}

/// Kills the first live server of `tier` and waits for its replacement to be RUNNING.
fn lose_one(bench: &Bench, tier: &str, show_breakdown: bool) -> Result<Recovery, String> {
    let d = bench.deployment()?;
    let before = servers(&d, tier);
    let victim = before.first().ok_or("no server to kill")?.clone();
    let victim_id = victim["id"].as_str().unwrap_or_default().to_string();
    let pid = victim["pid"].as_u64().ok_or("victim has no pid")? as u32;
    let count = before.len();
    let start_ms = now_ms_of_day();
    let start = Instant::now();
    if !kill_group(pid) {
        return Err(format!("could not kill {victim_id} ({pid})"));
    }
    let observed = loop {
        let d = bench.deployment()?;
        let live = servers(&d, tier);
        let done = d["state"] == "RUNNING"
            && live.len() == count
            && live.iter().all(|s| s["id"] != victim_id.as_str())
            && d["tiers"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|t| all_running(&servers(&d, t["name"].as_str().unwrap_or(""))));
        if done {
            break start.elapsed().as_secs_f64();
        }
        if start.elapsed() > RECOVERY_LIMIT {
            return Err(format!(
                "{victim_id} not replaced within {} s: {}",
                RECOVERY_LIMIT.as_secs(),
                brief(&d)
            ));
        }
        std::thread::sleep(POLL);
    };
    let end_ms = now_ms_of_day();
    let events = bench.events();
    let reported = events
        .iter()
        .rev()
        .find(|e| e.message.starts_with(&format!("{victim_id} lost at")))
        .map(|e| e.message.clone())
        .unwrap_or_else(|| "no replacement event".to_string());
    if show_breakdown {
        breakdown(&events, start_ms, end_ms);
        let d = bench.deployment()?;
        let new = servers(&d, tier)
            .into_iter()
            .filter_map(|s| s["id"].as_str().map(String::from))
            .find(|id| before.iter().all(|b| b["id"] != id.as_str()));
        if let Some(id) = new {
            println!("    agent log of {id}:");
            let log = bench.ok(&["logs", &id]).unwrap_or_default();
            for line in log.lines().take(60) {
                println!("      {}", line.chars().take(200).collect::<String>());
            }
        }
    }
    Ok(Recovery { observed, reported })
}

/// `runs` losses of one server of `tier`, one after another in the same deployment.
fn losses(bench: &Bench, tier: &str, runs: usize) -> Result<(), String> {
    let mut observed = Vec::new();
    for run in 1..=runs {
        let r = lose_one(bench, tier, run == 1)?;
        println!(
            "run {run}: kill -> RUNNING again: {:.2} s; engine: \"{}\"",
            r.observed, r.reported
        );
        observed.push(r.observed);
    }
    println!(
        "{tier} server lost -> replacement RUNNING: {} (target <= grace + 2 s = 4 s)",
        summary(&observed)
    );
    Ok(())
}

fn hello_loss(runs: usize) -> Result<(), String> {
    println!("## hello: an app server killed (recovery-grace 2 s)");
    let bench = Bench::new("hello");
    let file = bench.write_file("hello.toml", &hello(2, 4, "recovery-grace = \"2s\"\n"));
    bench.ok(&["launch", file.to_str().unwrap()])?;
    losses(&bench, "app", runs)
}

fn three_tier_loss(tier: &str, runs: usize) -> Result<(), String> {
    println!("## three-tier: a {tier} server killed (recovery-grace 2 s)");
    let bench = Bench::new("shop");
    let file = bench.write_file("shop.toml", &three_tier("recovery-grace = \"2s\"\n"));
    bench.ok(&["launch", file.to_str().unwrap()])?;
    losses(&bench, tier, runs)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let parts = ["scale", "hello-loss", "three-tier-loss", "three-tier-db"];
    let named: Vec<&str> = parts
        .iter()
        .copied()
        .filter(|p| args.iter().any(|a| a == p))
        .collect();
    let chosen = if named.is_empty() {
        parts.to_vec()
    } else {
        named
    };
    for part in chosen {
        println!("load average before {part}: {}", load_average());
        let result = match part {
            "scale" => scale(runs),
            "hello-loss" => hello_loss(runs),
            "three-tier-loss" => three_tier_loss("app", runs),
            _ => three_tier_loss("db", runs),
        };
        if let Err(e) = result {
            println!("{part} FAILED: {e}");
        }
        println!("load average after {part}: {}", load_average());
        println!();
    }
}
