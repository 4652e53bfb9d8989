//! Long-running processes started by hooks (`host.spawn`): they outlive the hook call, log to
//! files and are stopped with SIGTERM, then SIGKILL. Capability checks happen before a spec
//! reaches here (see `host_imports`).
//!
//! Containment: a contained supervisor (the agent's) gives each owner (a service) a cgroup
//! `svc-<owner>` with `pids.max` = the plugin's `processes`, and each process its own leaf
//! `p-<name>` beneath it (`host.run` programs get `run-<n>` leaves). Children join their leaf
//! between fork and exec, so no process escapes; stopping a process kills its whole leaf,
//! daemons that called `setsid` included. Without cgroups, stop kills the process group and
//! every descendant found through `/proc`, and the process limit is not enforced.
//!
//! Restarts: a process that exits without being asked to, with a status other than 0, is
//! started again after a backoff (see `restart`), in a fresh leaf, and counted; a `stop` (or
//! a new `spawn` of the same name) ends that. [`Supervisor::crashes`] tells what crashed.
//! Every kept process is written down with its start time, so that a supervisor started again
//! on the same log directory can take them back ([`Supervisor::adopt`], see `adoption`).

use crate::adoption::Record;
use crate::output::Redactor;
use crate::program_user::ProgramUser;
use crate::restart::{Exit, Restarts};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use stratus_containment::{Cgroup, Joiner, descendants};
use stratus_protocol::bounds::MAX_REPORTED_PROCESSES;
use stratus_protocol::{ProcessReport, SupervisionReport};
use tokio::sync::{Notify, watch};

/// A process to start, already checked against the plugin's capabilities.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: PathBuf,
    /// The owner's task limit (`capabilities.processes`), applied to its cgroup.
    pub processes: u64,
    /// The spawning call's redactor: the output tail a crash report carries passes it.
    pub redactor: Redactor,
}

/// What the supervisor knows of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    Running(u32),
    /// Exit code, or `None` when a signal ended it.
    Exited(Option<i32>),
    Unknown,
}

/// One process as its plugin started it, through all its restarts.
struct Entry {
    life: Arc<Life>,
}

/// The current run of a process: its pid, and how it ended once reaped.
#[derive(Debug, Clone, Copy)]
struct Run {
    pid: u32,
    exit: Option<Exit>,
}

/// What a keeper waits on: a child of this supervisor, or a process an earlier supervisor
/// started (its pid and start time; it ends when that pid no longer has that start time).
enum Watched {
    Child(tokio::process::Child),
    Adopted(u32, u64),
}

/// How often an adopted process is looked at: it is not this supervisor's child, so no
/// wait tells when it ends.
const ADOPTED_POLL: Duration = Duration::from_millis(250);

impl Watched {
    /// Waits for the end of the run; an adopted process's exit status is unknown.
    async fn end(&mut self) -> Exit {
        match self {
            Watched::Child(c) => Exit::of(c.wait().await),
            Watched::Adopted(pid, started) => {
                while crate::adoption::start_time(*pid) == Some(*started) {
                    tokio::time::sleep(ADOPTED_POLL).await;
                }
                Exit {
                    code: None,
                    signal: None,
                }
            }
        }
    }
}

struct Life {
    spec: ProcessSpec,
    user: Option<ProgramUser>,
    /// Whether its output can be redacted: not once adopted, since the secrets of the call
    /// that spawned it are not written down.
    redactable: bool,
    run: watch::Sender<Run>,
    /// The current run's start time (`/proc/<pid>/stat` field 22), written down with its pid.
    start_time: Mutex<Option<u64>>,
    /// Set (under the process table's lock) once it is asked to stop: it is not started again.
    stopping: AtomicBool,
    /// Cuts a backoff wait short when it is stopped.
    wake: Notify,
    restarts: Mutex<Restarts>,
}

