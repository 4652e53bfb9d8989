//! What a server's programs leave outside its root under its program uid: entries in the
//! machine's world-writable directories, POSIX message queues and System V IPC objects (its
//! kernel keyrings are emptied by `process::kill_user`). The server's disk goes at terminate;
//! these are swept when the server ends and again before its uid is reused, so the next holder
//! of the uid inherits none of them.
//!
//! The directories swept are [`SHARED_TEMP_DIRS`] and every other root-owned, world-writable,
//! sticky directory found (once per process) within [`SCAN_DEPTH`] levels of `/`, descending only
//! through root-owned directories no one else may rename in, on writable local filesystems.
//! Only the top level of each is swept: a file, socket, fifo or link of the uid is unlinked
//! (the directories are sticky, so no one else can have swapped the name), a directory of the
//! uid is given to root with mode 0700 (its contents stay, unreachable to the uid; removing a
//! tree in a directory every user writes is not safe against renames).

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The directories every user may write, where programs leave files; always swept.
pub const SHARED_TEMP_DIRS: [&str; 3] = ["/tmp", "/var/tmp", "/dev/shm"];

/// How many levels below `/` the search for other world-writable sticky directories goes
/// (`/var/lib/php/sessions` is at 4).
pub const SCAN_DEPTH: usize = 4;

/// Most directories the search opens, so a huge tree costs the first sweep a bounded time
/// (what lies beyond is not found, as a warning says).
pub const MAX_SCANNED_DIRS: usize = 20_000;

/// Filesystems the search enters: local ones with unix owners. Others (network and FUSE
/// filesystems, which could stall a read, `/proc`, `/sys`, ...) are skipped, as are read-only
/// mounts, where no program writes.
const SCANNED_FS_TYPES: [&str; 12] = [
    "tmpfs", "ramfs", "devtmpfs", "ext2", "ext3", "ext4", "xfs", "btrfs", "overlay", "zfs", "f2fs",
    "bcachefs",
];

/// Most entries looked at per directory, so a directory of millions costs a launch a bounded
/// time (what lies beyond stays, as a warning says).
pub const MAX_SWEPT_ENTRIES: usize = 100_000;

/// What [`sweep`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Non-directories unlinked.
    pub unlinked: usize,
    /// Directories given to root, 0700.
    pub closed: usize,
    /// System V shared-memory segments, message queues and semaphore sets removed.
    pub ipc: usize,
    /// POSIX message queues removed.
    pub mqueues: usize,
}

/// Sweeps what `uid` left in [`shared_dirs`], POSIX message queues and System V IPC. Root only;
/// `uid` must be a per-server program uid, never a shared one, and none of its processes may
/// run any more.
pub fn sweep(uid: u32) -> Swept {
    assert!(uid != 0, "never root's files");
    let mut done = Swept::default();
    for dir in shared_dirs() {
        if let Err(e) = open_dir(dir).and_then(|d| sweep_dir(d, dir, uid, &mut done)) {
            tracing::warn!(dir = %dir.display(), uid, error = %e, "cannot sweep what a program uid left");
        }
    }
    match mqueue_dir() {
        Ok(d) => {
            let mut queues = Swept::default();
            if let Err(e) = sweep_dir(d, Path::new("mqueue"), uid, &mut queues) {
                tracing::warn!(uid, error = %e, "cannot sweep a program uid's message queues");
            }
            done.mqueues = queues.unlinked;
        }
        Err(e) => tracing::warn!(error = %e, "no POSIX message queue filesystem to sweep"),
    }
    done.ipc = remove_ipc(uid);
    done
}

