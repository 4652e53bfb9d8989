//! A local server's disk is its directory `<state>/servers/<deployment>/<server>` (the root
//! and nothing else). Terminate removes it, or moves it to
//! `<state>/kept-disks/<deployment>/<label>/<server>` for a post-mortem, so that a relaunch of
//! the same deployment always starts from fresh servers.
//!
//! A plugin may have filled the root with links pointing anywhere: removal never follows one
//! (`std::fs::remove_dir_all` unlinks a link, it does not descend through it), and it runs only
//! once no process of the server is left to race it.

use crate::process::processes_of;
use crate::{LaunchedServer, ProviderError};
use std::path::{Path, PathBuf};

/// Where kept disks go, relative to the state directory.
pub const KEPT_DISKS: &str = "kept-disks";

/// Removes (`keep` is `None`) or moves aside the disk of `server`; returns where a kept disk is.
pub(crate) fn end(
    state_dir: &Path,
    deployment: &str,
    server: &LaunchedServer,
    keep: Option<&str>,
) -> Result<Option<PathBuf>, ProviderError> {
    let servers = state_dir.join("servers").join(deployment);
    let dir = servers.join(&server.server_id);
    // A journal row pointing elsewhere is not ours to delete.
    if server.root != dir.join("root") {
        return Err(ProviderError::ForeignRoot {
            root: server.root.clone(),
        });
    }
    let pids = processes_of(&server.root);
    if !pids.is_empty() {
        return Err(ProviderError::DiskBusy { dir, pids });
    }
    if crate::cgroup::agent_cgroup(&server.root).is_some_and(|(_, cg)| cg.exists()) {
        return Err(ProviderError::DiskBusy { dir, pids });
    }
    let kept = match keep {
        Some(label) => Some(move_aside(
            state_dir,
            deployment,
            &dir,
            label,
            &server.server_id,
        )?),
        None => {
            remove_tree(&dir).map_err(ProviderError::io(format!("removing {}", dir.display())))?;
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
    std::fs::create_dir_all(&parent)
        .map_err(ProviderError::io(format!("creating {}", parent.display())))?;
    std::fs::rename(dir, &to).map_err(ProviderError::io(format!(
        "moving {} to {}",
        dir.display(),
        to.display()
    )))?;
    Ok(to)
}

/// Removes `dir` and everything in it without following links; a directory a plugin left
/// without permissions (mode 000) is opened up first. A missing `dir` is already removed.
pub(crate) fn remove_tree(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            open_up(dir);
            std::fs::remove_dir_all(dir)
        }
        Err(e) => Err(e),
    }
}

/// Gives the owner rwx on every directory of the tree, never through a link (checked with
/// `symlink_metadata`; nothing of the server runs any more to swap one in).
fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let is_dir = std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_dir());
    if !is_dir {
        return;
    }
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        open_up(&entry.path());
    }
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

    fn server(root: PathBuf) -> LaunchedServer {
        LaunchedServer {
            server_id: "app-1".into(),
            address: std::net::Ipv4Addr::LOCALHOST,
            root,
            pid: 0,
        }
    }

    #[test]
    fn a_root_that_is_not_where_the_provider_puts_it_is_left_alone() {
        let state = tempfile::tempdir().unwrap();
        let elsewhere = state.path().join("elsewhere/root");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let e = end(state.path(), "web", &server(elsewhere.clone()), None).unwrap_err();
        assert!(matches!(e, ProviderError::ForeignRoot { .. }), "{e}");
        assert!(elsewhere.exists());
    }

    #[test]
    fn a_kept_disk_moves_aside_and_the_deployment_directory_goes_with_its_last_server() {
        let state = tempfile::tempdir().unwrap();
        let root = state.path().join("servers/web/app-1/root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("marker"), "m").unwrap();
        let kept = end(state.path(), "web", &server(root.clone()), Some("3"))
            .unwrap()
            .unwrap();
        assert_eq!(kept, state.path().join("kept-disks/web/3/app-1"));
        assert_eq!(
            std::fs::read_to_string(kept.join("root/marker")).unwrap(),
            "m"
        );
        assert!(!state.path().join("servers/web").exists());
        // A terminate resumed after the move finds it done.
        assert_eq!(
            end(state.path(), "web", &server(root.clone()), Some("3")).unwrap(),
            Some(kept)
        );
        std::fs::create_dir_all(&root).unwrap();
        assert_eq!(end(state.path(), "web", &server(root), None).unwrap(), None);
        assert!(!state.path().join("servers/web").exists());
    }
}
