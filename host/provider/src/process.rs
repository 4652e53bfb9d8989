//! Process-group inspection and signalling through `/proc` (the local provider is Linux-only).
//!
//! Zombies count as gone: a killed process whose parent has not reaped it yet is no longer
//! running anything.

use crate::proc_scan::Coalescer;
use nix::libc::c_long;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use syscalls::{Errno as RawErrno, Sysno};

/// The environment variable that marks an agent and everything it starts as belonging to a
/// server root, so that a recycled pid is never mistaken for our agent.
pub const ROOT_MARKER: &str = "STRATUS_SERVER_ROOT";

/// Every live (non-zombie) process with its process group id, from a scan that started after
/// this call (shared with the callers waiting for it: see `proc_scan.rs`).
fn live_processes() -> Arc<Vec<(u32, u32)>> {
    static SCANS: Coalescer<(), Arc<Vec<(u32, u32)>>> = Coalescer::new();
    SCANS.ask((), |queries| {
        let live: Arc<Vec<(u32, u32)>> = Arc::new(
            stratus_containment::descendants::live_processes()
                .into_iter()
                .map(|p| (p.pid, p.pgrp))
                .collect(),
        );
        queries.iter().map(|()| live.clone()).collect()
    })
}

/// Pids of the live members of process group `pgid`.
pub fn live_members(pgid: u32) -> Vec<u32> {
    live_processes()
        .iter()
        .filter(|(_, pgrp)| *pgrp == pgid)
        .map(|(pid, _)| *pid)
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
        .iter()
        .filter(|(pid, _)| marked_for(*pid, root))
        .map(|(_, pgrp)| *pgrp)
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
/// the server's disk may be removed. Servers ending together share one pass over the
/// processes, which reads each one's marker and directory once for all of their roots.
pub fn processes_of(root: &Path) -> Vec<u32> {
    static SCANS: Coalescer<PathBuf, Vec<u32>> = Coalescer::new();
    SCANS.ask(root.to_path_buf(), |roots| {
        let mut found = vec![Vec::new(); roots.len()];
        for (pid, _) in live_processes().iter() {
            let owner = Owner::of(*pid);
            for (i, root) in roots.iter().enumerate() {
                if owner.belongs_to(root) {
                    found[i].push(*pid);
                }
            }
        }
        found
    })
}

/// What ties a process to a server root: its marker (when it runs as our user) and its
/// working directory.
struct Owner {
    marker: Option<PathBuf>,
    cwd: Option<PathBuf>,
}

impl Owner {
    fn of(pid: u32) -> Owner {
        let prefix = format!("{ROOT_MARKER}=");
        let marker = std::fs::read(format!("/proc/{pid}/environ"))
            .ok()
            .and_then(|env| {
                env.split(|b| *b == 0)
                    .find_map(|var| var.strip_prefix(prefix.as_bytes()).map(<[u8]>::to_vec))
            })
            .filter(|_| real_uid(pid) == Some(nix::unistd::geteuid().as_raw()))
            .map(|bytes| PathBuf::from(std::ffi::OsString::from_vec(bytes)));
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
        Owner { marker, cwd }
    }

    /// The same test as [`belongs_to`], on what was read once.
    fn belongs_to(&self, root: &Path) -> bool {
        self.marker.as_deref() == Some(root)
            || self.cwd.as_ref().is_some_and(|c| c.starts_with(root))
    }
}

/// Whether process group `pgid` has a live member that is ours (started for `root`).
pub fn group_alive(pgid: u32, root: &Path) -> bool {
    // The leader (the agent) first: one process's files rather than a scan of all of /proc,
    // which auto-recovery asks for every server twice a second. Then the members of the
    // server's cgroup, which hold the whole group once the agent joined it (a thousand servers
    // ending together made these scans most of a terminate).
    if KnownLeaders::ours(pgid, root) {
        return true;
    }
    let members = match crate::cgroup::joined_members(root) {
        Some(pids) => pids
            .into_iter()
            .filter(|pid| {
                stratus_containment::descendants::live_process(*pid).is_some_and(|p| p.pgrp == pgid)
            })
            .collect(),
        None => live_members(pgid),
    };
    members.into_iter().any(|pid| belongs_to(pid, root))
}

/// Processes found ours for a root, with the start time they had then. A process keeps its
/// start time for life, and a pid is not given again within one clock tick, so a live process
/// of the same pid and start time is the one found before: its marker and uid need not be read
/// again (reading another process's environment was a fifth of an idle control plane's time,
/// recovery looking at every running server every 2 s).
struct KnownLeaders;

/// Pid → (root, start time in clock ticks since boot).
static KNOWN_LEADERS: std::sync::Mutex<std::collections::BTreeMap<u32, (PathBuf, u64)>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Most processes [`KnownLeaders`] remembers: one per agent; past it, it starts over.
const KNOWN_LEADERS_MAX: usize = 65_536;

impl KnownLeaders {
    /// Whether `pid` is ours for `root` (see [`belongs_to`]), remembered or found now.
    fn ours(pid: u32, root: &Path) -> bool {
        let Some(started) = live_start_time(pid) else {
            return false;
        };
        let mut known = KNOWN_LEADERS.lock().unwrap_or_else(|e| e.into_inner());
        if known
            .get(&pid)
            .is_some_and(|(r, t)| *t == started && r == root)
        {
            return true;
        }
        drop(known);
        if !belongs_to(pid, root) {
            return false;
        }
        known = KNOWN_LEADERS.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= KNOWN_LEADERS_MAX {
            known.clear();
        }
        known.insert(pid, (root.to_path_buf(), started));
        true
    }
}

/// The start time of `pid` (clock ticks since boot), if it lives (a zombie does not).
fn live_start_time(pid: u32) -> Option<u64> {
    stratus_containment::descendants::live_process(pid).map(|p| p.started)
}

/// Sends `signal` to the group; `Ok(false)` if the group no longer exists.
pub fn signal_group(pgid: u32, signal: Signal) -> Result<bool, nix::errno::Errno> {
    match killpg(Pid::from_raw(pgid as i32), signal) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::ESRCH) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Kills every process running as `uid`: a child becomes `uid` and calls `kill(-1, SIGKILL)`,
/// which the kernel delivers to every process that uid may signal in one pass (children forked
/// meanwhile included), so a fork bomb cannot outrun it the way it outruns a scan of `/proc`,
/// and a process with SIGKILL pending runs no further instruction of its own. No `/proc` scan.
/// Root only; `uid` must be a per-server program uid, never a shared one.
///
/// The child shares the control plane's memory and descriptor table (`CLONE_VM |
/// CLONE_FILES`; see [`Memory`] for the hosts where it does not). So it runs on its own stack
/// and makes raw system calls only, which neither touch glibc's `errno` (the child shares the
/// calling thread's thread-local storage) nor change the ids of the control plane's other
/// threads (glibc's `setuid` would). While processes of the uid may still run, the child holds
/// the uid as its effective id only, its real and saved ids being [`killer_uid`], which no
/// other process has: the kernel lets it signal them (by their real id), but lets none of them
/// stop, signal or trace it. They may still lower its scheduling (the kernel checks only the
/// effective uid for that), so [`reap`] gives it back. It takes the uid as its real id, which
/// keyrings are found by, only after the kill; a signal the uid sent before and the kernel
/// delivers only then (one armed with `F_SETOWN`, a `kill` midway) can still stop or kill it.
/// So the caller is not suspended while the child runs (no `CLONE_VFORK`): it waits, kills a
/// child that stopped, and makes the child anew, up to [`KILL_ATTEMPTS`] times in all.
///
/// The same child then ends the uid's kernel keyrings (see [`clear_user_keyrings`]): the
/// kernel keeps them after the uid's last process, so the next holder of the uid would read
/// them. One that can be neither ended nor emptied is a warning, not an error.
pub fn kill_user(uid: u32) -> std::io::Result<()> {
    kill_user_with(uid, Memory::for_this_host())
}

/// [`kill_user`], its children sharing the control plane's memory or not.
fn kill_user_with(uid: u32, memory: Memory) -> std::io::Result<()> {
    assert!(uid != 0, "never as root");
    assert!(
        ![0, u32::MAX].contains(&killer_uid(uid)),
        "uid {uid} has no killer uid"
    );
    // Two kills of one uid at once share its killer uid, so each child's `kill(-1)` would end
    // the other: they take turns (uids sharing a lock only wait a moment).
    let _turn = KILL_TURNS[uid as usize % KILL_TURNS.len()]
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut status = run_killer(uid, memory)?;
    for _ in 1..KILL_ATTEMPTS {
        if !matches!(status, WaitStatus::Signaled(..)) {
            break;
        }
        tracing::warn!(
            uid,
            "a process of the uid stopped or killed the child ending it; again"
        );
        status = run_killer(uid, memory)?;
    }
    // Only once the kill was made: before it, a process of the uid could make the keyring anew.
    let killed = matches!(status, WaitStatus::Exited(_, 0 | 2));
    let persistent_ended = killed && end_persistent_keyring(uid);
    match status {
        WaitStatus::Exited(_, 0) if persistent_ended => Ok(()),
        // Only the holder itself can lock its keyrings (and it could read them anyway):
        // failing the launch would let it deny its lease to every later server.
        WaitStatus::Exited(_, 0 | 2) => {
            tracing::warn!(uid, "a keyring of the program uid could not be cleared");
            Ok(())
        }
        other => Err(std::io::Error::other(format!(
            "the child that kills as uid {uid} could not become it or was stopped \
             {KILL_ATTEMPTS} times ({other:?})"
        ))),
    }
}

/// Locks that kills of the same uid take turns on, by uid.
static KILL_TURNS: [std::sync::Mutex<()>; 64] = [const { std::sync::Mutex::new(()) }; 64];

/// How many children [`kill_user`] makes at most for one uid: each one a process of the uid
/// stops or kills is followed by another (which that process, dead by then, cannot reach).
const KILL_ATTEMPTS: usize = 3;

/// Runs [`kill_all_as`] in a child sharing the control plane's memory and descriptor table
/// (unless sharing is unsafe: see [`Memory`]), on a stack of its own, and waits for it (see
/// [`reap`]): how it ended.
fn run_killer(uid: u32, memory: Memory) -> std::io::Result<WaitStatus> {
    use nix::libc::{CLONE_FILES, CLONE_PIDFD, CLONE_VM, SIGCHLD, c_int};
    let mut stack = vec![0u8; CHILD_STACK];
    // The ABI wants the stack pointer 16-byte aligned; the stack grows down from its end.
    let top = stack.as_mut_ptr().wrapping_add(CHILD_STACK);
    let top = top.wrapping_sub(top as usize % 16);
    // The child starts with every signal blocked (glibc's two included, which its
    // `pthread_sigmask` leaves open), so no handler runs on the child's stack with its ids.
    let old = set_signal_mask(!0);
    let dumpable = DumpableHold::take();
    let shared = match memory {
        Memory::Shared => CLONE_VM | CLONE_FILES,
        Memory::Copied => 0,
    };
    let mut pidfd: c_int = -1;
    // SAFETY: the child runs `killer_main` on `stack`, which outlives it (it is reaped below,
    // or the stack is leaked), and makes raw system calls only: no allocation, lock, panic or
    // thread-local access, so sharing the calling thread's memory and TLS is sound. The
    // kernel writes the child's pidfd into `pidfd` (CLONE_PIDFD) before `clone` returns.
    let child = unsafe {
        nix::libc::clone(
            killer_main,
            top.cast(),
            shared | CLONE_PIDFD | SIGCHLD,
            uid as usize as *mut _,
            &mut pidfd as *mut c_int,
        )
    };
    let cloned = nix::errno::Errno::result(child).map(Pid::from_raw);
    set_signal_mask(old);
    let child = cloned?;
    // SAFETY: a descriptor the kernel just made for us, owned here alone.
    let pidfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(pidfd) };
    let status = reap(child, pidfd.as_fd());
    if status.is_err() {
        // Not reaped, so perhaps still running on it.
        std::mem::forget(stack);
    }
    drop(dumpable);
    Ok(status?)
}

