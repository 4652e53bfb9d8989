//! The fallback where no cgroup is usable: the agent becomes a child subreaper, so orphans of
//! its children (a daemon that double-forked) are re-parented to it instead of init, and it
//! finds and kills them through the parent links in `/proc`. The process limit is not enforced.

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::collections::HashSet;

/// Makes this process the reaper of its orphaned descendants (Linux 3.4+).
pub fn become_subreaper() -> std::io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(std::io::Error::from)
}

/// One live process as `/proc/<pid>/stat` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub ppid: u32,
    pub pgrp: u32,
    /// When it started, in clock ticks since boot: with the pid, it names one process for good.
    pub started: u64,
}

/// Every live process (zombies count as gone: they run nothing any more).
pub fn live_processes() -> Vec<ProcStat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(live_process)
        .collect()
}

/// Process `pid`, if it lives (a zombie does not).
pub fn live_process(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    // `starttime` is field 22, `pgrp` field 5.
    let started = fields.nth(16)?.parse().ok()?;
    (!matches!(state, "Z" | "X")).then_some(ProcStat {
        pid,
        ppid,
        pgrp,
        started,
    })
}

/// The live descendants of `root` (not `root` itself).
pub fn descendants(root: u32) -> Vec<u32> {
    let links: Vec<(u32, u32)> = live_processes().iter().map(|p| (p.pid, p.ppid)).collect();
    let mut found: HashSet<u32> = HashSet::from([root]);
    let mut out = Vec::new();
    // Parents may have larger pids than their children (pid wrap), so iterate to a fixpoint.
    loop {
        let before = out.len();
        for (pid, ppid) in &links {
            if found.contains(ppid) && found.insert(*pid) {
                out.push(*pid);
            }
        }
        if out.len() == before {
            return out;
        }
    }
}

/// SIGKILLs process group `pgid` and every descendant of `root` until none is found.
pub fn kill_tree(root: u32, pgid: Option<u32>) {
    for _ in 0..100 {
        if let Some(g) = pgid.filter(|g| *g > 1) {
            let _ = killpg(Pid::from_raw(g as i32), Signal::SIGKILL);
        }
        let pids = descendants(root);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
