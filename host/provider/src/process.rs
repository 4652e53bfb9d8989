//! Process-group inspection and signalling through `/proc` (the local provider is Linux-only).
//!
//! Zombies count as gone: a killed process whose parent has not reaped it yet is no longer
//! running anything.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::path::Path;

/// The environment variable that marks an agent and everything it starts as belonging to a
/// server root, so that a recycled pid is never mistaken for our agent.
pub const ROOT_MARKER: &str = "STRATUS_SERVER_ROOT";

/// Every live (non-zombie) process with its process group id.
fn live_processes() -> Vec<(u32, u32)> {
    stratus_containment::descendants::live_processes()
        .into_iter()
        .map(|p| (p.pid, p.pgrp))
        .collect()
}

/// Pids of the live members of process group `pgid`.
pub fn live_members(pgid: u32) -> Vec<u32> {
    live_processes()
        .into_iter()
        .filter(|(_, pgrp)| *pgrp == pgid)
        .map(|(pid, _)| pid)
        .collect()
}

/// Whether `pid` carries our environment marker for `root`.
/// Only a process of the provider's own user counts: agents run as it, the programs they
/// start do not, and a program that put the marker into its own environment (naming another
/// server's root, to keep that server's disk "busy" or draw its signals) is not ours.
fn marked_for(pid: u32, root: &Path) -> bool {
    let marker = format!("{ROOT_MARKER}={}", root.display());
    let marked = std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|var| var == marker.as_bytes()))
        .unwrap_or(false);
    marked && real_uid(pid) == Some(nix::unistd::geteuid().as_raw())
}

/// The real uid of `pid`, from `/proc/<pid>/status`.
fn real_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    ids.split_whitespace().next()?.parse().ok()
}

/// Process groups with a live member carrying our marker for `root`: what is left of an
/// earlier agent of the same server.
pub fn marked_groups(root: &Path) -> Vec<u32> {
    let mut groups: Vec<u32> = live_processes()
        .into_iter()
        .filter(|(pid, _)| marked_for(*pid, root))
        .map(|(_, pgrp)| pgrp)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// Whether `pid` carries our marker for `root` or runs inside `root`.
fn belongs_to(pid: u32, root: &Path) -> bool {
    marked_for(pid, root)
        || std::fs::read_link(format!("/proc/{pid}/cwd"))
            .map(|cwd| cwd.starts_with(root))
            .unwrap_or(false)
}

/// Every live process that is ours for `root`, in any process group: what must be gone before
/// the server's disk may be removed.
pub fn processes_of(root: &Path) -> Vec<u32> {
    live_processes()
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|pid| belongs_to(*pid, root))
        .collect()
}

/// Whether process group `pgid` has a live member that is ours (started for `root`).
pub fn group_alive(pgid: u32, root: &Path) -> bool {
    // The leader (the agent) first: one process's files rather than a scan of all of /proc,
    // which auto-recovery asks for every server twice a second.
    belongs_to(pgid, root)
        || live_members(pgid)
            .into_iter()
            .any(|pid| belongs_to(pid, root))
}

/// Sends `signal` to the group; `Ok(false)` if the group no longer exists.
pub fn signal_group(pgid: u32, signal: Signal) -> Result<bool, nix::errno::Errno> {
    match killpg(Pid::from_raw(pgid as i32), signal) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::ESRCH) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Kills every process running as `uid`: a forked child becomes `uid` and calls