/// [`SHARED_TEMP_DIRS`] and the world-writable sticky directories [`find_shared_dirs`] finds,
/// searched once per process: only root makes such a directory.
pub fn shared_dirs() -> &'static [PathBuf] {
    static DIRS: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
    DIRS.get_or_init(|| {
        let skipped =
            skipped_mounts(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
        let mut dirs: Vec<PathBuf> = SHARED_TEMP_DIRS.iter().map(PathBuf::from).collect();
        for dir in find_shared_dirs(Path::new("/"), &skipped) {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        tracing::debug!(
            ?dirs,
            "world-writable directories swept of a program uid's leftovers"
        );
        dirs
    })
}

/// Opens directory `path`, its last component not through a link.
fn open_dir(path: &Path) -> nix::Result<nix::dir::Dir> {
    nix::dir::Dir::open(
        path,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Whether `st` is a directory.
fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Whether no one but root may swap a name in the directory `st`: root's, and sticky or
/// writable by root alone.
fn renames_only_by_owners(st: &FileStat) -> bool {
    st.st_uid == 0 && (st.st_mode & 0o022 == 0 || st.st_mode & 0o1000 != 0)
}

/// Whether every user may leave entries in the directory `st`: root's, world-writable, sticky.
fn shared(st: &FileStat) -> bool {
    st.st_uid == 0 && st.st_mode & 0o002 != 0 && st.st_mode & 0o1000 != 0
}

/// The world-writable sticky directories within [`SCAN_DEPTH`] levels of `top` (itself
/// included), never through a link, nor into a mount point in `skipped`, nor below a directory
/// someone other than root could rename in; at most [`MAX_SCANNED_DIRS`] directories opened.
pub fn find_shared_dirs(top: &Path, skipped: &std::collections::HashSet<PathBuf>) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut budget = MAX_SCANNED_DIRS;
    if let Ok(d) = open_dir(top) {
        walk(d, top.to_path_buf(), 0, skipped, &mut budget, &mut found);
    }
    if budget == 0 {
        tracing::warn!(
            "too many directories to search for world-writable ones; the rest stay unswept"
        );
    }
    found
}

/// Depth-first step of [`find_shared_dirs`]: at most [`SCAN_DEPTH`] descriptors open at once.
fn walk(
    mut d: nix::dir::Dir,
    path: PathBuf,
    depth: usize,
    skipped: &std::collections::HashSet<PathBuf>,
    budget: &mut usize,
    found: &mut Vec<PathBuf>,
) {
    let Ok(st) = fstat(d.as_fd()) else { return };
    if shared(&st) {
        found.push(path.clone());
    }
    if depth == SCAN_DEPTH || !renames_only_by_owners(&st) {
        return;
    }
    let names: Vec<std::ffi::CString> = d
        .iter()
        .flatten()
        .filter(|e| matches!(e.file_type(), Some(nix::dir::Type::Directory) | None))
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .take(MAX_SWEPT_ENTRIES)
        .collect();
    for name in names {
        if *budget == 0 {
            return;
        }
        let child = path.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
        if skipped.contains(&child) {
            continue;
        }
        *budget -= 1;
        let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        if let Ok(sub) = nix::dir::Dir::openat(d.as_fd(), name.as_c_str(), flags, Mode::empty()) {
            walk(sub, child, depth + 1, skipped, budget, found);
        }
    }
}

/// The mount points in a `/proc/self/mountinfo` text the search must not enter: read-only
/// mounts and filesystems not in [`SCANNED_FS_TYPES`].
fn skipped_mounts(mountinfo: &str) -> std::collections::HashSet<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (mine, theirs) = line.split_once(" - ")?;
            let fields: Vec<&str> = mine.split(' ').collect();
            let (point, options) = (fields.get(4)?, fields.get(5)?);
            let theirs: Vec<&str> = theirs.split(' ').collect();
            let fs_type = theirs.first()?;
            // Read-only as a mount or as a filesystem (the super options, third after " - ").
            let read_only = [Some(*options), theirs.get(2).copied()]
                .into_iter()
                .flatten()
                .any(|opts| opts.split(',').any(|o| o == "ro"));
            (read_only || !SCANNED_FS_TYPES.contains(fs_type)).then(|| unescape_mount_point(point))
        })
        .collect()
}