/// Whether [`kill_user`]'s child shares the control plane's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Memory {
    /// `CLONE_VM`: no page table copied (a fork copied the control plane's twice per server,
    /// a third of a 500-server launch).
    Shared,
    /// A copy, as `fork` makes: when `fs.suid_dumpable` is 1 the kernel makes the shared
    /// memory dumpable on the child's change of uid, so the child's `/proc` files, some of
    /// which act on the whole memory (`oom_score_adj`), would belong to the uid.
    Copied,
}

impl Memory {
    /// What the host's `fs.suid_dumpable` allows now (it may change while we run).
    fn for_this_host() -> Memory {
        match std::fs::read("/proc/sys/fs/suid_dumpable") {
            Ok(value) if value.trim_ascii() == b"1" => Memory::Copied,
            _ => Memory::Shared,
        }
    }
}

/// Sets the calling thread's signal mask to `mask` (bit n-1 for signal n) with a raw system
/// call, which glibc does not filter: the mask it replaced.
fn set_signal_mask(mask: u64) -> u64 {
    let mut old = 0u64;
    // SAFETY: pointers to two local words, and their size (the kernel's signal set).
    let _ = unsafe {
        syscalls::syscall!(
            Sysno::rt_sigprocmask,
            nix::libc::SIG_SETMASK,
            &mask as *const u64,
            &mut old as *mut u64,
            std::mem::size_of::<u64>()
        )
    };
    old
}

