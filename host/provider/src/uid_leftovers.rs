//! What a server's programs leave outside its root under its program uid: entries in the
//! machine's shared temporary directories and System V IPC objects. The server's disk goes at
//! terminate; these are swept when the server ends and again before its uid is reused, so the
//! next holder of the uid inherits none of them.
//!
//! Only the top level of each temporary directory is swept: a file, socket, fifo or link of the
//! uid is unlinked (the directories are sticky, so no one else can have swapped the name), a
//! directory of the uid is given to root with mode 0700 (its contents stay, unreachable to the
//! uid; removing a tree in a directory every user writes is not safe against renames).

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag, fchmodat, fstatat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, unlinkat};
use std::os::fd::AsFd;

/// The directories every user may write, where programs leave files.
pub const SHARED_TEMP_DIRS: [&str; 3] = ["/tmp", "/var/tmp", "/dev/shm"];

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
}

/// Sweeps what `uid` left in [`SHARED_TEMP_DIRS`] and System V IPC. Root only; `uid` must be a
/// per-server program uid, never a shared one, and none of its processes may run any more.
pub fn sweep(uid: u32) -> Swept {
    assert!(uid != 0, "never root's files");
    let mut done = Swept::default();
    for dir in SHARED_TEMP_DIRS {
        if let Err(e) = sweep_dir(std::path::Path::new(dir), uid, &mut done) {
            tracing::warn!(dir, uid, error = %e, "cannot sweep what a program uid left");
        }
    }
    done.ipc = remove_ipc(uid);
    done
}

/// Sweeps the top level of `dir` (opened without following a link).
fn sweep_dir(dir: &std::path::Path, uid: u32, done: &mut Swept) -> nix::Result<()> {
    let mut d = nix::dir::Dir::open(
        dir,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let fd = d
        .as_fd()
        .try_clone_to_owned()
        .map_err(|_| nix::errno::Errno::EMFILE)?;
    // Only where no one but the uid itself (dead by now) could swap one of its names: a
    // root-owned directory that is sticky or that others may not write.
    let own = nix::sys::stat::fstat(&fd)?;
    if own.st_uid != 0 || (own.st_mode & 0o022 != 0 && own.st_mode & 0o1000 == 0) {
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
        let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
        if is_dir {
            fchownat(
                &fd,
                name.as_c_str(),
                Some(Uid::from_raw(0)),
                Some(Gid::from_raw(0)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
            fchmodat(
                &fd,
                name.as_c_str(),
                Mode::S_IRWXU,
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )?;
            done.closed += 1;
        } else {
            unlinkat(&fd, name.as_c_str(), UnlinkatFlags::NoRemoveDir)?;
            done.unlinked += 1;
        }
    }
    Ok(())
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
