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
fn marked_for(pid: u32, root: &Path) -> bool {
    let marker = format!("{ROOT_MARKER}={}", root.display());
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|var| var == marker.as_bytes()))
        .unwrap_or(false)
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
    live_members(pgid)
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