impl Life {
    fn new(
        spec: ProcessSpec,
        user: Option<ProgramUser>,
        redactable: bool,
        pid: Option<u32>,
    ) -> Arc<Life> {
        let exit = match pid {
            Some(_) => None,
            None => Some(Exit {
                code: None,
                signal: None,
            }),
        };
        Arc::new(Life {
            spec,
            user,
            redactable,
            run: watch::channel(Run {
                pid: pid.unwrap_or(0),
                exit,
            })
            .0,
            start_time: Mutex::new(pid.and_then(crate::adoption::start_time)),
            stopping: AtomicBool::new(false),
            wake: Notify::new(),
            restarts: Mutex::new(Restarts::default()),
        })
    }

    fn exit(&self) -> Option<Exit> {
        self.run.borrow().exit
    }

    /// Whether it is still kept: running, or waiting for its next start, and not stopped.
    fn kept(&self) -> bool {
        !self.stopping.load(Ordering::SeqCst)
            && (self.exit().is_none() || self.restarts.lock().unwrap().next_start_at_ms.is_some())
    }

    /// How it is written down for a supervisor that comes after this one.
    fn record(&self, owner: &str) -> Record {
        let run = *self.run.borrow();
        let mut r = Record::new(owner, &self.spec, self.user, None);
        if run.exit.is_none() {
            r.pid = Some(run.pid);
            r.start_time = *self.start_time.lock().unwrap();
        }
        r
    }
}

/// Supervises processes per owner (a service); cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    log_dir: PathBuf,
    procs: Mutex<HashMap<(String, String), Entry>>,
    /// The cgroup under which owners get theirs; `None` without containment.
    cgroups: Option<Cgroup>,
    /// Numbers the leaves of `host.run` programs.
    runs: AtomicU64,
    /// Who programs run as unless their plugin may run them as root; `None` when the
    /// supervisor is not root.
    program_user: Option<ProgramUser>,
    /// Its name, looked up once and only when a plugin that runs programs as it is called:
    /// a password database lookup costs more than a hook call, and at an agent's start it
    /// loads the system's NSS modules (a millisecond) for agents that never need the name.
    program_user_name: OnceLock<Option<String>>,
    /// Counts crashes and restarts, so a reporter knows when to look again.
    crashes: watch::Sender<u64>,
    /// Whether a process was ever started or adopted here: until one was, there is no log to
    /// bound, and an idle agent need not wake to look.
    supervising: watch::Sender<bool>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("log_dir", &self.inner.log_dir)
            .field("cgroups", &self.inner.cgroups)
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

/// A cgroup leaf a program joins before exec, and the user it then becomes; `None` parts
/// without containment, or when the program keeps the agent's user.
pub(crate) struct Leaf {
    pub cgroup: Option<Cgroup>,
    pub joiner: Option<Joiner>,
    pub user: Option<ProgramUser>,
}

impl Leaf {
    fn none(user: Option<ProgramUser>) -> Leaf {
        Leaf {
            cgroup: None,
            joiner: None,
            user,
        }
    }

    /// Arranges for the child of `cmd` to join the leaf, then drop to the program user,
    /// before exec: joining first, because a v1 `pids` hierarchy lets only root move a task.
    pub fn attach(&mut self, cmd: &mut tokio::process::Command) {
        let (joiner, user) = (self.joiner.take(), self.user);
        if joiner.is_none() && user.is_none() {
            return;
        }
        // SAFETY: join_self only calls write(2) and become_self only prctl, setgroups,
        // setgid and setuid, all async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(j) = &joiner {
                    j.join_self()?;
                }
                if let Some(u) = user {
                    u.become_self()?;
                }
                Ok(())
            });
        }
    }
}

impl Supervisor {
    /// A supervisor without cgroups (`stratus plugin call`, tests): stop reaches the process
    /// group and the descendants of each process.
    pub fn new(log_dir: PathBuf) -> Supervisor {
        Supervisor::build(log_dir, None)
    }

    /// A supervisor whose owners get cgroups beneath `parent` (which must exist).
    pub fn contained(log_dir: PathBuf, parent: Cgroup) -> Supervisor {
        Supervisor::build(log_dir, Some(parent))
    }

    fn build(log_dir: PathBuf, cgroups: Option<Cgroup>) -> Supervisor {
        let euid = nix::unistd::geteuid().as_raw();
        Supervisor {
            inner: Arc::new(Inner {
                log_dir,
                procs: Mutex::new(HashMap::new()),
                cgroups,
                runs: AtomicU64::new(0),
                program_user: ProgramUser::for_agent(None, euid),
                program_user_name: OnceLock::new(),
                crashes: watch::channel(0).0,
                supervising: watch::channel(false).0,
            }),
        }
    }

