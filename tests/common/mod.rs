//! A harness around the real `stratus` binary: a private state directory per test, helpers to
//! run verbs and read JSON status, and a guard that leaves no process behind even when the
//! test fails (it ends only the processes this test's state directory recorded).

#![allow(dead_code)]

pub mod burner;
pub mod cli;
pub mod cores;
pub mod http;
pub mod lab;
pub mod marks;
pub mod moto;
pub mod relaunch;
pub mod serve;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub struct Stratus {
    pub state: tempfile::TempDir,
}

impl Stratus {
    pub fn new() -> Stratus {
        use std::os::unix::fs::PermissionsExt;
        let state = tempfile::Builder::new()
            .prefix("stratus-test-")
            .tempdir()
            .expect("tempdir");
        // Searchable (not listable) by the program user, who must reach the service dirs
        // inside by their absolute paths, as a real state directory must be.
        std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o711))
            .expect("chmod state dir");
        Stratus { state }
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
        pids_in(&self.status())
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

    /// `stratus launch FILE` left running in the background, its output discarded: for a test
    /// that watches what the launch does meanwhile (and kills it when done).
    pub fn launch_in_background(&self, file: &Path) -> std::process::Child {
        self.cmd()
            .args(["launch", file.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn stratus launch")
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
        end_server_cgroups(self.dir());
        stratus_provider::release_claims_of(self.dir());
    }
}

/// Kills and removes the cgroup of every server root under `state`: whatever a failed test
/// left running there (agents status never knew, the programs they started) ends with it.
fn end_server_cgroups(state: &Path) {
    let servers = state.join("servers");
    let deployments = std::fs::read_dir(&servers).into_iter().flatten().flatten();
    for dep in deployments {
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

impl Stratus {
    fn agent_pids_quiet(&self) -> Vec<u32> {
        let out = self.run(&["status", "--output", "json"]);
        let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) else {
            return Vec::new();
        };
        pids_in(&v)
    }
}

/// Every agent pid in a status JSON.
fn pids_in(status: &Value) -> Vec<u32> {
    let mut pids = Vec::new();
    for d in status["deployments"].as_array().into_iter().flatten() {
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

/// Terminates deployment `name`, checks it is TERMINATED and that every agent it had is gone
/// within 10 s; returns those agents' pids.
pub fn terminate(st: &Stratus, name: &str) -> Vec<u32> {
    let pids = st.agent_pids();
    st.ok(&["terminate", name]);
    assert_eq!(st.deployment(name)["state"], "TERMINATED");
    for &p in &pids {
        assert!(
            wait_gone(p, Duration::from_secs(10)),
            "agent {p} still running after terminate"
        );
    }
    pids
}

/// [`terminate`] with `--keep-disks`: returns the agents' pids and the directory the servers'
/// disks were moved to (`<dir>/<server-id>/root` is each server's root), read from the output.
pub fn terminate_keeping_disks(st: &Stratus, name: &str) -> (Vec<u32>, PathBuf) {
    let pids = st.agent_pids();
    let out = st.ok(&["terminate", name, "--keep-disks"]);
    assert_eq!(st.deployment(name)["state"], "TERMINATED");
    for &p in &pids {
        assert!(
            wait_gone(p, Duration::from_secs(10)),
            "agent {p} still running after terminate"
        );
    }
    let dir = out
        .lines()
        .find_map(|l| l.strip_prefix("server disks kept for a post-mortem under "))
        .unwrap_or_else(|| panic!("no kept disks in: {out}"));
    (pids, PathBuf::from(dir))
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

/// The hello example with its app tier on provider `provider`, and `extra` (e.g. the
/// `[providers.NAME]` tables) appended.
pub fn hello_on(name: &str, provider: &str, extra: &str) -> String {
    hello_on_with(name, 1, provider, extra)
}

/// [`hello_on`] with `app_min` app servers.
pub fn hello_on_with(name: &str, app_min: u32, provider: &str, extra: &str) -> String {
    let text = hello_deployment(name, app_min);
    let app = format!(
        "[tiers.app]\nmin = {app_min}\nmax = {}\nservices = [\"app\"]\n",
        app_min.max(4)
    );
    assert!(
        text.contains(&app),
        "the example's app tier changed:\n{text}"
    );
    let on = format!("{app}\n[tiers.app.launch]\nprovider = \"{provider}\"\n");
    format!("{}\n{extra}", text.replace(&app, &on))
}

/// The servers of `tier` in a deployment's status JSON.
pub fn servers(deployment: &Value, tier: &str) -> Vec<Value> {
    deployment["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == tier)
        .unwrap_or_else(|| panic!("no tier {tier} in {deployment}"))["servers"]
        .as_array()
        .unwrap()
        .clone()
}

/// The root directory of a server (from the status JSON) of deployment `dep`.
pub fn server_root(st: &Stratus, dep: &str, server: &Value) -> PathBuf {
    st.dir()
        .join("servers")
        .join(dep)
        .join(server["id"].as_str().unwrap())
        .join("root")
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every regular file under `dir`, recursively; symlinks are not followed, so a link out of
/// the state directory cannot widen (or loop) the search. Empty when `dir` does not exist.
pub fn every_file(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            out.extend(every_file(&e.path()));
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    out
}

/// The credential a server's agent presents now: the one that replaced its launch
/// credential (the first line of `<root>/agent/credential`), or its bootstrap's until then.
pub fn agent_credential(root: &Path) -> String {
    match std::fs::read_to_string(root.join("agent/credential")) {
        Ok(stored) => stored.lines().next().unwrap_or_default().to_string(),
        Err(_) => launch_credential(root),
    }
}

/// The credential a server was launched with, from its bootstrap.
pub fn launch_credential(root: &Path) -> String {
    stratus_protocol::Bootstrap::read(&root.join("agent/bootstrap.json"))
        .unwrap()
        .credential
}

/// The generated secrets key management holds: each key file's content, when long enough
/// (8 characters) that finding it elsewhere is not a coincidence.
pub fn secrets(st: &Stratus) -> Vec<String> {
    every_file(&st.dir().join("keys"))
        .iter()
        .map(|k| read(k).trim().to_string())
        .filter(|s| s.len() >= 8)
        .collect()
}

/// Asserts that there are generated secrets and that none appears in the events or in any file
/// under `logs/` and `servers/` that `scanned` selects.
pub fn assert_no_secret_leaked(st: &Stratus, scanned: impl Fn(&Path) -> bool) {
    let secrets = secrets(st);
    assert!(
        !secrets.is_empty(),
        "key management holds the generated secrets"
    );
    let mut files = every_file(&st.dir().join("logs"));
    files.extend(every_file(&st.dir().join("servers")));
    files.retain(|f| scanned(f));
    let events = st.ok(&["events"]);
    for secret in &secrets {
        assert!(
            !events.contains(secret.as_str()),
            "a secret leaked into the events"
        );
        for f in &files {
            let bytes = std::fs::read(f).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret.as_str()),
                "a secret leaked into {}",
                f.display()
            );
        }
    }
}

/// A copy of the built package `plugin` (its component only) in `<state>/<name>`, whose
/// `plugin.toml` is `edit` of the original's.
pub fn package_copy(
    st: &Stratus,
    name: &str,
    plugin: &str,
    edit: impl Fn(String) -> String,
) -> PathBuf {
    let src = stratus_plugin_artifacts::package_dir(plugin);
    let dest = st.dir().join(name);
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::copy(src.join("plugin.wasm"), dest.join("plugin.wasm")).unwrap();
    let manifest = edit(read(&src.join("plugin.toml")));
    std::fs::write(dest.join("plugin.toml"), manifest).unwrap();
    dest
}

/// The deployment file `<state>/<name>.toml`: one tier `h` with one service `h` of `package`,
/// with `settings` and the lines `extra` in the service's table.
pub fn one_service(
    st: &Stratus,
    name: &str,
    package: &Path,
    settings: &str,
    extra: &str,
) -> PathBuf {
    let text = format!(
        "[deployment]\nname = \"{name}\"\n\n[tiers.h]\nmin = 1\nmax = 1\nservices = [\"h\"]\n\n\
         [services.h]\npackage = \"{}\"\nsettings = {{ {settings} }}\n{extra}",
        package.display()
    );
    st.write_file(&format!("{name}.toml"), &text)
}

/// The addresses of `servers` (status JSON).
#[allow(dead_code)] // not every test file uses every helper
pub fn addresses(servers: &[Value]) -> std::collections::BTreeSet<String> {
    servers
        .iter()
        .map(|s| s["address"].as_str().unwrap().to_string())
        .collect()
}

/// The addresses a hello database has granted now: its `grants.log` replayed in order.
#[allow(dead_code)]
pub fn granted_in(grants_log: &str) -> std::collections::BTreeSet<String> {
    let mut set = std::collections::BTreeSet::new();
    for line in grants_log.lines() {
        let list = line.rsplit_once("addresses=").map_or("", |(_, a)| a);
        let addrs = list.split(',').filter(|a| !a.is_empty()).map(String::from);
        match line.split_whitespace().next() {
            Some("grant") => set.extend(addrs),
            Some("revoke") => addrs.for_each(|a| {
                set.remove(&a);
            }),
            _ => {}
        }
    }
    set
}

/// The addresses in a hello load balancer's `nodes.txt`.
#[allow(dead_code)]
pub fn nodes_in(nodes_txt: &str) -> std::collections::BTreeSet<String> {
    nodes_txt
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|a| a.rsplit_once(':').unwrap().0.to_string())
        .collect()
}

/// Polls deployment `dep`'s status until `done` holds, for up to `limit`; returns the last view.
pub fn wait_for(st: &Stratus, dep: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    let mut d = st.deployment(dep);
    while !done(&d) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        d = st.deployment(dep);
    }
    d
}

/// A process's resident set, from `VmRSS` in `/proc/<pid>/status`, in bytes.
pub fn vm_rss(pid: u32) -> u64 {
    let status = read(&PathBuf::from(format!("/proc/{pid}/status")));
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"));
    kib * 1024
}
