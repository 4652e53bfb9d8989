//! What the bench binaries share: a fresh state directory with its control plane and an
//! event follower ([`Bench`]), parsed events, the example deployments with absolute paths,
//! process helpers and a summary of samples.

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A fresh state directory with its control plane; dropping it terminates what is left,
/// stops the control plane, ends every agent group and cgroup it recorded, and removes it.
pub struct Bench {
    pub state: tempfile::TempDir,
    pub deployment: String,
    /// `stratus events --follow` writing to `events.log`: without `--follow` the verb prints
    /// only the first 1000 events.
    pub follower: std::process::Child,
}

impl Bench {
    pub fn new(deployment: &str) -> Bench {
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

    pub fn dir(&self) -> &Path {
        self.state.path()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_stratus"))
            .env("STRATUS_STATE_DIR", self.dir())
            .args(args)
            .output()
            .expect("run stratus")
    }

    /// Runs a verb and fails with its output unless it exits 0.
    pub fn ok(&self, args: &[&str]) -> Result<String, String> {
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
    pub fn timed(&self, args: &[&str]) -> Result<f64, String> {
        let start = Instant::now();
        self.ok(args)?;
        Ok(start.elapsed().as_secs_f64())
    }

    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir().join(name);
        std::fs::write(&p, text).expect("write deployment file");
        p
    }

    pub fn deployment(&self) -> Result<Value, String> {
        let text = self.ok(&["status", "--output", "json"])?;
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        v["deployments"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["name"] == self.deployment.as_str()))
            .cloned()
            .ok_or_else(|| format!("no deployment {} in status", self.deployment))
    }

    /// The deployment's events so far, parsed (the follower polls every 200 ms).
    pub fn events(&self) -> Vec<Event> {
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
pub struct Event {
    /// Milliseconds since midnight UTC.
    pub ms: i64,
    pub who: String,
    pub message: String,
}

impl Event {
    pub fn parse(line: &str) -> Option<Event> {
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
pub fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn now_ms_of_day() -> i64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    ms.rem_euclid(86_400_000)
}

pub fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty()
        && !stat
            .split(") ")
            .nth(1)
            .is_some_and(|rest| rest.starts_with('Z'))
}

pub fn wait_gone(pid: u32, limit: Duration) -> bool {
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
pub fn kill_group(pid: u32) -> bool {
    Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Every agent pid in a deployment's status.
pub fn pids(d: &Value) -> Vec<u32> {
    d["tiers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["servers"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s["pid"].as_u64().map(|p| p as u32))
        .collect()
}

/// The live (not TERMINATED) servers of a tier.
pub fn servers(d: &Value, tier: &str) -> Vec<Value> {
    d["tiers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["name"] == tier)
        .flat_map(|t| t["servers"].as_array().cloned().unwrap_or_default())
        .filter(|s| s["agent"] != "TERMINATED")
        .collect()
}

pub fn all_running(list: &[Value]) -> bool {
    list.iter().all(|s| {
        s["agent"] == "RUNNING"
            && s["services"]
                .as_array()
                .is_some_and(|v| v.iter().all(|v| v["state"] == "RUNNING"))
    })
}

/// The hello example with absolute paths, app bounds `min..=max`, and `extra` lines added to
/// the app tier.
pub fn hello(min: u32, max: u32, extra: &str) -> String {
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
pub fn three_tier(extra: &str) -> String {
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
pub fn summary(xs: &[f64]) -> String {
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

/// Runs each part of `parts` named in `args` (all when none is), each between two readings
/// of the load average (the machine is shared), printing a part's failure and going on.
pub fn run_parts(args: &[String], parts: &[&str], run: impl Fn(&str) -> Result<(), String>) {
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
        if let Err(e) = run(part) {
            println!("{part} FAILED: {e}");
        }
        println!("load average after {part}: {}", load_average());
        println!();
    }
}
