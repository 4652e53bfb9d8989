//! A local server's disk is its directory `<state>/servers/<deployment>/<server>` (the root
//! and nothing else). Terminate removes it (moved out at once, deleted in the background:
//! `disk_removal.rs`), or moves it to
//! `<state>/kept-disks/<deployment>/<label>/<server>` for a post-mortem, so that a relaunch of
//! the same deployment always starts from fresh servers.
//!
//! A plugin may have filled the root with links pointing anywhere: removal never follows one
//! (`std::fs::remove_dir_all` unlinks a link, it does not descend through it), and it runs only
//! once no process of the server is left to race it.

use crate::ProviderError;
use crate::process::processes_of;
use nix::NixPath;
use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, fchmod, fchmodat, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where kept disks go, relative to the state directory.
pub const KEPT_DISKS: &str = "kept-disks";

/// Removes (`keep` is `None`) or moves aside the disk of server `server_id` whose handle
/// says its root is `root`; returns where a kept disk is.
pub(crate) fn end(
    state_dir: &Path,
    deployment: &str,
    server_id: &str,
    root: &Path,
    keep: Option<&str>,
) -> Result<Option<PathBuf>, ProviderError> {
    let servers = state_dir.join("servers").join(deployment);
    let dir = servers.join(server_id);
    // A handle pointing elsewhere is not ours to delete.
    if root != dir.join("root") {
        return Err(ProviderError::ForeignRoot {
            root: root.to_path_buf(),
        });
    }
    let pids = processes_of(root);
    if !pids.is_empty() {
        return Err(ProviderError::DiskBusy { dir, pids });
    }
    if crate::cgroup::agent_cgroup(root).is_some_and(|(_, cg)| cg.exists()) {
        return Err(ProviderError::DiskBusy { dir, pids });
    }
    let kept = match keep {
        Some(label) => Some(move_aside(state_dir, deployment, &dir, label, server_id)?),
        None => {
            let name = format!("{deployment}.{server_id}");
            crate::disk_removal::remove(state_dir, &dir, &name)
                .map_err(ProviderError::io(format!("removing {}", dir.display())))?;
            None
        }
    };
    // The deployment's directory goes with its last server; a failure means one is left.
    let _ = std::fs::remove_dir(&servers);
    Ok(kept)
}

fn move_aside(
    state_dir: &Path,
    deployment: &str,
    dir: &Path,
    label: &str,
    server_id: &str,
) -> Result<PathBuf, ProviderError> {
    crate::local::check_name("kept-disk label", label)?;
    let parent = state_dir.join(KEPT_DISKS).join(deployment).join(label);
    let to = parent.join(server_id);
    // Already moved by a terminate the control plane was killed in (or never made).
    if !dir.exists() {
        return Ok(to);
    }
    // Kept disks hold what the servers held (configuration with passwords): owner only.
    let kept = state_dir.join(KEPT_DISKS);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&kept)
        .and_then(|()| std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o700)))
        .and_then(|()| std::fs::create_dir_all(&parent))
        .map_err(ProviderError::io(format!("creating {}", parent.display())))?;
    // The agent's credentials (its bootstrap's, and the one that replaced it) are of no use
    // to a post-mortem; a secret less on disk. Only through real directories: a link on the
    // way would lead the removal elsewhere.
    let real_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    if real_dir(&dir.join("root")) && real_dir(&dir.join("root/agent")) {
        for secret in ["root/agent/credential", "root/agent/bootstrap.json"] {
            match std::fs::remove_file(dir.join(secret)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ProviderError::io("removing the agent's credential")(e)),
            }
        }
    }
    std::fs::rename(dir, &to).map_err(ProviderError::io(format!(
        "moving {} to {}",
        dir.display(),
        to.display()
    )))?;
    Ok(to)
}

/// Directories are opened for reading and never through a link.
const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Removes `dir` and everything in it without following links; a directory a plugin left
/// without permissions (mode 000) is opened up first. A missing `dir` is already removed.
///
/// A plugin decides how deep its tree is, so the walk keeps the path from `dir` on the heap
/// and holds at most three descriptors (climbing back through `..`): `std::fs::remove_dir_all`
/// recurses once per level and aborts the process with a stack overflow on a 2 MiB stack (a
/// tokio blocking thread) for a tree 50,000 levels deep (20,000 in a debug build).
pub(crate) fn remove_tree(dir: &Path) -> std::io::Result<()> {
    let mut cur = match open_dir(AT_FDCWD, dir) {
        Ok(d) => d,
        Err(Errno::ENOENT) => return Ok(()),
        // A link (or a file) where the directory was: remove it, not what it points at.
        Err(Errno::ELOOP | Errno::ENOTDIR) => return std::fs::remove_file(dir),
        Err(e) => return Err(e.into()),
    };
    let mut path: Vec<CString> = Vec::new();
    loop {
        match clear_files(&mut cur)? {
            Some(name) => {
                let child = open_dir(&cur, name.as_c_str())?;
                path.push(name);
                cur = child;
            }
            None => {
                let Some(name) = path.pop() else { break };
                // `..` of a directory opened without following links is the one we came from;
                // nothing of the server runs any more to move it.
                cur = Dir::openat(&cur, c"..", DIR_FLAGS, Mode::empty())?;
                unlinkat(&cur, name.as_c_str(), UnlinkatFlags::RemoveDir)?;
            }
        }
    }
    drop(cur);
    std::fs::remove_dir(dir)
}