/// The entry point of [`kill_user`]'s child: the uid is passed as the argument pointer.
extern "C" fn killer_main(uid: *mut nix::libc::c_void) -> nix::libc::c_int {
    kill_all_as(uid as usize as u32)
}

/// How long [`reap`] waits for the child to end before it checks on it: a kill takes well
/// under a millisecond.
const REAP_PATIENCE_MS: u8 = 20;

/// Waits for `child` to end. One that stops (only a process of the uid it became can make it)
/// is killed, so it never holds the caller; one still running after [`REAP_PATIENCE_MS`] gets
/// the calling thread's scheduling back each time (a process of the uid may have made it idle,
/// nice 19 or bound to a busy core before it died: the kernel allows that to any process
/// whose effective uid is the child's).
fn reap(child: Pid, pidfd: BorrowedFd) -> nix::Result<WaitStatus> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::wait::{WaitPidFlag, waitpid};
    let flags = WaitPidFlag::WUNTRACED | WaitPidFlag::WNOHANG;
    loop {
        match waitpid(child, Some(flags)) {
            Ok(WaitStatus::StillAlive) => {
                let mut ended = [PollFd::new(pidfd, PollFlags::POLLIN)];
                if poll(&mut ended, PollTimeout::from(REAP_PATIENCE_MS)) == Ok(0) {
                    give_own_scheduling(child);
                }
            }
            Ok(WaitStatus::Stopped(..)) => {
                // Our own unreaped child: its pid cannot have been given to another process.
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            }
            Err(nix::errno::Errno::EINTR) => {}
            other => return other,
        }
    }
}

/// Gives `child` the calling thread's scheduling policy, nice value and CPUs (as root).
fn give_own_scheduling(child: Pid) {
    use nix::libc;
    let pid = child.as_raw();
    // SAFETY: local, zero-initialised plain structures and their sizes.
    unsafe {
        let mut param: libc::sched_param = std::mem::zeroed();
        let policy = libc::sched_getscheduler(0);
        if policy >= 0 && libc::sched_getparam(0, &mut param) == 0 {
            libc::sched_setscheduler(pid, policy, &param);
        }
        nix::errno::Errno::clear();
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        if nice != -1 || nix::errno::Errno::last_raw() == 0 {
            libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, nice);
        }
        let mut cpus: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if libc::sched_getaffinity(0, size, &mut cpus) == 0 {
            libc::sched_setaffinity(pid, size, &cpus);
        }
    }
}

/// Stack of [`kill_user`]'s child: a few frames of raw system calls.
const CHILD_STACK: usize = 64 * 1024;

/// Where [`killer_uid`]'s range lies from the uid it mirrors: 0x7000_0000.. (local program
/// uids and `plugin call`'s just past them) mirror to 0x7800_0000.., clear of the SSH slots'
/// uids (0x7200_0000..0x7300_0000) and below systemd's foreign range (0x7ffe_0000).
const KILLER_UID_OFFSET: u32 = 0x0800_0000;

/// The real and saved uid (and gid) of [`kill_user`]'s child while it kills `uid`: its mirror
/// in a range Stratus gives no process. One per uid, so that kills of different uids running at
/// once cannot signal each other (the kernel lets a sender whose real id is a target's real id
/// signal it).
pub fn killer_uid(uid: u32) -> u32 {
    uid.wrapping_add(KILLER_UID_OFFSET)
}

/// Keeps the control plane's dumpable flag across the children of [`kill_user`]: the kernel
/// clears it on each child's change of effective uid (the memory is shared), and with kills
/// running at once only the last to end may put back what the first found.
struct DumpableHold;

/// Kills running, and the dumpable flag found by the first of them.
static DUMPABLE: std::sync::Mutex<(usize, bool)> = std::sync::Mutex::new((0, true));

impl DumpableHold {
    fn take() -> DumpableHold {
        let mut held = DUMPABLE.lock().unwrap_or_else(|e| e.into_inner());
        if held.0 == 0 {
            held.1 = nix::sys::prctl::get_dumpable().unwrap_or(true);
        }
        held.0 += 1;
        DumpableHold
    }
}

impl Drop for DumpableHold {
    fn drop(&mut self) {
        let mut held = DUMPABLE.lock().unwrap_or_else(|e| e.into_inner());
        held.0 -= 1;
        if held.0 == 0 {
            let _ = nix::sys::prctl::set_dumpable(held.1);
        }
    }
}

/// `keyctl(op, a, b)` with integer arguments: its result (an id or 0) or the error. A raw
/// system call that leaves `errno` alone, so [`kill_user`]'s child may make it.
fn keyctl(op: u32, a: c_long, b: c_long) -> Result<c_long, RawErrno> {
    // SAFETY: integer arguments only; no memory is passed.
    unsafe { syscalls::syscall!(Sysno::keyctl, op, a, b) }.map(|v| v as c_long)
}

/// Whether a keyctl failed only because this kernel has no keys (or no persistent keyrings).
fn keys_unsupported(e: RawErrno) -> bool {
    matches!(e, RawErrno::ENOSYS | RawErrno::EOPNOTSUPP)
}

/// Ends `uid`'s persistent keyring as root, once none of its processes is left: root may name
/// another uid's persistent keyring and link it into its own thread keyring (charged to root,
/// so a uid that filled its key quota cannot keep it that way; no one can change a persistent
/// keyring's permissions), then invalidates it and drops the link. `false` if it stayed.
fn end_persistent_keyring(uid: u32) -> bool {
    use nix::libc::{
        KEY_SPEC_THREAD_KEYRING, KEYCTL_CLEAR, KEYCTL_GET_PERSISTENT, KEYCTL_INVALIDATE,
    };
    let thread = c_long::from(KEY_SPEC_THREAD_KEYRING);
    let id = match keyctl(KEYCTL_GET_PERSISTENT, c_long::from(uid), thread) {
        Ok(id) => id,
        Err(e) => return keys_unsupported(e),
    };
    let ended = keyctl(KEYCTL_INVALIDATE, id, 0).is_ok();
    let _ = keyctl(KEYCTL_CLEAR, thread, 0);
    ended
}

