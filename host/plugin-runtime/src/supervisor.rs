//! Long-running processes started by hooks (`host.spawn`): they outlive the hook call, log to
//! files and are stopped with SIGTERM, then SIGKILL. Capability checks happen before a spec
//! reaches here (see `host_imports`).

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// A process to start, already checked against the plugin's capabilities.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: PathBuf,
}

/// What the supervisor knows of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    Running(u32),
    /// Exit code, or `None` when a signal ended it.
    Exited(Option<i32>),
    Unknown,
}

struct Entry {
    pid: u32,
    /// `None` while running; the exit code once reaped.
    exit: watch::Receiver<Option<Option<i32>>>,
}

/// Supervises processes per owner (a service); cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    log_dir: PathBuf,
    procs: Mutex<HashMap<(String, String), Entry>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("log_dir", &self.inner.log_dir)
            .finish()
    }
}

/// Names end up in log file names, so they are restricted to a safe alphabet.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !s.starts_with('.')
}

impl Supervisor {
    pub fn new(log_dir: PathBuf) -> Supervisor {
        Supervisor {
            inner: Arc::new(Inner {
                log_dir,
                procs: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Where a process's stdout and stderr go.
    pub fn log_path(&self, owner: &str, name: &str) -> PathBuf {
        self.inner.log_dir.join(format!("{owner}-{name}.log"))
    }

    /// Starts `spec` for `owner` and returns its pid. Must be called inside a tokio runtime.
    pub fn spawn(&self, owner: &str, spec: ProcessSpec) -> Result<u32, String> {
        if !valid_name(owner) || !valid_name(&spec.name) {
            return Err(format!(
                "process name `{}` (owner `{owner}`) must use only letters, digits, `-`, `_`, `.`",
                spec.name
            ));
        }
        let key = (owner.to_owned(), spec.name.clone());
        let mut procs = self.inner.procs.lock().unwrap();
        if let Some(e) = procs.get(&key)
            && e.exit.borrow().is_none()
        {
            return Err(format!(
                "process `{}` is already running (pid {})",
                spec.name, e.pid
            ));
        }
        std::fs::create_dir_all(&self.inner.log_dir).map_err(|e| {
            format!(
                "cannot create log directory {}: {e}",
                self.inner.log_dir.display()
            )
        })?;
        let log_path = self.log_path(owner, &spec.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open log {}: {e}", log_path.display()))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("cannot open log: {e}"))?;
        let mut cmd = tokio::process::Command::new(&spec.program);
        cmd.args(&spec.args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.working_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group, so stop() reaches the children a service forks.
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", spec.program.display()))?;
        let pid = child.id().ok_or("process exited before it got a pid")?;
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let code = child.wait().await.ok().and_then(|s| s.code());
            let _ = tx.send(Some(code));
        });
        tracing::info!(owner, name = %spec.name, pid, program = %spec.program.display(), "supervised process started");
        procs.insert(key, Entry { pid, exit: rx });
        Ok(pid)
    }

    pub fn state(&self, owner: &str, name: &str) -> ProcessState {
        let procs = self.inner.procs.lock().unwrap();
        match procs.get(&(owner.to_owned(), name.to_owned())) {
            None => ProcessState::Unknown,
            Some(e) => match *e.exit.borrow() {
                None => ProcessState::Running(e.pid),
                Some(code) => ProcessState::Exited(code),
            },
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns once the process has exited. Stopping an
    /// unknown or exited process succeeds.
    pub async fn stop(&self, owner: &str, name: &str, grace: Duration) -> Result<(), String> {
        let entry = {
            let procs = self.inner.procs.lock().unwrap();
            procs
                .get(&(owner.to_owned(), name.to_owned()))
                .map(|e| (e.pid, e.exit.clone()))
        };
        let Some((pid, mut exit)) = entry else {
            return Ok(());
        };
        if exit.borrow().is_some() {
            return Ok(());
        }
        let group = Pid::from_raw(pid as i32);
        let _ = killpg(group, Signal::SIGTERM);
        // The watch `Ref` is dropped at once: holding it would block the reaper's send.
        let exited = tokio::time::timeout(grace, exit.wait_for(|e| e.is_some()))
            .await
            .is_ok();
        if !exited {
            tracing::warn!(owner, name, pid, "process ignored SIGTERM; sending SIGKILL");
            let _ = killpg(group, Signal::SIGKILL);
            let killed =
                tokio::time::timeout(Duration::from_secs(10), exit.wait_for(|e| e.is_some()))
                    .await
                    .is_ok();
            if !killed {
                return Err(format!(
                    "process {name} (pid {pid}) did not exit after SIGKILL"
                ));
            }
        }
        // Children of the service left in its group go too.
        let _ = killpg(group, Signal::SIGKILL);
        tracing::info!(owner, name, pid, "supervised process stopped");
        Ok(())
    }

    /// Stops every running process (shutdown); returns the `(owner, name)` pairs it stopped.
    pub async fn stop_all(&self, grace: Duration) -> Vec<(String, String)> {
        let running: Vec<(String, String)> = {
            let procs = self.inner.procs.lock().unwrap();
            procs
                .iter()
                .filter(|(_, e)| e.exit.borrow().is_none())
                .map(|(k, _)| k.clone())
                .collect()
        };
        let stops = running.iter().map(|(o, n)| self.stop(o, n, grace));
        for r in futures::future::join_all(stops).await {
            if let Err(e) = r {
                tracing::warn!(error = %e, "stop failed during shutdown");
            }
        }
        running
    }
}

#[cfg(test)]
#[path = "supervisor_tests.rs"]
mod tests;