/// Opens the directory `name` (relative to `parent`) and gives its owner rwx so its entries
/// can be removed; a directory without read permission is opened up first.
fn open_dir<Fd: AsFd, P: ?Sized + NixPath>(parent: Fd, name: &P) -> nix::Result<Dir> {
    let dir = match Dir::openat(&parent, name, DIR_FLAGS, Mode::empty()) {
        Err(Errno::EACCES) => {
            // O_NOFOLLOW refuses a link with ELOOP, so this is a directory (checked again).
            let st = fstatat(&parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
            if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFDIR.bits() {
                return Err(Errno::EACCES);
            }
            fchmodat(&parent, name, Mode::S_IRWXU, FchmodatFlags::FollowSymlink)?;
            Dir::openat(&parent, name, DIR_FLAGS, Mode::empty())?
        }
        other => other?,
    };
    // A directory without write permission keeps its entries: ours to open up as well.
    let _ = fchmod(&dir, Mode::S_IRWXU);
    Ok(dir)
}

/// Unlinks every entry of `dir` that is not a directory (links included, never followed);
/// returns the name of a subdirectory when one is left.
fn clear_files(dir: &mut Dir) -> nix::Result<Option<CString>> {
    let fd = dir
        .as_fd()
        .try_clone_to_owned()
        .map_err(|_| Errno::last())?;
    let mut subdir = None;
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let is_dir = match entry.file_type() {
            Some(t) => t == Type::Directory,
            None => {
                let st = fstatat(&fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
                st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits()
            }
        };
        if is_dir {
            subdir.get_or_insert_with(|| name.to_owned());
        } else {
            match unlinkat(&fd, name, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(subdir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A disk full of links out (to a directory, a file, the parent, a loop, a dangling
    /// target) and a directory without permissions: removal takes the disk and nothing else.
    #[test]
    fn removal_never_follows_links_out_and_opens_up_locked_directories() {
        let base = tempfile::tempdir().unwrap();
        let outside = base.path().join("outside");
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        std::fs::write(outside.join("precious"), "keep me").unwrap();
        std::fs::write(outside.join("sub/precious"), "keep me too").unwrap();
        let disk = base.path().join("disk");
        let deep = disk.join("root/mnt/services/a1");
        std::fs::create_dir_all(&deep).unwrap();
        let link = |target: &Path, name: &str| {
            std::os::unix::fs::symlink(target, deep.join(name)).unwrap()
        };
        link(&outside, "to-dir");
        link(&outside.join("precious"), "to-file");
        link(Path::new(".."), "to-parent");
        link(&deep.join("loop"), "loop");
        link(Path::new("/nonexistent/x"), "dangling");
        let locked = deep.join("locked");
        std::fs::create_dir_all(locked.join("inner")).unwrap();
        std::fs::write(locked.join("inner/f"), "x").unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();

        remove_tree(&disk).unwrap();

        assert!(!disk.exists());
        assert_eq!(
            std::fs::read_to_string(outside.join("precious")).unwrap(),
            "keep me"
        );
        assert_eq!(
            std::fs::read_to_string(outside.join("sub/precious")).unwrap(),
            "keep me too"
        );
        assert_eq!(
            std::fs::metadata(&outside).unwrap().permissions().mode() & 0o777,
            std::fs::metadata(base.path()).unwrap().permissions().mode() & 0o777,
            "the target of a link keeps its mode"
        );
        remove_tree(&disk).unwrap();
    }

    const LEVELS: usize = 20_000;

    /// A tree deeper than any path (20,000 levels, past PATH_MAX) goes on a thread with a
    /// 2 MiB stack, tokio's blocking-thread size, where `std::fs::remove_dir_all` overflows
    /// the stack and aborts the process.
    #[test]
    fn a_tree_deeper_than_any_path_is_removed_on_a_small_stack() {
        let base = tempfile::tempdir().unwrap();
        let top = base.path().join("disk");
        std::fs::create_dir(&top).unwrap();
        let mut fd = nix::fcntl::open(&top, DIR_FLAGS, Mode::empty()).unwrap();
        for _ in 0..LEVELS {
            nix::sys::stat::mkdirat(&fd, "d", Mode::S_IRWXU).unwrap();
            fd = nix::fcntl::openat(&fd, "d", DIR_FLAGS, Mode::empty()).unwrap();
        }
        std::fs::write(
            format!(
                "/proc/self/fd/{}/leaf",
                std::os::fd::AsRawFd::as_raw_fd(&fd)
            ),
            "x",
        )
        .unwrap();
        drop(fd);
        let t = top.clone();
        let removed = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || remove_tree(&t))
            .unwrap()
            .join()
            .unwrap();
        removed.unwrap();
        assert!(!top.exists());
    }

    #[test]
    fn a_link_in_place_of_the_disk_is_removed_not_followed() {
        let base = tempfile::tempdir().unwrap();
        let target = base.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("precious"), "keep me").unwrap();
        let link = base.path().join("disk");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        remove_tree(&link).unwrap();
        assert!(std::fs::symlink_metadata(&link).is_err());
        assert_eq!(
            std::fs::read_to_string(target.join("precious")).unwrap(),
            "keep me"
        );
    }

    /// A process of the server still alive (it carries the root marker) keeps the disk.
    #[test]
    fn a_disk_is_not_removed_while_a_process_of_its_server_lives() {
        let state = tempfile::tempdir().unwrap();
        let root = state.path().join("servers/web/app-1/root");
        std::fs::create_dir_all(&root).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(crate::process::ROOT_MARKER, &root)
            .spawn()
            .unwrap();
        // Until it has exec'd, the child still shows the test's own environment.
        let marker = format!("{}={}", crate::process::ROOT_MARKER, root.display());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !std::fs::read(format!("/proc/{}/environ", child.id()))
            .is_ok_and(|e| e.split(|b| *b == 0).any(|v| v == marker.as_bytes()))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let busy = end(state.path(), "web", "app-1", &root, None);
        let _ = child.kill();
        let _ = child.wait();
        match busy {
            Err(ProviderError::DiskBusy { pids, .. }) => assert_eq!(pids, [child.id()]),
            other => panic!("expected DiskBusy, got {other:?}"),
        }
        assert!(root.exists());
        assert_eq!(
            end(state.path(), "web", "app-1", &root, None).unwrap(),
            None
        );
        assert!(!root.exists());
    }

    #[test]
    fn a_root_that_is_not_where_the_provider_puts_it_is_left_alone() {
        let state = tempfile::tempdir().unwrap();
        let elsewhere = state.path().join("elsewhere/root");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let e = end(state.path(), "web", "app-1", &elsewhere, None).unwrap_err();
        assert!(matches!(e, ProviderError::ForeignRoot { .. }), "{e}");
        assert!(elsewhere.exists());
    }

    #[test]
    fn a_kept_disk_moves_aside_and_the_deployment_directory_goes_with_its_last_server() {
        let state = tempfile::tempdir().unwrap();
        let root = state.path().join("servers/web/app-1/root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("marker"), "m").unwrap();
        std::fs::create_dir_all(root.join("agent")).unwrap();
        std::fs::write(root.join("agent/credential"), "secret").unwrap();
        std::fs::write(root.join("agent/bootstrap.json"), "secret").unwrap();
        let kept = end(state.path(), "web", "app-1", &root, Some("3"))
            .unwrap()
            .unwrap();
        assert_eq!(kept, state.path().join("kept-disks/web/3/app-1"));
        assert_eq!(
            std::fs::read_to_string(kept.join("root/marker")).unwrap(),
            "m"
        );
        assert!(!state.path().join("servers/web").exists());
        assert!(!kept.join("root/agent/credential").exists());
        assert!(!kept.join("root/agent/bootstrap.json").exists());
        let mode = std::fs::metadata(state.path().join("kept-disks"))
            .unwrap()
            .permissions();
        assert_eq!(mode.mode() & 0o777, 0o700);
        // A terminate resumed after the move finds it done.
        assert_eq!(
            end(state.path(), "web", "app-1", &root, Some("3")).unwrap(),
            Some(kept)
        );
        std::fs::create_dir_all(&root).unwrap();
        assert_eq!(
            end(state.path(), "web", "app-1", &root, None).unwrap(),
            None
        );
        assert!(!state.path().join("servers/web").exists());
    }
}
