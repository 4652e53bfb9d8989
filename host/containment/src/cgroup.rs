//! One cgroup node, present in every usable hierarchy: create, join, limit, kill, remove.

use crate::ContainmentError;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long `kill` waits for a cgroup to empty before giving up.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long `remove` retries a directory the kernel still reports busy (exiting tasks).
const REMOVE_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// cgroup v2: `cgroup.kill`, and `pids.max` where the controller is enabled.
    Unified,
    /// A cgroup v1 hierarchy with the `pids` controller.
    PidsV1,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dir {
    pub kind: Kind,
    pub path: PathBuf,
    /// Whether this hierarchy carries the process limit.
    pub pids: bool,
}

/// A cgroup in every usable hierarchy (none when cgroups are unavailable). Creating the value
/// touches nothing; [`Cgroup::create`] makes the directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    dirs: Vec<Dir>,
}

/// Open `cgroup.procs` files of a cgroup; a child process joins it before exec with
/// [`Joiner::join_self`].
#[derive(Debug)]
pub struct Joiner {
    fds: Vec<OwnedFd>,
}

impl Joiner {
    /// Moves the calling process into the cgroup. Only `write(2)` is called, so this is
    /// async-signal-safe and may run in a `pre_exec` hook between fork and exec.
    pub fn join_self(&self) -> std::io::Result<()> {
        for fd in &self.fds {
            // "0" means the writing process itself.
            nix::unistd::write(fd, b"0").map_err(std::io::Error::from)?;
        }
        Ok(())
    }
}

impl Cgroup {
    pub(crate) fn from_dirs(dirs: Vec<Dir>) -> Cgroup {
        Cgroup { dirs }
    }

    pub(crate) fn dirs(&self) -> &[Dir] {
        &self.dirs
    }

    /// Whether this cgroup exists in at least one hierarchy.
    pub fn is_real(&self) -> bool {
        !self.dirs.is_empty()
    }

