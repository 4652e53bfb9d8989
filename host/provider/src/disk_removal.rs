//! Removing an ended server's disk off the terminate's path. Deleting a root's few dozen files
//! costs the kernel far more than the rename that takes it out of the way (an inode freed per
//! file, and on a disk mounted with `discard` a trim the caller waits for), so `end` moves the
//! disk into `<state>/removing/` at once and one background thread per process deletes what
//! lands there, oldest first. A control plane stopped before the thread finished leaves the
//! rest for the next one, which resumes when it starts; a control plane that exits waits for
//! its removals first (up to a minute).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Sender, channel};

/// Where disks wait to be deleted, relative to the state directory; only its owner may enter
/// (a disk holds what its server held, passwords in configuration included).
pub const REMOVING: &str = "removing";

/// The background remover's queue, made with the first removal of the process, and the state
/// directories whose trash it has already looked through for an earlier process's leftovers.
static REMOVER: Mutex<Option<Remover>> = Mutex::new(None);

/// Disks queued and not yet deleted, in this process.
static PENDING: AtomicUsize = AtomicUsize::new(0);

struct Remover {
    queue: Sender<PathBuf>,
    swept: HashSet<PathBuf>,
}

/// Takes `dir` out of `<state>/servers` and has it deleted in the background; where the move
/// cannot be made (another filesystem, say), deletes it before returning.
pub(crate) fn remove(state_dir: &Path, dir: &Path, name: &str) -> std::io::Result<()> {
    match move_out(state_dir, dir, name) {
        Ok(Some(moved)) => {
            queue(state_dir, moved);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => {
            tracing::debug!(dir = %dir.display(), "removing in place: {e}");
            crate::disk::remove_tree(dir)
        }
    }
}

/// Renames `dir` to a fresh name under [`REMOVING`]; `None` when there was nothing to move.
fn move_out(state_dir: &Path, dir: &Path, name: &str) -> std::io::Result<Option<PathBuf>> {
    if std::fs::symlink_metadata(dir).is_err() {
        return Ok(None);
    }
    let trash = trash_dir(state_dir)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let to = trash.join(format!("{name}.{nanos}"));
    std::fs::rename(dir, &to)?;
    Ok(Some(to))
}

fn trash_dir(state_dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let trash = state_dir.join(REMOVING);
    match std::fs::DirBuilder::new().mode(0o700).create(&trash) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    // A link or a file in its place would send disks elsewhere.
    let meta = std::fs::symlink_metadata(&trash)?;
    if !meta.is_dir() || meta.permissions().mode() & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is not a directory only its owner can enter",
            trash.display()
        )));
    }
    Ok(trash)
}

/// Hands `moved` to the remover (started by the process's first removal), after whatever an
/// earlier process left in this state directory's trash.
fn queue(state_dir: &Path, moved: PathBuf) {
    let mut remover = REMOVER.lock().unwrap_or_else(|e| e.into_inner());
    if remover.is_none() {
        match start() {
            Some(queue) => {
                *remover = Some(Remover {
                    queue,
                    swept: HashSet::new(),
                })
            }
            None => {
                drop(remover);
                let _ = crate::disk::remove_tree(&moved);
                return;
            }
        }
    }
    let Some(r) = remover.as_mut() else { return };
    if r.swept.insert(state_dir.to_path_buf()) {
        for left in leftovers(state_dir, &moved) {
            send(&r.queue, left);
        }
    }
    send(&r.queue, moved);
}