/// In [`kill_user`]'s child: take `uid` as effective id (groups, gid, uid: raw calls, this
/// task only; real and saved ids [`killer_uid`]), kill everything of the uid, then become the
/// uid wholly and end its keyrings. 0 done, 1 could not change ids, 2 a keyring stayed.
fn kill_all_as(uid: u32) -> nix::libc::c_int {
    let (id, killer) = (c_long::from(uid), c_long::from(killer_uid(uid)));
    // SAFETY (each call): integer arguments only (setgroups with an empty list passes no
    // memory); an unprivileged task may take any of its ids for each.
    let became = unsafe {
        syscalls::syscall!(Sysno::setgroups, 0, 0).is_ok()
            && syscalls::syscall!(Sysno::setresgid, killer, id, killer).is_ok()
            && syscalls::syscall!(Sysno::setresuid, killer, id, killer).is_ok()
    };
    if !became {
        return 1;
    }
    let _ = unsafe { syscalls::syscall!(Sysno::kill, -1 as c_long, nix::libc::SIGKILL) };
    // Every process of the uid has SIGKILL pending, but one may be midway through its own
    // `kill(-1, SIGSTOP)`, which would reach this child once it has the uid as real id. Such a
    // call holds the kernel's task list lock for reading; `setpgid` takes it for writing, so it
    // returns only after every such call that held or awaited the lock before it has ended
    // (others can still stop this child; `kill_user` then kills it and makes another).
    // The saved ids stay the killer's: tracing needs all three ids equal, so no process of the
    // uid may trace this child even once it could signal it.
    let whole = unsafe {
        syscalls::syscall!(Sysno::setpgid, 0, 0).is_ok()
            && syscalls::syscall!(Sysno::setresgid, id, id, killer).is_ok()
            && syscalls::syscall!(Sysno::setresuid, id, id, killer).is_ok()
    };
    if !whole {
        return 1;
    }
    #[cfg(test)]
    tests::stop_if_asked(uid);
    #[cfg(test)]
    tests::idle_if_asked(uid);
    if clear_user_keyrings() { 0 } else { 2 }
}