    /// Programs run as `user` instead of the default program user (only when root; see
    /// [`ProgramUser::for_agent`]). Call right after construction, before any clone.
    pub fn with_program_user(mut self, user: ProgramUser) -> Supervisor {
        let euid = nix::unistd::geteuid().as_raw();
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.program_user = ProgramUser::for_agent(Some(user), euid);
            inner.program_user_name = OnceLock::new();
        }
        self
    }

    /// Who programs run as by default; `None` when they keep the supervisor's own user.
    pub fn program_user(&self) -> Option<ProgramUser> {
        self.inner.program_user
    }

    /// The program user's name (or uid), as [`ProgramUser::name`] gave it the first time.
    pub fn program_user_name(&self) -> Option<&str> {
        let inner = &self.inner;
        inner
            .program_user_name
            .get_or_init(|| inner.program_user.map(ProgramUser::name))
            .as_deref()
    }

    /// Where a process's stdout and stderr go.
    pub fn log_path(&self, owner: &str, name: &str) -> PathBuf {
        crate::process_logs::log_path(&self.inner.log_dir, owner, name)
    }

    /// The owner's cgroup, created with its limit, refusing when the limit is reached
    /// (moving a process into a cgroup bypasses `pids.max`, so the check is ours).
    fn owner_cgroup(&self, owner: &str, processes: u64) -> Result<Option<Cgroup>, String> {
        let Some(parent) = &self.inner.cgroups else {
            return Ok(None);
        };
        let name = format!("svc-{owner}");
        if !valid_name(owner) || !stratus_containment::valid_name(&name) {
            return Err(format!(
                "owner `{owner}` must use only letters, digits, `-`, `_`, `.`"
            ));
        }
        let cg = parent.child(&name);
        // The parent is made again if something removed it since start-up.
        parent
            .create()
            .and_then(|()| cg.create())
            .map_err(|e| format!("cannot contain `{owner}`: {e}"))?;
        let limited = cg
            .set_pids_max(processes)
            .map_err(|e| format!("cannot limit `{owner}`: {e}"))?;
        if !limited {
            tracing::debug!(
                owner,
                "no pids controller here: the process limit is not enforced"
            );
        }
        if let Some((current, max)) = cg.pids_usage()
            && current >= max
        {
            return Err(format!(
                "process limit reached: `{owner}` already has {current} of its {max} tasks \
                 (capabilities.processes counts processes and threads)"
            ));
        }
        Ok(Some(cg))
    }

    /// A fresh leaf `name` in the owner's cgroup; leftovers of an earlier run there are killed.
    fn leaf(
        &self,
        owner: &str,
        name: &str,
        processes: u64,
        user: Option<ProgramUser>,
    ) -> Result<Leaf, String> {
        let Some(cg) = self.owner_cgroup(owner, processes)? else {
            return Ok(Leaf::none(user));
        };
        let leaf = cg.child(name);
        if leaf.exists() {
            leaf.destroy()
                .map_err(|e| format!("cannot clear cgroup of `{name}`: {e}"))?;
        }
        leaf.create()
            .map_err(|e| format!("cannot contain `{name}`: {e}"))?;
        let joiner = leaf
            .joiner()
            .map_err(|e| format!("cannot contain `{name}`: {e}"))?;
        Ok(Leaf {
            cgroup: Some(leaf),
            joiner: Some(joiner),
            user,
        })
    }

    /// A leaf for one `host.run` program of `owner`, which then runs as `user`.
    pub(crate) fn run_leaf(
        &self,
        owner: &str,
        processes: u64,
        user: Option<ProgramUser>,
    ) -> Result<Leaf, String> {
        let n = self.inner.runs.fetch_add(1, Ordering::Relaxed);
        self.leaf(owner, &format!("run-{n}"), processes, user)
    }

    /// Starts `spec` for `owner` as the program user and returns its pid. Must be called
    /// inside a tokio runtime.
    pub fn spawn(&self, owner: &str, spec: ProcessSpec) -> Result<u32, String> {
        self.spawn_as(owner, spec, self.program_user())
    }

    /// Starts `spec` for `owner` as `user` (`None`: the supervisor's own user); it is
    /// started again whenever it crashes, until it is stopped.
    pub fn spawn_as(
        &self,
        owner: &str,
        spec: ProcessSpec,
        user: Option<ProgramUser>,
    ) -> Result<u32, String> {
        if !valid_name(owner) || !valid_name(&spec.name) {
            return Err(format!(
                "process name `{}` (owner `{owner}`) must use only letters, digits, `-`, `_`, `.`",
                spec.name
            ));
        }
        let key = (owner.to_owned(), spec.name.clone());
        let mut procs = self.inner.procs.lock().unwrap();
        if let Some(e) = procs.get(&key)
            && e.life.exit().is_none()
        {
            return Err(format!(
                "process `{}` is already running (pid {})",
                spec.name,
                e.life.run.borrow().pid
            ));
        }
        // A new start replaces a crashed one waiting for its restart.
        if let Some(old) = procs.remove(&key) {
            old.life.stopping.store(true, Ordering::SeqCst);
            old.life.wake.notify_waiters();
            // Its crashes leave the report.
            self.inner.crashes.send_modify(|n| *n += 1);
        }
        let child = self.start_child(owner, &spec, user)?;
        let pid = child.id().ok_or("process exited before it got a pid")?;
        tracing::info!(owner, name = %spec.name, pid, program = %spec.program.display(), "supervised process started");
        let life = Life::new(spec, user, true, Some(pid));
        procs.insert(key.clone(), Entry { life: life.clone() });
        self.inner.supervising.send_replace(true);
        self.save_table(&procs);
        tokio::spawn(self.clone().keep(key, life, Watched::Child(child)));
        Ok(pid)
    }

    /// Starts one run of `spec` in a fresh leaf, logging to its file.
    fn start_child(
        &self,
        owner: &str,
        spec: &ProcessSpec,
        user: Option<ProgramUser>,
    ) -> Result<tokio::process::Child, String> {
        let log_path = self.log_path(owner, &spec.name);
        let log = crate::process_logs::open(&log_path)
            .map_err(|e| format!("cannot open log {}: {e}", log_path.display()))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("cannot open log: {e}"))?;
        let (mut cmd, _file) = crate::program_user::command(&spec.program, user)
            .map_err(|e| format!("cannot start {}: {e}", spec.program.display()))?;
        let mut leaf = self.leaf(owner, &format!("p-{}", spec.name), spec.processes, user)?;
        cmd.args(&spec.args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.working_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group, so stop() reaches the children a service forks.
            .process_group(0);
        leaf.attach(&mut cmd);
        cmd.spawn().map_err(|e| {
            if let Some(cg) = &leaf.cgroup {
                let _ = cg.remove();
            }
            format!("cannot start {}: {e}", spec.program.display())
        })
    }

    /// Reaps each run of a process and, after a crash, starts it again after its backoff,
    /// until it is stopped, replaced, or finishes with status 0.
    async fn keep(self, key: (String, String), life: Arc<Life>, mut watched: Watched) {
        let (owner, name) = (key.0.as_str(), key.1.as_str());
        loop {
            let began = Instant::now();
            let exit = watched.end().await;
            life.run.send_modify(|r| r.exit = Some(exit));
            if life.stopping.load(Ordering::SeqCst) || exit.finished() {
                self.save_table(&self.inner.procs.lock().unwrap());
                return;
            }
            let tail = match life.redactable {
                true => {
                    let log = self.log_path(owner, name);
                    let redactor = life.spec.redactor.clone();
                    tokio::task::spawn_blocking(move || {
                        crate::restart::output_tail(&log, &redactor)
                    })
                    .await
                    .unwrap_or_default()
                }
                false => String::new(),
            };
            let mut wait = self.crashed(&life, exit.describe(), began.elapsed(), tail);
            tracing::warn!(owner, name, exit = %exit.describe(), wait_ms = wait.as_millis() as u64,
                "supervised process crashed; starting it again after the backoff");
            watched = loop {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = life.wake.notified() => {}
                }
                match self.restart(&key, &life) {
                    Ok(Some(c)) => break Watched::Child(c),
                    Ok(None) => return,
                    Err(e) => {
                        let why = format!("could not start: {e}");
                        wait = self.crashed(&life, why, Duration::ZERO, String::new());
                    }
                }
            };
        }
    }

    /// Records a crash of `life`, tells the reporters, and returns the wait before its restart.
    fn crashed(&self, life: &Life, why: String, ran: Duration, tail: String) -> Duration {
        let wait = life
            .restarts
            .lock()
            .unwrap()
            .crashed(why, ran, tail, now_ms());
        self.inner.crashes.send_modify(|n| *n += 1);
        self.save_table(&self.inner.procs.lock().unwrap());
        wait
    }

    /// Starts `life` again unless it was stopped or replaced meanwhile (`Ok(None)`); the
    /// process table stays locked throughout, so a stop sees either no run or the new one.
    fn restart(
        &self,
        key: &(String, String),
        life: &Arc<Life>,
    ) -> Result<Option<tokio::process::Child>, String> {
        let procs = self.inner.procs.lock().unwrap();
        let current = procs.get(key).is_some_and(|e| Arc::ptr_eq(&e.life, life));
        if !current || life.stopping.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let child = self.start_child(&key.0, &life.spec, life.user)?;
        let pid = child.id().ok_or("process exited before it got a pid")?;
        life.run.send_replace(Run { pid, exit: None });
        *life.start_time.lock().unwrap() = crate::adoption::start_time(pid);
        life.restarts.lock().unwrap().restarted();
        self.save_table(&procs);
        self.inner.crashes.send_modify(|n| *n += 1);
        tracing::info!(owner = %key.0, name = %key.1, pid, "supervised process started again");
        Ok(Some(child))
    }

    /// Writes down every kept process for a supervisor that comes after this one; a failure
    /// only costs adoption, so it is logged.
    fn save_table(&self, procs: &HashMap<(String, String), Entry>) {
        let records: Vec<Record> = procs
            .iter()
            .filter(|(_, e)| e.life.kept())
            .map(|((owner, _), e)| e.life.record(owner))
            .collect();
        if let Err(e) = crate::adoption::save(&self.inner.log_dir, &records) {
            tracing::warn!(error = %e, "cannot write down the supervised processes");
        }
    }

    /// Takes back the processes an earlier supervisor on the same log directory kept: each
    /// whose pid still has its recorded start time is watched as if started here (and started
    /// again when it crashes). One that is gone is left to its plugin, whose `start` finds it
    /// not running: the server may be being relaunched, and its hooks start what it needs.
    /// Returns `(owner, name, adopted pid)` for each, `None` for those gone. Must be called
    /// inside a tokio runtime, before any spawn.
    pub fn adopt(&self) -> Vec<(String, String, Option<u32>)> {
        let mut procs = self.inner.procs.lock().unwrap();
        let mut out = Vec::new();
        for r in crate::adoption::load(&self.inner.log_dir) {
            let key = (r.owner.clone(), r.name.clone());
            if !valid_name(&r.owner) || !valid_name(&r.name) || procs.contains_key(&key) {
                continue;
            }
            let Some(pid) = r.still_running() else {
                tracing::info!(owner = %key.0, name = %key.1,
                    "a supervised process ended while no supervisor watched it");
                out.push((key.0, key.1, None));
                continue;
            };
            let (spec, user) = r.spec();
            let life = Life::new(spec, user, false, Some(pid));
            let started = r.start_time.unwrap_or_default();
            tracing::info!(owner = %key.0, name = %key.1, pid,
                "supervised process taken back from an earlier supervisor");
            procs.insert(key.clone(), Entry { life: life.clone() });
            self.inner.supervising.send_replace(true);
            out.push((key.0.clone(), key.1.clone(), Some(pid)));
            tokio::spawn(self.clone().keep(key, life, Watched::Adopted(pid, started)));
        }
        self.save_table(&procs);
        out
    }

    /// Returns once a process has been started or adopted here (at once if one was).
    pub async fn until_supervising(&self) {
        let mut supervising = self.inner.supervising.subscribe();
        let _ = supervising.wait_for(|s| *s).await;
    }

    /// Changes whenever a process crashes or is started again.
    pub fn crash_changes(&self) -> watch::Receiver<u64> {
        self.inner.crashes.subscribe()
    }

    /// Every process that crashed since its plugin started it, with its restarts, at most
    /// [`MAX_REPORTED_PROCESSES`] of them (crash loops first).
    pub fn crashes(&self) -> SupervisionReport {
        let procs = self.inner.procs.lock().unwrap();
        let mut processes: Vec<ProcessReport> = procs
            .iter()
            .filter_map(|((owner, name), e)| {
                let r = e.life.restarts.lock().unwrap().clone();
                if r.last_exit.is_empty() {
                    return None;
                }
                let run = *e.life.run.borrow();
                Some(ProcessReport {
                    owner: owner.clone(),
                    name: name.clone(),
                    pid: run.exit.is_none().then_some(run.pid),
                    restarts: r.restarts,
                    quick_exits_in_a_row: r.quick_exits_in_a_row,
                    crash_loop: r.crash_loop(),
                    last_exit: r.last_exit,
                    last_exit_at_ms: r.last_exit_at_ms,
                    next_start_at_ms: r.next_start_at_ms,
                    output_tail: r.output_tail,
                })
            })
            .collect();
        processes.sort_by(|a, b| {
            (b.crash_loop, &a.owner, &a.name).cmp(&(a.crash_loop, &b.owner, &b.name))
        });
        let omitted = processes.len().saturating_sub(MAX_REPORTED_PROCESSES) as u32;
        processes.truncate(MAX_REPORTED_PROCESSES);
        SupervisionReport { processes, omitted }
    }

    pub fn state(&self, owner: &str, name: &str) -> ProcessState {
        let procs = self.inner.procs.lock().unwrap();
        match procs.get(&(owner.to_owned(), name.to_owned())) {
            None => ProcessState::Unknown,
            Some(e) => {
                let run = *e.life.run.borrow();
                match run.exit {
                    None => ProcessState::Running(run.pid),
                    Some(exit) => ProcessState::Exited(exit.code),
                }
            }
        }
    }

    /// The names of `owner`'s processes that run or wait to be started again, not those
    /// asked to stop (for a caller that must stop them all, such as the disk watch).
    pub fn live_names(&self, owner: &str) -> Vec<String> {
        let procs = self.inner.procs.lock().unwrap();
        procs
            .iter()
            .filter(|((o, _), e)| {
                o == owner
                    && !e.life.stopping.load(Ordering::SeqCst)
                    && (e.life.exit().is_none()
                        || e.life.restarts.lock().unwrap().next_start_at_ms.is_some())
            })
            .map(|((_, n), _)| n.clone())
            .collect()
    }

    /// The pid of every supervised process running now (started here or adopted), for the
    /// agent's metrics; the processes they started are found from these.
    pub fn running_pids(&self) -> Vec<u32> {
        let procs = self.inner.procs.lock().unwrap();
        procs
            .values()
            .filter_map(|e| {
                let run = *e.life.run.borrow();
                (run.exit.is_none() && run.pid > 0).then_some(run.pid)
            })
            .collect()
    }

    /// The leaf of a supervised process, when contained.
    fn process_leaf(&self, owner: &str, name: &str) -> Option<Cgroup> {
        let parent = self.inner.cgroups.as_ref()?;
        Some(
            parent
                .child(&format!("svc-{owner}"))
                .child(&format!("p-{name}")),
        )
    }

    /// SIGTERM, then SIGKILL after `grace`; returns once the process has exited, and then
    /// kills what is left of its tree (its cgroup leaf, or its group and descendants).
    /// Stopping an unknown or exited process succeeds.
    pub async fn stop(&self, owner: &str, name: &str, grace: Duration) -> Result<(), String> {
        // Marked under the table's lock: a restart then either happened already (this sees
        // its run) or never will.
        let entry = {
            let procs = self.inner.procs.lock().unwrap();
            let entry = procs.get(&(owner.to_owned(), name.to_owned())).map(|e| {
                e.life.stopping.store(true, Ordering::SeqCst);
                e.life.wake.notify_waiters();
                (e.life.run.borrow().pid, e.life.run.subscribe())
            });
            self.save_table(&procs);
            entry
        };
        let Some((pid, mut exit)) = entry else {
            return Ok(());
        };
        let leaf = self.process_leaf(owner, name);
        // Without cgroups, remember the tree now: once the process exits, its orphans no
        // longer descend from it.
        let tree = match &leaf {
            Some(_) => Vec::new(),
            None => descendants::descendants(pid),
        };
        if exit.borrow().exit.is_none() {
            let group = Pid::from_raw(pid as i32);
            let _ = killpg(group, Signal::SIGTERM);
            if let Some(l) = &leaf {
                signal_all(&l.procs(), Signal::SIGTERM);
            }
            // The watch `Ref` is dropped at once: holding it would block the reaper's send.
            let exited = tokio::time::timeout(grace, exit.wait_for(|r| r.exit.is_some()))
                .await
                .is_ok();
            if !exited {
                tracing::warn!(owner, name, pid, "process ignored SIGTERM; sending SIGKILL");
                let _ = killpg(group, Signal::SIGKILL);
                if let Some(l) = &leaf {
                    signal_all(&l.procs(), Signal::SIGKILL);
                }
                let killed = tokio::time::timeout(
                    Duration::from_secs(10),
                    exit.wait_for(|r| r.exit.is_some()),
                )
                .await
                .is_ok();
                if !killed {
                    return Err(format!(
                        "process {name} (pid {pid}) did not exit after SIGKILL"
                    ));
                }
            }
        }
        end_tree(leaf, pid, tree).await?;
        tracing::info!(owner, name, pid, "supervised process stopped");
        Ok(())
    }

    /// Stops every running process (shutdown), then kills and removes every owner's cgroup;
    /// returns the `(owner, name)` pairs it stopped.
    pub async fn stop_all(&self, grace: Duration) -> Vec<(String, String)> {
        let running: Vec<(String, String)> = {
            let procs = self.inner.procs.lock().unwrap();
            procs
                .iter()
                .filter(|(_, e)| {
                    e.life.exit().is_none()
                        || e.life.restarts.lock().unwrap().next_start_at_ms.is_some()
                })
                .map(|(k, _)| k.clone())
                .collect()
        };
        let stops = running.iter().map(|(o, n)| self.stop(o, n, grace));
        for r in futures::future::join_all(stops).await {
            if let Err(e) = r {
                tracing::warn!(error = %e, "stop failed during shutdown");
            }
        }
        if let Some(parent) = self.inner.cgroups.clone() {
            let owners = owner_cgroups(&parent);
            let ended = tokio::task::spawn_blocking(move || {
                owners.iter().map(|cg| cg.destroy()).collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            for e in ended.into_iter().filter_map(Result::err) {
                tracing::warn!(error = %e, "cannot remove a service cgroup during shutdown");
            }
        }
        running
    }
}

/// The `svc-*` cgroups beneath `parent`.
fn owner_cgroups(parent: &Cgroup) -> Vec<Cgroup> {
    let Some(dir) = parent.paths().into_iter().next() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("svc-") && stratus_containment::valid_name(n))
        .map(|n| parent.child(&n))
        .collect()
}

fn signal_all(pids: &[u32], signal: Signal) {
    for pid in pids.iter().filter(|p| **p > 1) {
        let _ = kill(Pid::from_raw(*pid as i32), signal);
    }
}

/// Kills what is left of a stopped process: its whole leaf, or its group and the tree.
async fn end_tree(leaf: Option<Cgroup>, pid: u32, tree: Vec<u32>) -> Result<(), String> {
    tokio::task::spawn_blocking(move || match leaf {
        Some(l) => l.destroy().map_err(|e| e.to_string()),
        None => {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            signal_all(&tree, Signal::SIGKILL);
            for t in tree {
                descendants::kill_tree(t, None);
            }
            Ok(())
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Now, in Unix milliseconds.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
#[path = "supervisor_tests.rs"]
mod tests;