fn send(queue: &Sender<PathBuf>, dir: PathBuf) {
    PENDING.fetch_add(1, Ordering::SeqCst);
    if queue.send(dir).is_err() {
        PENDING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Deletes what an earlier process left in `state_dir`'s trash, in the background: called when
/// a control plane starts.
pub fn resume(state_dir: &Path) {
    if let Some(first) = leftovers(state_dir, Path::new("")).into_iter().next() {
        queue(state_dir, first);
    }
}

/// Waits until every disk this process queued is deleted, at most `limit`; false if some are
/// left (the next control plane deletes them). Called before a control plane exits.
pub fn finish(limit: std::time::Duration) -> bool {
    let until = std::time::Instant::now() + limit;
    while PENDING.load(Ordering::SeqCst) > 0 {
        if std::time::Instant::now() >= until {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

fn start() -> Option<Sender<PathBuf>> {
    let (tx, rx) = channel::<PathBuf>();
    std::thread::Builder::new()
        .name("stratus-rm".into())
        .spawn(move || {
            for dir in rx {
                if let Err(e) = crate::disk::remove_tree(&dir) {
                    tracing::warn!(dir = %dir.display(), "could not remove an ended server's disk: {e}");
                }
                PENDING.fetch_sub(1, Ordering::SeqCst);
            }
        })
        .ok()
        .map(|_| tx)
}

/// What an earlier process left in the trash.
fn leftovers(state_dir: &Path, except: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(state_dir.join(REMOVING)) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p != except)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    /// Waits until the trash of `state` is empty, at most 30 s.
    fn settled(state: &Path) -> bool {
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            let empty = std::fs::read_dir(state.join(REMOVING))
                .map(|mut d| d.next().is_none())
                .unwrap_or(true);
            if empty {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// A trash directory made beforehand with `mode`.
    fn trash_with_mode(state: &Path, mode: u32) -> PathBuf {
        let trash = state.join(REMOVING);
        std::fs::create_dir(&trash).unwrap();
        std::fs::set_permissions(&trash, std::fs::Permissions::from_mode(mode)).unwrap();
        trash
    }

    fn disk(state: &Path, server: &str) -> PathBuf {
        let dir = state.join("servers/web").join(server);
        std::fs::create_dir_all(dir.join("root/agent")).unwrap();
        std::fs::write(dir.join("root/agent/credential"), "secret").unwrap();
        dir
    }

    #[test]
    fn a_removed_disk_is_gone_from_its_place_at_once_and_deleted_behind() {
        let state = tempfile::tempdir().unwrap();
        let dir = disk(state.path(), "app-1");
        // Outside the disk, reached through a link inside it: removal must not follow it.
        let outside = state.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "k").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("root/link")).unwrap();
        remove(state.path(), &dir, "web.app-1").unwrap();
        assert!(!dir.exists());
        let mode = std::fs::metadata(state.path().join(REMOVING)).unwrap();
        assert_eq!(mode.permissions().mode() & 0o777, 0o700);
        assert!(settled(state.path()), "the trash never emptied");
        assert_eq!(std::fs::read_to_string(outside.join("keep")).unwrap(), "k");
        // Nothing to remove is not an error.
        remove(state.path(), &dir, "web.app-1").unwrap();
    }

    #[test]
    fn what_an_earlier_process_left_in_the_trash_is_deleted_with_the_next_removal() {
        let state = tempfile::tempdir().unwrap();
        let trash = trash_with_mode(state.path(), 0o700);
        let left = trash.join("web.app-9.1");
        std::fs::create_dir_all(left.join("root/agent")).unwrap();
        std::fs::write(left.join("root/agent/credential"), "secret").unwrap();
        let dir = disk(state.path(), "app-1");
        remove(state.path(), &dir, "web.app-1").unwrap();
        assert!(settled(state.path()), "the leftover was not deleted");
        assert!(!left.exists());
    }

    #[test]
    fn a_trash_others_can_enter_is_not_used_and_the_disk_is_removed_in_place() {
        let state = tempfile::tempdir().unwrap();
        let trash = trash_with_mode(state.path(), 0o777);
        let dir = disk(state.path(), "app-1");
        remove(state.path(), &dir, "web.app-1").unwrap();
        assert!(!dir.exists());
        assert_eq!(std::fs::read_dir(&trash).unwrap().count(), 0);
    }
}
