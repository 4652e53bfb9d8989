//! A harness around the real `stratus` binary: a private state directory per test, helpers to
//! run verbs and read JSON status, and a guard that leaves no process behind even when the
//! test fails (it ends only the processes this test's state directory recorded).

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub struct Stratus {
    pub state: tempfile::TempDir,
}

impl Stratus {
    pub fn new() -> Stratus {
        Stratus {
            state: tempfile::Builder::new()
                .prefix("stratus-test-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn dir(&self) -> &Path {
        self.state.path()
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_stratus"));
        c.env("STRATUS_STATE_DIR", self.dir())
            .env_remove("STRATUS_FAULT_EXIT_BEFORE")
            .env_remove("STRATUS_FAULT_EXIT_AFTER");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run stratus")
    }

    /// Runs and insists on success, showing the output when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "stratus {args:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--output", "json"])).expect("status json")
    }

    pub fn deployment(&self, name: &str) -> Value {
        let st = self.status();
        st["deployments"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no deployment {name} in {st}"))
    }

    /// Every agent pid the status knows about.
    pub fn agent_pids(&self) -> Vec<u32> {
        let st = self.status();
        let mut pids = Vec::new();
        for d in st["deployments"].as_array().into_iter().flatten() {
            for t in d["tiers"].as_array().into_iter().flatten() {
                for s in t["servers"].as_array().into_iter().flatten() {
                    if let Some(p) = s["pid"].as_u64() {
                        pids.push(p as u32);
                    }
                }
            }
        }
        pids
    }

    pub fn control_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.dir().join("control.json")).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        v["pid"].as_u64().map(|p| p as u32)
    }

    /// Writes a deployment file into the state directory's parent-free temp area.
    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir().join(name);
        std::fs::write(&p, text).expect("write file");
        p
    }
}

pub fn alive(pid: u32) -> bool {
    // Signal 0 checks existence; a zombie counts as gone.
    let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !status.is_empty()
        && !status
            .split(") ")
            .nth(1)
            .is_some_and(|rest| rest.starts_with('Z'))
}

pub fn wait_gone(pid: u32, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !alive(pid)
}

fn kill_group(pid: u32) {
    // Agents lead their own process group: end it with everything it supervises.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .output();
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .output();
}

impl Drop for Stratus {
    fn drop(&mut self) {
        let agents = self.agent_pids_quiet();
        let control = self.control_pid();
        let _ = self.cmd().arg("shutdown").output();
        if let Some(pid) = control
            && !wait_gone(pid, Duration::from_secs(5))
        {
            kill_group(pid);
        }
        for pid in agents {
            if alive(pid) {
                kill_group(pid);
            }
        }
    }
}

impl Stratus {
    fn agent_pids_quiet(&self) -> Vec<u32> {
        let out = self.run(&["status", "--output", "json"]);
        let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) else {
            return Vec::new();
        };
        let mut pids = Vec::new();
        for d in v["deployments"].as_array().into_iter().flatten() {
            for t in d["tiers"].as_array().into_iter().flatten() {
                for s in t["servers"].as_array().into_iter().flatten() {
                    if let Some(p) = s["pid"].as_u64() {
                        pids.push(p as u32);
                    }
                }
            }
        }
        pids
    }
}

/// The hello example deployment rewritten with absolute package paths, so it can live in a
/// temporary directory.
pub fn hello_deployment(name: &str, app_min: u32) -> String {
    let root = stratus_plugin_artifacts::repo_root();
    let text =
        std::fs::read_to_string(root.join("examples/hello/deployment.toml")).expect("example");
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let proxy = stratus_plugin_artifacts::package_dir("hello-proxy");
    text.replace("name = \"hello\"", &format!("name = \"{name}\""))
        .replace(
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
            "min = 2\nmax = 4",
            &format!("min = {app_min}\nmax = {}", app_min.max(4)),
        )
}