/// A mountinfo path with its `\ooo` octal escapes (space, tab, newline, backslash) undone.
fn unescape_mount_point(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|o| b[i] == b'\\' && o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(o) => {
                out.push((o[0] - b'0') * 64 + (o[1] - b'0') * 8 + (o[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// The root of this IPC namespace's POSIX message queue filesystem, as a detached mount
/// (`fsopen`/`fsmount`: it appears in no mount table), or `/dev/mqueue` where that API is
/// missing and the filesystem is mounted there.
fn mqueue_dir() -> nix::Result<nix::dir::Dir> {
    match detached_mqueue() {
        Ok(d) => Ok(d),
        Err(e) => {
            let d = open_dir(Path::new("/dev/mqueue"))?;
            const MQUEUE_MAGIC: nix::libc::c_long = 0x1980_0202;
            let fs = nix::sys::statfs::fstatfs(d.as_fd())?;
            if fs.filesystem_type().0 as nix::libc::c_long == MQUEUE_MAGIC {
                Ok(d)
            } else {
                Err(e)
            }
        }
    }
}

/// A detached mount of the message queue filesystem of the caller's IPC namespace (the same
/// queues `mq_open` sees), opened as a directory.
fn detached_mqueue() -> nix::Result<nix::dir::Dir> {
    use nix::libc::{SYS_fsconfig, SYS_fsmount, SYS_fsopen, c_int, c_long, c_uint, syscall};
    const FSOPEN_CLOEXEC: c_uint = 1;
    const FSCONFIG_CMD_CREATE: c_uint = 6;
    const FSMOUNT_CLOEXEC: c_uint = 1;
    let owned = |r: c_long| {
        // SAFETY: a descriptor the kernel just returned, owned by nothing else.
        nix::errno::Errno::result(r).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as i32) })
    };
    // SAFETY: a NUL-terminated name and flags.
    let fs = owned(unsafe { syscall(SYS_fsopen, c"mqueue".as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: CREATE takes no key or value.
    nix::errno::Errno::result(unsafe {
        syscall(
            SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            0usize,
            0usize,
            0 as c_int,
        )
    })?;
    // SAFETY: a filesystem context descriptor and flags.
    let mount =
        owned(unsafe { syscall(SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0 as c_uint) })?;
    nix::dir::Dir::openat(
        mount.as_fd(),
        c".",
        OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Sweeps the top level of the directory `d` (named `dir` in messages) of `uid`'s entries.
fn sweep_dir(mut d: nix::dir::Dir, dir: &Path, uid: u32, done: &mut Swept) -> nix::Result<()> {
    let fd = d
        .as_fd()
        .try_clone_to_owned()
        .map_err(|_| nix::errno::Errno::EMFILE)?;
    // Only where no one but the uid itself (dead by now) could swap one of its names: a
    // root-owned directory that is sticky or that others may not write.
    if !renames_only_by_owners(&fstat(&fd)?) {
        tracing::warn!(dir = %dir.display(), "not sweeping a directory others may rename in");
        return Ok(());
    }
    let names: Vec<std::ffi::CString> = d
        .iter()
        .flatten()
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .take(MAX_SWEPT_ENTRIES)
        .collect();
    if names.len() == MAX_SWEPT_ENTRIES {
        tracing::warn!(dir = %dir.display(), "more entries than are swept; the rest stay");
    }
    for name in names {
        let Ok(st) = fstatat(&fd, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        if st.st_uid != uid {
            continue;
        }
        // One entry that resists does not shield the ones after it.
        let result = if is_dir(&st) {
            close_dir(&fd, &name, uid).map(|()| done.closed += 1)
        } else {
            unlinkat(&fd, name.as_c_str(), UnlinkatFlags::NoRemoveDir).map(|()| done.unlinked += 1)
        };
        if let Err(e) = result {
            tracing::warn!(dir = %dir.display(), uid, error = %e, "cannot sweep an entry a program uid left");
        }
    }
    Ok(())
}

/// Gives directory `name` of `parent`, if still `uid`'s, to root with mode 0700, through its
/// own descriptor (never a link).
fn close_dir(parent: &OwnedFd, name: &std::ffi::CStr, uid: u32) -> nix::Result<()> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    let raw = nix::fcntl::openat(parent, name, flags, Mode::empty())?;
    if fstat(&raw)?.st_uid != uid {
        return Ok(());
    }
    nix::unistd::fchown(&raw, Some(0.into()), Some(0.into()))?;
    nix::sys::stat::fchmod(&raw, Mode::S_IRWXU)
}

/// Removes every System V IPC object whose owner or creator is `uid`; how many.
fn remove_ipc(uid: u32) -> usize {
    let mut removed = 0;
    for (kind, remove) in [
        ("shm", remove_shm as fn(i32) -> bool),
        ("msg", remove_msg),
        ("sem", remove_sem),
    ] {
        let table = std::fs::read_to_string(format!("/proc/sysvipc/{kind}")).unwrap_or_default();
        for id in ipc_ids_of(&table, uid) {
            removed += usize::from(remove(id));
        }
    }
    removed
}

/// The ids (second column) of the rows of a `/proc/sysvipc/*` table whose `uid` or `cuid`
/// column is `uid`.
fn ipc_ids_of(table: &str, uid: u32) -> Vec<i32> {
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(u), Some(c)) = (col("uid"), col("cuid")) else {
        return Vec::new();
    };
    let uid = uid.to_string();
    lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.get(u) == Some(&uid.as_str()) || f.get(c) == Some(&uid.as_str()))
        .filter_map(|f| f.get(1)?.parse().ok())
        .collect()
}

fn remove_shm(id: i32) -> bool {
    // SAFETY: IPC_RMID takes no buffer.
    unsafe { nix::libc::shmctl(id, nix::libc::IPC_RMID, std::ptr::null_mut()) == 0 }
}

fn remove_msg(id: i32) -> bool {
    // SAFETY: IPC_RMID takes no buffer.
    unsafe { nix::libc::msgctl(id, nix::libc::IPC_RMID, std::ptr::null_mut()) == 0 }
}

fn remove_sem(id: i32) -> bool {
    // SAFETY: IPC_RMID ignores the semaphore number and takes no argument.
    unsafe { nix::libc::semctl(id, 0, nix::libc::IPC_RMID) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn ipc_rows_of_the_uid_are_found_by_owner_or_creator() {
        let table = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid\n\
                     0 5 600 4096 1 1 0 42 42 42 42\n\
                     0 6 600 4096 1 1 0 7 7 42 42\n\
                     0 7 600 4096 1 1 0 7 7 7 7\n";
        assert_eq!(ipc_ids_of(table, 42), vec![5, 6]);
        assert_eq!(ipc_ids_of("", 42), Vec::<i32>::new());
    }

    #[test]
    fn read_only_and_foreign_mounts_are_skipped() {
        let info = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    23 22 0:5 / /proc rw,nosuid - proc proc rw\n\
                    24 22 0:6 / /run/lock rw - tmpfs tmpfs rw\n\
                    25 22 0:7 / /mnt/my\\040share rw - nfs4 host:/x rw\n\
                    26 22 0:8 / /mnt/ro ro,relatime - tmpfs tmpfs rw\n\
                    27 22 0:9 / /home/u/fuse rw - fuse.sshfs u@h: rw\n\
                    28 22 0:10 / /srv/ro-fs rw - ext4 /dev/sdb1 ro,errors=remount-ro\n\
                    29 22 0:11 / /srv/errors rw - ext4 /dev/sdc1 rw,errors=remount-ro\n";
        let skipped = skipped_mounts(info);
        let want: std::collections::HashSet<PathBuf> = [
            "/proc",
            "/mnt/my share",
            "/mnt/ro",
            "/home/u/fuse",
            "/srv/ro-fs",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(skipped, want);
    }

    /// The search finds root's world-writable sticky directories at any level it reaches, but
    /// not through a link, not another user's, not below a directory others may rename in, not
    /// in a skipped mount, and not deeper than [`SCAN_DEPTH`].
    #[test]
    fn world_writable_sticky_directories_are_found_and_nothing_else() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let top = tempfile::tempdir().unwrap();
        let t = top.path();
        let mk = |rel: &str, mode: u32, owner: u32| {
            let p = t.join(rel);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            std::os::unix::fs::lchown(&p, Some(owner), Some(owner)).unwrap();
            p
        };
        let shared_top = mk("lock", 0o1777, 0);
        let deep = mk("a/b/c", 0o1777, 0);
        let _too_deep = mk("a/b/c2/d/e", 0o1777, 0);
        let _theirs = mk("theirs", 0o1777, 0x7fff_0203);
        let _open = mk("open/inner", 0o1777, 0);
        mk("open", 0o777, 0);
        let _mounted = mk("mounted/inner", 0o1777, 0);
        std::os::unix::fs::symlink(&shared_top, t.join("link")).unwrap();
        let skipped = [t.join("mounted")].into_iter().collect();
        let mut found = find_shared_dirs(t, &skipped);
        found.sort();
        let mut want = vec![deep, shared_top];
        want.sort();
        assert_eq!(found, want);
    }

    /// Runs `f` in a forked child that became `uid`; whether it returned true.
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

    /// Creates POSIX message queue `name` (as the calling uid).
    fn create_queue(name: &std::ffi::CStr) -> bool {
        // SAFETY: a NUL-terminated name, a mode and no attributes.
        let q = unsafe {
            nix::libc::mq_open(
                name.as_ptr(),
                nix::libc::O_RDWR | nix::libc::O_CREAT,
                0o600 as nix::libc::c_uint,
                std::ptr::null_mut::<nix::libc::mq_attr>(),
            )
        };
        // SAFETY: closing the descriptor just opened.
        q >= 0 && unsafe { nix::libc::mq_close(q) } == 0
    }

    /// Whether POSIX message queue `name` exists.
    fn queue_exists(name: &std::ffi::CStr) -> bool {
        // SAFETY: a NUL-terminated name.
        let q = unsafe { nix::libc::mq_open(name.as_ptr(), nix::libc::O_RDONLY) };
        // SAFETY: closing the descriptor just opened.
        q >= 0 && unsafe { nix::libc::mq_close(q) } == 0
    }

    /// A file of the uid in /run/lock (a world-writable directory not among
    /// [`SHARED_TEMP_DIRS`]) and its POSIX message queue go; another uid's stay.
    #[test]
    fn a_uids_files_in_other_world_writable_dirs_and_its_message_queues_are_swept() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let (uid, other) = (0x7fff_0204u32, 0x7fff_0205u32);
        let pid = std::process::id();
        let lock = Path::new("/run/lock");
        let found = shared_dirs().iter().any(|d| d == lock);
        if !std::fs::symlink_metadata(lock).is_ok_and(|m| m.is_dir()) {
            eprintln!("skipped in part: no /run/lock here");
        } else {
            assert!(found, "{:?}", shared_dirs());
        }
        let mine = std::ffi::CString::new(format!("/stratus-sweep-test-{pid}-mine")).unwrap();
        let theirs = std::ffi::CString::new(format!("/stratus-sweep-test-{pid}-theirs")).unwrap();
        assert!(as_uid(uid, || create_queue(&mine)));
        assert!(as_uid(other, || create_queue(&theirs)));
        let file = lock.join(format!("stratus-sweep-test-{pid}"));
        if found {
            std::fs::write(&file, "x").unwrap();
            std::os::unix::fs::lchown(&file, Some(uid), Some(uid)).unwrap();
        }

        let done = sweep(uid);
        assert!(!queue_exists(&mine), "the uid's queue survived");
        assert!(queue_exists(&theirs), "another uid's queue was swept");
        assert!(done.mqueues >= 1, "{done:?}");
        assert!(
            !found || std::fs::symlink_metadata(&file).is_err(),
            "{done:?}"
        );
        // SAFETY: a NUL-terminated name.
        assert_eq!(unsafe { nix::libc::mq_unlink(theirs.as_ptr()) }, 0);
    }

    /// Entries of the uid in /tmp go (a directory is closed instead), other users' and links'
    /// targets stay, and a shared-memory segment of the uid is removed.
    #[test]
    fn a_uids_leftovers_in_tmp_and_ipc_are_swept_and_nothing_else() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        // Outside every range the provider hands out.
        let (uid, other) = (0x7fff_0201u32, 0x7fff_0202u32);
        let tag = format!("stratus-sweep-test-{}", std::process::id());
        let tmp = std::path::Path::new("/tmp");
        let file = tmp.join(format!("{tag}-file"));
        let dir = tmp.join(format!("{tag}-dir"));
        let link = tmp.join(format!("{tag}-link"));
        let theirs = tmp.join(format!("{tag}-theirs"));
        let target = tmp.join(format!("{tag}-target"));
        std::fs::write(&file, "x").unwrap();
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("inside"), "x").unwrap();
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        std::fs::write(&theirs, "x").unwrap();
        for p in [&file, &dir, &link] {
            std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
        }
        std::os::unix::fs::lchown(&theirs, Some(other), Some(other)).unwrap();
        // SAFETY: a private segment, removed by the sweep or below.
        let shm = unsafe {
            nix::libc::shmget(nix::libc::IPC_PRIVATE, 4096, nix::libc::IPC_CREAT | 0o600)
        };
        assert!(shm >= 0);
        let mut ds: nix::libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: ds is a valid shmid_ds for IPC_STAT and IPC_SET.
        unsafe {
            assert_eq!(nix::libc::shmctl(shm, nix::libc::IPC_STAT, &mut ds), 0);
            ds.shm_perm.uid = uid;
            assert_eq!(nix::libc::shmctl(shm, nix::libc::IPC_SET, &mut ds), 0);
        }

        let done = sweep(uid);
        assert!(!file.exists() && std::fs::symlink_metadata(&link).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        let m = std::fs::metadata(&dir).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o700));
        assert!(theirs.exists(), "another uid's file was swept");
        assert!(
            done.unlinked >= 2 && done.closed >= 1 && done.ipc >= 1,
            "{done:?}"
        );
        assert!(
            !ipc_ids_of(&std::fs::read_to_string("/proc/sysvipc/shm").unwrap(), uid).contains(&shm)
        );
        for p in [&theirs, &target] {
            std::fs::remove_file(p).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