    /// Its directory in each hierarchy.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.path.clone()).collect()
    }

    /// The child cgroup `name` (not created); `name` must pass [`crate::valid_name`].
    pub fn child(&self, name: &str) -> Cgroup {
        assert!(crate::valid_name(name), "invalid cgroup name {name:?}");
        Cgroup {
            dirs: self
                .dirs
                .iter()
                .map(|d| Dir {
                    path: d.path.join(name),
                    ..d.clone()
                })
                .collect(),
        }
    }

    /// Creates the directories (an existing one is reused). Where v2 carries the process
    /// limit, the parent's `cgroup.subtree_control` gets `+pids` first; that fails while the
    /// parent still holds processes (v2's no-internal-process rule), which only costs this
    /// cgroup its limit (see [`Cgroup::set_pids_max`]).
    pub fn create(&self) -> Result<(), ContainmentError> {
        for d in &self.dirs {
            if d.kind == Kind::Unified
                && d.pids
                && let Some(parent) = d.path.parent()
            {
                let _ = enable_pids(parent);
            }
            match std::fs::create_dir(&d.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(ContainmentError::io("creating", &d.path)(e)),
            }
        }
        Ok(())
    }

    /// Opens `cgroup.procs` in each hierarchy, before a fork, for the child to join.
    pub fn joiner(&self) -> Result<Joiner, ContainmentError> {
        let fds = self
            .dirs
            .iter()
            .map(|d| {
                let path = d.path.join("cgroup.procs");
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map(OwnedFd::from)
                    .map_err(ContainmentError::io("opening", &path))
            })
            .collect::<Result<_, _>>()?;
        Ok(Joiner { fds })
    }

    /// Moves process `pid` (all its threads) into this cgroup.
    pub fn enter(&self, pid: u32) -> Result<(), ContainmentError> {
        for d in &self.dirs {
            let path = d.path.join("cgroup.procs");
            std::fs::write(&path, pid.to_string())
                .map_err(ContainmentError::io("writing", &path))?;
        }
        Ok(())
    }

    /// Sets `pids.max`; `Ok(false)` when no hierarchy limits processes here (including a v2
    /// cgroup whose parent could not enable the controller).
    pub fn set_pids_max(&self, max: u64) -> Result<bool, ContainmentError> {
        let mut set = false;
        for d in self.dirs.iter().filter(|d| d.pids) {
            let path = d.path.join("pids.max");
            if d.kind == Kind::Unified && !path.exists() {
                continue;
            }
            std::fs::write(&path, max.to_string())
                .map_err(ContainmentError::io("writing", &path))?;
            set = true;
        }
        Ok(set)
    }

    /// `(pids.current, pids.max)` where the limit is enforced.
    pub fn pids_usage(&self) -> Option<(u64, u64)> {
        let d = self.dirs.iter().find(|d| d.pids)?;
        let read = |f: &str| std::fs::read_to_string(d.path.join(f)).ok();
        let current = read("pids.current")?.trim().parse().ok()?;
        let max = read("pids.max")?.trim().parse().unwrap_or(u64::MAX);
        Some((current, max))
    }

    /// Every process in this cgroup and its descendants, across hierarchies.
    pub fn procs(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for d in &self.dirs {
            walk(&d.path, &mut |dir| {
                let text = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            });
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Kills every process in the cgroup and its descendants and waits until none is left:
    /// `cgroup.kill` where the kernel has it, else SIGKILL to each listed pid until empty.
    pub fn kill(&self) -> Result<(), ContainmentError> {
        for d in self.dirs.iter().filter(|d| d.kind == Kind::Unified) {
            let file = d.path.join("cgroup.kill");
            if file.exists() {
                std::fs::write(&file, "1").map_err(ContainmentError::io("writing", &file))?;
            }
        }
        let deadline = Instant::now() + KILL_WAIT;
        loop {
            let pids = self.procs();
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ContainmentError::StillPopulated {
                    path: self.dirs[0].path.clone(),
                    pids,
                });
            }
            for pid in pids {
                // Our own process is never in a cgroup we kill, but guard against a bad caller.
                if pid > 1 && pid != std::process::id() {
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
            }
            std::thread::sleep(POLL);
        }
    }

    /// Removes the directories, children first. A cgroup that no longer exists is fine.
    pub fn remove(&self) -> Result<(), ContainmentError> {
        for d in &self.dirs {
            let mut dirs = Vec::new();
            walk(&d.path, &mut |dir| dirs.push(dir.to_owned()));
            // walk() lists parents before children.
            for dir in dirs.iter().rev() {
                rmdir(dir)?;
            }
        }
        Ok(())
    }

    /// Kills and removes, the end of every cgroup.
    pub fn destroy(&self) -> Result<(), ContainmentError> {
        self.kill()?;
        self.remove()
    }

    /// Whether the directory exists in any hierarchy.
    pub fn exists(&self) -> bool {
        self.dirs.iter().any(|d| d.path.is_dir())
    }
}

/// Enables the pids controller for the children of `parent` (v2); harmless when on already.
fn enable_pids(parent: &Path) -> Result<(), ContainmentError> {
    let control = parent.join("cgroup.subtree_control");
    let on =
        std::fs::read_to_string(&control).is_ok_and(|c| c.split_whitespace().any(|c| c == "pids"));
    if on {
        return Ok(());
    }
    std::fs::write(&control, "+pids").map_err(ContainmentError::io("writing", &control))
}

/// Calls `f` on `dir` and then each cgroup directory beneath it (parents first).
fn walk(dir: &Path, f: &mut impl FnMut(&Path)) {
    if !dir.is_dir() {
        return;
    }
    f(dir);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        // Only real directories: cgroupfs has no symlinks, but do not follow one if it did.
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&e.path(), f);
        }
    }
}

/// rmdir, retried while exiting tasks keep the cgroup busy for a moment.
fn rmdir(dir: &Path) -> Result<(), ContainmentError> {
    let deadline = Instant::now() + REMOVE_WAIT;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(nix::libc::EBUSY) => {
                std::thread::sleep(POLL);
            }
            Err(e) => return Err(ContainmentError::io("removing", dir)(e)),
        }
    }
}

#[cfg(test)]
#[path = "cgroup_tests.rs"]
mod tests;