/// `kill(-1, SIGKILL)`, which the kernel delivers to every process that uid may signal in one
/// pass (children forked meanwhile included), so a fork bomb cannot outrun it the way it
/// outruns a scan of `/proc`, and a process with SIGKILL pending runs no further instruction
/// of its own. One fork, no `/proc` scan, so it costs a launch about a millisecond. Root only;
/// `uid` must be a per-server program uid, never a shared one.
pub fn kill_user(uid: u32) -> std::io::Result<()> {
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::{ForkResult, Gid, Uid, fork, setgid, setgroups, setuid};
    assert!(uid != 0, "never as root");
    // SAFETY: the child only makes raw system calls (async-signal-safe) and then _exits.
    match unsafe { fork() }? {
        ForkResult::Child => {
            let dropped = setgroups(&[])
                .and_then(|()| setgid(Gid::from_raw(uid)))
                .and_then(|()| setuid(Uid::from_raw(uid)));
            let code = match dropped {
                Ok(()) => {
                    let _ = nix::sys::signal::kill(Pid::from_raw(-1), Signal::SIGKILL);
                    0
                }
                Err(_) => 1,
            };
            // SAFETY: _exit is async-signal-safe and skips the parent's atexit handlers.
            unsafe { nix::libc::_exit(code) }
        }
        ForkResult::Parent { child } => match waitpid(child, None)? {
            WaitStatus::Exited(_, 0) => Ok(()),
            other => Err(std::io::Error::other(format!(
                "the child that kills as uid {uid} could not become it ({other:?})"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::time::Duration;

    /// Live (non-zombie) processes whose real, effective or saved uid is `uid`.
    pub fn processes_of_user(uid: u32) -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mine = |status: &str| {
            let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name));
            let zombie = field("State:").is_some_and(|s| s.trim_start().starts_with('Z'));
            let ids = field("Uid:").unwrap_or_default();
            !zombie
                && ids
                    .split_whitespace()
                    .take(3)
                    .any(|id| id == uid.to_string())
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| mine(&s))
            })
            .collect()
    }

    /// Processes of a program uid, in a process group and session of their own and forking,
    /// are all gone after `kill_user`; a process of another uid is left alone.
    #[test]
    fn kill_user_ends_every_process_of_the_uid_and_no_other() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to switch users");
            return;
        }
        // Outside every range the provider hands out, so no real server can be hit.
        let (uid, other) = (0x7fff_0101, 0x7fff_0102);
        let start = |uid: u32, script: &str| {
            std::process::Command::new("/bin/sh")
                .args(["-c", script])
                .uid(uid)
                .gid(uid)
                .process_group(0)
                .spawn()
                .unwrap()
        };
        let mut victim = start(other, "sleep 60");
        let mut parent = start(
            uid,
            "setsid sleep 60 & sleep 60 & while :; do sleep 60; done",
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while processes_of_user(uid).len() < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            processes_of_user(uid).len() >= 3,
            "{:?}",
            processes_of_user(uid)
        );
        kill_user(uid).unwrap();
        let _ = parent.wait();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !processes_of_user(uid).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(processes_of_user(uid), Vec::<u32>::new());
        assert!(
            processes_of_user(other).contains(&victim.id()),
            "another uid was hit"
        );
        let _ = signal_group(victim.id(), Signal::SIGKILL);
        victim.wait().unwrap();
    }

    /// A program that sets the marker of a server root in its own environment does not make
    /// that server's disk busy nor draw its signals; the same marker on a process of ours does.
    #[test]
    fn only_the_providers_own_processes_carry_a_servers_marker() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to switch users");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let start = |uid: Option<u32>| {
            let mut cmd = std::process::Command::new("/bin/sleep");
            cmd.arg("60").env(ROOT_MARKER, root.path()).process_group(0);
            if let Some(uid) = uid {
                cmd.uid(uid).gid(uid);
            }
            cmd.spawn().unwrap()
        };
        let mut theirs = start(Some(0x7fff_0104));
        let mut ours = start(None);
        // Both have exec'd (before that, their environment is still the test's).
        let execd = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !(execd(theirs.id()) && execd(ours.id())) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let busy = processes_of(root.path());
        assert!(!busy.contains(&theirs.id()), "{busy:?}");
        assert!(busy.contains(&ours.id()), "{busy:?}");
        assert_eq!(marked_groups(root.path()), vec![ours.id()]);
        for child in [&mut theirs, &mut ours] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}