/// Ends, as the calling process's uid, its user and user-session keyrings (which outlive its
/// processes; the persistent one is ended by root after, see [`end_persistent_keyring`]): each
/// is invalidated by its id, so the kernel destroys it and the next holder of the uid starts
/// with new, empty ones; one its holder kept from being invalidated (no search permission left)
/// is emptied instead. `false` if one could be neither, for a reason other than the kernel
/// lacking keys. Only raw system calls: it runs in [`kill_user`]'s child.
///
/// Looking a keyring up makes it when absent, so emptying them left three keys per uid in the
/// kernel for good (tens of thousands after a few thousand servers: kernel memory, and a
/// `/proc/key-users` that took seconds to read); invalidating leaves none.
fn clear_user_keyrings() -> bool {
    use nix::libc::{
        KEY_SPEC_USER_KEYRING, KEY_SPEC_USER_SESSION_KEYRING, KEYCTL_CLEAR, KEYCTL_GET_KEYRING_ID,
        KEYCTL_INVALIDATE,
    };
    // Every id first: a lookup after an invalidation fails (ENOKEY), or once the kernel has
    // collected the keyring, makes a new one.
    let ids = [KEY_SPEC_USER_SESSION_KEYRING, KEY_SPEC_USER_KEYRING]
        .map(|ring| keyctl(KEYCTL_GET_KEYRING_ID, c_long::from(ring), 0));
    ids.into_iter().fold(true, |ok, id| {
        ok & match id {
            Ok(id) => {
                keyctl(KEYCTL_INVALIDATE, id, 0).is_ok()
                    || keyctl(KEYCTL_CLEAR, id, 0).map_or_else(keys_unsupported, |_| true)
            }
            Err(e) => keys_unsupported(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::sync::atomic::AtomicU32;
    use std::sync::atomic::Ordering::SeqCst;
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

    /// Whether this test runs as root, as switching users needs; says so when it is skipped.
    fn root_or_skipped() -> bool {
        let root = nix::unistd::geteuid().is_root();
        if !root {
            eprintln!("skipped: needs root to switch users");
        }
        root
    }

    /// Starts `/bin/sh -c script` as `uid` (and gid), in a process group of its own.
    fn start_as(uid: u32, script: &str) -> std::process::Child {
        std::process::Command::new("/bin/sh")
            .args(["-c", script])
            .uid(uid)
            .gid(uid)
            .process_group(0)
            .spawn()
            .unwrap()
    }

    /// Waits up to 5 s for at least `n` live processes of `uid`.
    fn wait_for_processes_of(uid: u32, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while processes_of_user(uid).len() < n && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Processes of a program uid, in a process group and session of their own and forking,
    /// are all gone after `kill_user`; a process of another uid is left alone.
    /// Asserts that no process of `uid` is left within 5 s (a killed one may take a moment to
    /// be reaped).
    fn assert_no_process_of(uid: u32) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !processes_of_user(uid).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(processes_of_user(uid), Vec::<u32>::new());
    }

    #[test]
    fn kill_user_ends_every_process_of_the_uid_and_no_other() {
        if !root_or_skipped() {
            return;
        }
        // Outside every range the provider hands out, so no real server can be hit.
        let (uid, other) = (0x7fff_0101, 0x7fff_0102);
        let mut victim = start_as(other, "sleep 60");
        let mut parent = start_as(
            uid,
            "setsid sleep 60 & sleep 60 & while :; do sleep 60; done",
        );
        wait_for_processes_of(uid, 3);
        assert!(
            processes_of_user(uid).len() >= 3,
            "{:?}",
            processes_of_user(uid)
        );
        kill_user(uid).unwrap();
        let _ = parent.wait();
        assert_no_process_of(uid);
        assert!(
            processes_of_user(other).contains(&victim.id()),
            "another uid was hit"
        );
        let _ = signal_group(victim.id(), Signal::SIGKILL);
        victim.wait().unwrap();
    }

    /// The child of `kill_user` shares the control plane's memory: its change of uid must not
    /// reach any thread of the caller (glibc's `setuid` would change them all), and the
    /// caller's signal mask is back as it was.
    #[test]
    fn kill_user_leaves_every_thread_of_the_caller_root() {
        if !root_or_skipped() {
            return;
        }
        let ids = |status: &str, name: &str| -> String {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || stop_rx.recv());
        let mut before = nix::sys::signal::SigSet::empty();
        nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            None,
            Some(&mut before),
        )
        .unwrap();
        // Kills of other tests may run at once: the flag is read while none does.
        let settled = || loop {
            let held = DUMPABLE.lock().unwrap_or_else(|e| e.into_inner());
            if held.0 == 0 {
                return nix::sys::prctl::get_dumpable().unwrap();
            }
            drop(held);
            std::thread::sleep(Duration::from_millis(1));
        };
        let dumpable = settled();
        kill_user(0x7fff_0103).unwrap();
        assert_eq!(
            settled(),
            dumpable,
            "the child's change of uid left the caller's dumpable flag changed"
        );
        let tasks: Vec<_> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(tasks.len() >= 2, "the other thread is not running");
        for task in tasks {
            let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
            assert_eq!(ids(&status, "Uid:"), "0 0 0 0", "{}", task.display());
            assert_eq!(ids(&status, "Gid:"), "0 0 0 0", "{}", task.display());
        }
        let mut after = nix::sys::signal::SigSet::empty();
        nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            None,
            Some(&mut after),
        )
        .unwrap();
        assert_eq!(before, after, "the signal mask was not restored");
        stop_tx.send(()).unwrap();
        other.join().unwrap().unwrap();
    }

    /// Runs `f` in a forked child that became `uid`; its result.
    fn as_uid(uid: u32, f: impl FnOnce() -> bool) -> bool {
        use nix::sys::wait::{WaitStatus, waitpid};
        use nix::unistd::{ForkResult, Gid, Uid, fork, setgid, setuid};
        // SAFETY: the child makes system calls only and then _exits.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let ok = setgid(Gid::from_raw(uid)).is_ok() && setuid(Uid::from_raw(uid)).is_ok();
                // SAFETY: _exit skips the parent's atexit handlers.
                unsafe { nix::libc::_exit(if ok && f() { 0 } else { 1 }) }
            }
            ForkResult::Parent { child } => {
                waitpid(child, None).unwrap() == WaitStatus::Exited(child, 0)
            }
        }
    }

    /// The key descriptions [`add_keys`] uses, one per keyring it fills.
    const KEYS: [(&std::ffi::CStr, i32); 3] = [
        (c"stratus-test-user", nix::libc::KEY_SPEC_USER_KEYRING),
        (
            c"stratus-test-user-session",
            nix::libc::KEY_SPEC_USER_SESSION_KEYRING,
        ),
        (c"stratus-test-persistent", 0),
    ];

    /// The keyring `ring` of [`KEYS`] names (0: the persistent keyring).
    fn keyring(ring: i32) -> nix::libc::c_long {
        if ring != 0 {
            return ring.into();
        }
        keyctl(
            nix::libc::KEYCTL_GET_PERSISTENT,
            -1,
            nix::libc::KEY_SPEC_USER_SESSION_KEYRING.into(),
        )
        .unwrap_or(-1)
    }

    /// Adds a key to each keyring of [`KEYS`].
    fn add_keys() -> bool {
        KEYS.iter().all(|(name, ring)| {
            // SAFETY: NUL-terminated type and description, a payload of the length given.
            unsafe {
                nix::libc::syscall(
                    nix::libc::SYS_add_key,
                    c"user".as_ptr(),
                    name.as_ptr(),
                    c"secret".as_ptr(),
                    6usize,
                    keyring(*ring),
                ) > 0
            }
        })
    }

    /// Whether no key of [`KEYS`] can be found in its keyring.
    fn no_key_found() -> bool {
        KEYS.iter().all(|(name, ring)| {
            // SAFETY: NUL-terminated type and description, no destination keyring.
            unsafe {
                nix::libc::syscall(
                    nix::libc::SYS_keyctl,
                    nix::libc::KEYCTL_SEARCH as nix::libc::c_long,
                    keyring(*ring),
                    c"user".as_ptr(),
                    name.as_ptr(),
                    0 as nix::libc::c_long,
                ) < 0
            }
        })
    }

    /// Keys a uid put in its user, user-session and persistent keyrings, which the kernel
    /// keeps after its last process, are gone after `kill_user`.
    #[test]
    fn kill_user_empties_the_uids_keyrings() {
        if !root_or_skipped() {
            return;
        }
        let uid = 0x7fff_0105;
        assert!(as_uid(uid, add_keys), "keys could not be added");
        assert!(!as_uid(uid, no_key_found), "the keys were not kept");
        kill_user(uid).unwrap();
        assert!(as_uid(uid, no_key_found), "a key of the uid survived");
    }

    /// Whether `f` holds within 10 s: the keyrings of a uid whose keyrings were just
    /// invalidated cannot be looked up (ENOKEY) until the kernel has collected them.
    fn after_collection(f: impl Fn() -> bool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// The uid's line of `/proc/key-users`: present while the kernel holds a key of the uid.
    fn key_user(uid: u32) -> Option<String> {
        let text = std::fs::read_to_string("/proc/key-users").ok()?;
        text.lines()
            .find(|l| l.split(':').next().map(str::trim) == Some(uid.to_string().as_str()))
            .map(str::to_string)
    }

    /// Ending a uid's keyrings leaves the kernel no key of it: looking them up makes them, and
    /// keyrings only emptied stayed in the kernel for good, three per server ever launched.
    #[test]
    fn kill_user_leaves_no_key_of_the_uid_in_the_kernel() {
        if !nix::unistd::geteuid().is_root() || key_user(0).is_none() {
            eprintln!("skipped: needs root to switch users, and /proc/key-users");
            return;
        }
        let uid = 0x7fff_0108;
        assert!(as_uid(uid, add_keys), "keys could not be added");
        assert!(key_user(uid).is_some(), "the keys were not counted");
        kill_user(uid).unwrap();
        // The kernel destroys invalidated keys from a work queue, soon after.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while key_user(uid).is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(key_user(uid), None, "keys of the uid stayed in the kernel");
    }

    /// Takes write and set-attribute permission on its user keyring away from the uid
    /// (`perm` = what possessor and user keep), after putting a key in it.
    fn lock_user_keyring(perm: u32) -> bool {
        add_keys()
            && keyctl(
                nix::libc::KEYCTL_SETPERM,
                nix::libc::KEY_SPEC_USER_KEYRING.into(),
                nix::libc::c_long::from(perm << 24 | perm << 16),
            )
            .is_ok()
    }

    /// A holder that took write permission away from its user keyring does not keep its keys
    /// (invalidating needs only search), and one that took everything away does not make
    /// `kill_user` fail, which would deny the uid to every later server.
    #[test]
    fn a_locked_keyring_neither_keeps_its_keys_nor_blocks_the_uid() {
        if !root_or_skipped() {
            return;
        }
        // View, read and search, no write, link or set-attribute.
        let (readable, closed) = (0x7fff_0106, 0x7fff_0107);
        // An earlier run's locked keyring would refuse the keys.
        kill_user(readable).unwrap();
        assert!(after_collection(|| as_uid(readable, || lock_user_keyring(
            0x0b
        ))));
        assert!(!as_uid(readable, no_key_found), "the keys were not kept");
        kill_user(readable).unwrap();
        assert!(as_uid(readable, no_key_found), "a key of the uid survived");

        // No one can undo this one, so on a rerun it is locked already.
        as_uid(closed, || lock_user_keyring(0));
        assert!(
            as_uid(closed, no_key_found),
            "a closed keyring is not even searchable"
        );
        kill_user(closed).unwrap();
    }

    /// Takes write, link and set-attribute permission on its user-session keyring away from
    /// the uid, after putting keys in its keyrings.
    fn lock_user_session_keyring() -> bool {
        add_keys()
            && keyctl(
                nix::libc::KEYCTL_SETPERM,
                nix::libc::KEY_SPEC_USER_SESSION_KEYRING.into(),
                nix::libc::c_long::from(0x0bu32 << 24 | 0x0b << 16),
            )
            .is_ok()
    }

    /// The calling uid's persistent keyring, linked into its thread keyring (so a locked
    /// user-session keyring does not hide it); its id, or -1.
    fn own_persistent_keyring() -> nix::libc::c_long {
        use nix::libc::{KEY_SPEC_THREAD_KEYRING, KEYCTL_GET_PERSISTENT, c_long};
        keyctl(
            KEYCTL_GET_PERSISTENT,
            -1,
            c_long::from(KEY_SPEC_THREAD_KEYRING),
        )
        .unwrap_or(-1)
    }

    /// Whether the uid's persistent keyring can be looked up and holds no key of [`KEYS`].
    fn persistent_keyring_found_empty() -> bool {
        use nix::libc::{KEYCTL_SEARCH, SYS_keyctl, c_long, syscall};
        let ring = own_persistent_keyring();
        // SAFETY: NUL-terminated type and description, no destination keyring.
        ring > 0
            && unsafe {
                syscall(
                    SYS_keyctl,
                    KEYCTL_SEARCH as c_long,
                    ring,
                    c"user".as_ptr(),
                    c"stratus-test-persistent".as_ptr(),
                    0 as c_long,
                )
            } < 0
    }

    /// The persistent keyring is usually found through the user-session keyring, which needs
    /// write permission on it: a holder that took that away does not keep its persistent keys.
    #[test]
    fn a_locked_user_session_keyring_does_not_keep_the_persistent_keyring() {
        if !root_or_skipped() {
            return;
        }
        persistent_keyring_ends_despite(0x7fff_0109, lock_user_session_keyring);
    }

    /// `kill_user` ends the persistent keyring of `uid` after `holder` (run as the uid) put a
    /// key in it and did what it could to keep it.
    fn persistent_keyring_ends_despite(uid: u32, holder: fn() -> bool) {
        // An earlier run's keys would be in the way.
        kill_user(uid).unwrap();
        assert!(after_collection(|| as_uid(uid, holder)));
        assert!(
            !as_uid(uid, persistent_keyring_found_empty),
            "the persistent key was not kept"
        );
        kill_user(uid).unwrap();
        assert!(
            after_collection(|| as_uid(uid, persistent_keyring_found_empty)),
            "the persistent keyring of the uid survived"
        );
    }

    /// Fills the uid's key quota (in bytes; the key count limit is far off) after linking its
    /// persistent keyring, with a key in it, into its thread keyring only: the persistent
    /// keyring then cannot be linked into any other keyring of the uid.
    fn fill_key_quota_keeping_the_persistent_keyring() -> bool {
        use nix::libc::{KEY_SPEC_USER_KEYRING, SYS_add_key, c_long, syscall};
        let ring = own_persistent_keyring();
        let add = |ring: c_long, name: &std::ffi::CStr, size: usize| {
            let payload = vec![b'x'; size];
            // SAFETY: NUL-terminated type and description, a payload of the length given.
            unsafe {
                syscall(
                    SYS_add_key,
                    c"user".as_ptr(),
                    name.as_ptr(),
                    payload.as_ptr(),
                    size,
                    ring,
                ) > 0
            }
        };
        if ring <= 0 || !add(ring, c"stratus-test-persistent", 6) {
            return false;
        }
        let mut n = 0;
        for size in [1000, 100, 10, 1] {
            loop {
                let name = std::ffi::CString::new(format!("stratus-test-fill-{n}")).unwrap();
                n += 1;
                if !add(c_long::from(KEY_SPEC_USER_KEYRING), &name, size) {
                    break;
                }
            }
        }
        n > 4
    }

    /// A holder that filled its key quota cannot keep its persistent keyring, which then could
    /// be linked into no keyring of the uid: root ends it.
    #[test]
    fn a_full_key_quota_does_not_keep_the_persistent_keyring() {
        if !root_or_skipped() {
            return;
        }
        persistent_keyring_ends_despite(0x7fff_010b, fill_key_quota_keeping_the_persistent_keyring);
    }

    /// The killers' range is clear of every uid Stratus gives a process: local program uids,
    /// `plugin call`'s, the SSH slots', and systemd's foreign range.
    #[test]
    fn no_killer_uid_is_a_uid_stratus_gives_a_process() {
        use crate::leases::{ADDRESS_COUNT, PROGRAM_UID_BASE};
        let (low, high) = (
            killer_uid(PROGRAM_UID_BASE),
            killer_uid(PROGRAM_UID_BASE + ADDRESS_COUNT),
        );
        assert!(
            low > PROGRAM_UID_BASE + ADDRESS_COUNT,
            "program and call uids"
        );
        let ssh = crate::ssh::SSH_PROGRAM_UID_BASE..crate::ssh::SSH_PROGRAM_UID_BASE + (1 << 24);
        assert!(low >= ssh.end || high < ssh.start, "SSH slots' uids");
        assert!(high < 0x7ffe_0000, "systemd's foreign range");
        let own = stratus_containment::STRATUS_UIDS;
        for (uid, what) in [
            (PROGRAM_UID_BASE, "first program uid"),
            (PROGRAM_UID_BASE + ADDRESS_COUNT - 1, "last program uid"),
            (ssh.start, "first SSH slot uid"),
            (ssh.end - 1, "last SSH slot uid"),
            (low, "first killer uid"),
            (high, "last killer uid"),
        ] {
            assert!(own.contains(&uid), "{what} {uid:#x} outside {own:x?}");
        }
    }

    /// Processes of the uid that keep stopping every process they may signal cannot stop the
    /// child that kills them: a stopped child would hold up the caller for good.
    #[test]
    fn processes_of_the_uid_cannot_stop_the_child_that_kills_them() {
        if !root_or_skipped() {
            return;
        }
        let uid = 0x7fff_010a;
        for round in 0..10 {
            let mut stopper = start_as(uid, "while :; do kill -STOP -1; done");
            wait_for_processes_of(uid, 1);
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || tx.send(kill_user(uid).is_ok()));
            let done = rx.recv_timeout(Duration::from_secs(10));
            assert_eq!(done, Ok(true), "kill_user was held up in round {round}");
            stopper.wait().unwrap();
        }
    }

    /// The uid (high half) whose next kill children stop themselves, and how many more (low
    /// half): as a signal a process of the uid armed before its death would stop them.
    static STOP_CHILDREN_OF: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    /// In [`kill_user`]'s child, once it has the uid as real id: stops it if a test asked so
    /// for `uid`. An atomic and raw system calls only.
    pub(super) fn stop_if_asked(uid: u32) {
        use std::sync::atomic::Ordering::SeqCst;
        let asked = STOP_CHILDREN_OF.fetch_update(SeqCst, SeqCst, |held| {
            (held >> 32 == u64::from(uid) && held as u32 > 0).then(|| held - 1)
        });
        if asked.is_ok() {
            // SAFETY: integer arguments only.
            unsafe {
                let me = syscalls::syscall!(Sysno::getpid).unwrap_or(0);
                let _ = syscalls::syscall!(Sysno::kill, me, nix::libc::SIGSTOP);
            }
        }
    }

    /// The uid whose next kill child makes itself idle and nice 19, as a process of the uid may
    /// before it dies; and the uid whose child then saw its scheduling given back, with the
    /// nice value it saw (the kernel's 20 - nice).
    static IDLE_CHILD_OF: AtomicU32 = AtomicU32::new(0);
    static GIVEN_BACK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    /// In [`kill_user`]'s child: makes it idle if a test asked so for `uid`, then waits (at
    /// most 10 s) until it runs as an ordinary task again. An atomic and raw system calls only.
    pub(super) fn idle_if_asked(uid: u32) {
        use nix::libc::{CLOCK_MONOTONIC, PRIO_PROCESS, SCHED_IDLE, SCHED_OTHER, timespec};
        if IDLE_CHILD_OF
            .compare_exchange(uid, 0, SeqCst, SeqCst)
            .is_err()
        {
            return;
        }
        let now = || {
            let mut t = timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: a pointer to a local timespec.
            let _ = unsafe {
                syscalls::syscall!(
                    Sysno::clock_gettime,
                    CLOCK_MONOTONIC,
                    &mut t as *mut timespec
                )
            };
            t.tv_sec
        };
        let param = 0i32;
        // SAFETY: integer arguments, and a pointer to a local sched_param (one int).
        unsafe {
            let _ = syscalls::syscall!(
                Sysno::sched_setscheduler,
                0,
                SCHED_IDLE,
                &param as *const i32
            );
            let _ = syscalls::syscall!(Sysno::setpriority, PRIO_PROCESS, 0, 19);
        }
        let until = now() + 10;
        while now() < until {
            // SAFETY: integer arguments only.
            let (policy, prio) = unsafe {
                (
                    syscalls::syscall!(Sysno::sched_getscheduler, 0),
                    syscalls::syscall!(Sysno::getpriority, PRIO_PROCESS, 0),
                )
            };
            if policy == Ok(SCHED_OTHER as usize) && prio != Ok(1) {
                GIVEN_BACK.store(u64::from(uid) << 32 | prio.unwrap_or(0) as u64, SeqCst);
                return;
            }
        }
    }

    /// A kill child that a process of the uid made idle, nice 19, is given the caller's
    /// scheduling back by root while it runs: it cannot be slowed for long.
    #[test]
    fn a_child_made_idle_gets_the_callers_scheduling_back() {
        if !root_or_skipped() {
            return;
        }
        let uid = 0x7fff_010d;
        IDLE_CHILD_OF.store(uid, SeqCst);
        kill_user(uid).unwrap();
        // SAFETY: integer arguments only.
        let own = unsafe { syscalls::syscall!(Sysno::getpriority, nix::libc::PRIO_PROCESS, 0) };
        assert_eq!(
            IDLE_CHILD_OF.load(SeqCst),
            0,
            "the child did not make itself idle"
        );
        assert_eq!(
            GIVEN_BACK.load(SeqCst),
            u64::from(uid) << 32 | own.unwrap() as u64
        );
    }

    /// Where the host makes shared memory dumpable on a change of uid, the child gets a copy of
    /// the control plane's memory instead, and kills all the same.
    #[test]
    fn a_child_with_memory_of_its_own_kills_all_the_same() {
        if !root_or_skipped() {
            return;
        }
        let uid = 0x7fff_010e;
        assert!(as_uid(uid, add_keys), "keys could not be added");
        let mut sleeper = start_as(uid, "sleep 60 & sleep 60");
        wait_for_processes_of(uid, 2);
        kill_user_with(uid, Memory::Copied).unwrap();
        assert!(sleeper.wait().is_ok());
        assert_no_process_of(uid);
        assert!(as_uid(uid, no_key_found), "a key of the uid survived");
    }

    /// A kill child stopped after the kill (which no process of the uid can do while it runs,
    /// only a signal sent before) does not hold the caller: it is killed, and a new child ends
    /// the uid's processes and keyrings. One stopped every time makes `kill_user` fail.
    #[test]
    fn a_stopped_child_is_killed_and_made_anew() {
        if !root_or_skipped() {
            return;
        }
        let uid = 0x7fff_010c;
        assert!(as_uid(uid, add_keys), "keys could not be added");
        let mut sleeper = start_as(uid, "sleep 60");
        wait_for_processes_of(uid, 1);
        let ask = |times: u64| STOP_CHILDREN_OF.store(u64::from(uid) << 32 | times, SeqCst);
        use std::sync::atomic::Ordering::SeqCst;
        ask(1);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(kill_user(uid).map_err(|e| e.to_string())));
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(Ok(())));
        assert_eq!(STOP_CHILDREN_OF.load(SeqCst) as u32, 0, "no child stopped");
        assert!(sleeper.wait().is_ok());
        assert_eq!(processes_of_user(uid), Vec::<u32>::new());
        assert!(as_uid(uid, no_key_found), "a key of the uid survived");

        ask(KILL_ATTEMPTS as u64);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(kill_user(uid).map_err(|e| e.to_string())));
        let failed = rx.recv_timeout(Duration::from_secs(10)).expect("held up");
        assert!(failed.unwrap_err().contains("stopped"));
        assert_eq!(STOP_CHILDREN_OF.load(SeqCst) as u32, 0);
        kill_user(uid).unwrap();
    }

    /// Kills of the same uid at once (a launch and a terminate of its lease overlapping) do
    /// not kill each other's child, which shares its killer uid.
    #[test]
    fn kills_of_one_uid_at_once_all_succeed() {
        if !root_or_skipped() {
            return;
        }
        for _ in 0..20 {
            let kills: Vec<_> = (0..3)
                .map(|_| std::thread::spawn(|| kill_user(0x7fff_010f)))
                .collect();
            for kill in kills {
                kill.join().unwrap().unwrap();
            }
        }
    }

    /// Kills of different uids at once (a launch ends up to 16 at a time) do not kill each
    /// other's child.
    #[test]
    fn kills_of_different_uids_at_once_all_succeed() {
        if !root_or_skipped() {
            return;
        }
        for _ in 0..5 {
            let kills: Vec<_> = (0..16)
                .map(|i| std::thread::spawn(move || kill_user(0x7fff_0200 + i)))
                .collect();
            for kill in kills {
                kill.join().unwrap().unwrap();
            }
        }
    }

    /// A program that sets the marker of a server root in its own environment does not make
    /// that server's disk busy nor draw its signals; the same marker on a process of ours does.
    /// Once the agent joined its cgroup, a group whose leader died is still alive while a
    /// member lives (found among the cgroup's processes), and gone once that member is.
    #[test]
    fn a_group_is_found_alive_through_its_cgroup_after_its_leader_died() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("servers/web/web-1/root");
        std::fs::create_dir_all(&root).unwrap();
        let Some((_, cg)) = crate::cgroup::agent_cgroup(&root) else {
            eprintln!("skipped: no cgroups");
            return;
        };
        let leaf = cg.child("agent");
        cg.create().unwrap();
        leaf.create().unwrap();
        let joiner = leaf.joiner().unwrap();
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", "sleep 60 >/dev/null & echo $!"])
            .env(ROOT_MARKER, &root)
            .current_dir(&root)
            .stdout(std::process::Stdio::piped())
            .process_group(0);
        // SAFETY: join_self only calls write(2).
        unsafe { cmd.pre_exec(move || joiner.join_self()) };
        let leader = cmd.spawn().unwrap();
        let pgid = leader.id();
        let out = leader.wait_with_output().unwrap();
        let member: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!(cg.procs().contains(&member), "{:?}", cg.procs());
        assert!(
            group_alive(pgid, &root),
            "the member {member} was not found"
        );
        nix::sys::signal::kill(Pid::from_raw(member as i32), Signal::SIGKILL).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while group_alive(pgid, &root) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !group_alive(pgid, &root),
            "the group outlived its last member"
        );
        cg.destroy().unwrap();
    }

    /// A leader found ours is known again from its start time alone, and once it died (a
    /// zombie not reaped yet, or reaped) it is not alive for having been known.
    #[test]
    fn a_known_leader_is_alive_only_while_it_lives() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("servers/web/web-2/root");
        std::fs::create_dir_all(&root).unwrap();
        let mut leader = std::process::Command::new("/bin/sleep")
            .arg("60")
            .env(ROOT_MARKER, &root)
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = leader.id();
        assert!(live_start_time(pgid).is_some(), "{pgid} runs");
        // `spawn` may return while the kernel still sets up the new program's environment.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !group_alive(pgid, &root) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(group_alive(pgid, &root), "found by its marker");
        assert!(group_alive(pgid, &root), "known");
        let elsewhere = tmp.path().join("servers/web/web-3/root");
        assert!(
            !group_alive(pgid, &elsewhere),
            "known for its own root only"
        );
        nix::sys::signal::kill(Pid::from_raw(pgid as i32), Signal::SIGKILL).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while live_start_time(pgid).is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!group_alive(pgid, &root), "a zombie is not alive");
        leader.wait().unwrap();
        assert!(!group_alive(pgid, &root), "reaped");
    }

    #[test]
    fn only_the_providers_own_processes_carry_a_servers_marker() {
        if !root_or_skipped() {
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
        // A loaded machine (the other tests of this binary fork and scan too) may take a
        // while to show the exec'd environment: look again until ours appears, or 10 s.
        let mut busy = processes_of(root.path());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !busy.contains(&ours.id()) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            busy = processes_of(root.path());
        }
        assert!(!busy.contains(&theirs.id()), "{busy:?}");
        assert!(busy.contains(&ours.id()), "{busy:?}");
        assert_eq!(marked_groups(root.path()), vec![ours.id()]);
        for child in [&mut theirs, &mut ours] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    #[test]
    fn servers_ending_together_each_get_exactly_their_own_processes() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // One process works in root a; one carries root b's marker while working elsewhere.
        let mut in_a = std::process::Command::new("/bin/sleep")
            .arg("60")
            .current_dir(a.path())
            .spawn()
            .unwrap();
        let mut marked_b = std::process::Command::new("/bin/sleep")
            .arg("60")
            .env(ROOT_MARKER, b.path())
            .spawn()
            .unwrap();
        let execd = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !(execd(in_a.id()) && execd(marked_b.id())) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Many callers at once share scans; each still gets only its own root's processes.
        let answers: Vec<(bool, Vec<u32>)> = std::thread::scope(|s| {
            let asks: Vec<_> = (0..16)
                .map(|i| {
                    let root = if i % 2 == 0 { a.path() } else { b.path() };
                    s.spawn(move || (i % 2 == 0, processes_of(root)))
                })
                .collect();
            asks.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (is_a, pids) in answers {
            let (own, other) = match is_a {
                true => (in_a.id(), marked_b.id()),
                false => (marked_b.id(), in_a.id()),
            };
            assert!(pids.contains(&own) && !pids.contains(&other), "{pids:?}");
        }
        for child in [&mut in_a, &mut marked_b] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        assert!(processes_of(a.path()).is_empty() && processes_of(b.path()).is_empty());
    }
}
