//! The agent-private area `<root>/agent/` (bootstrap with the credential, sealed packages,
//! reply cache, process logs) is the agent's alone: the programs plugins start run as the
//! program user, which must not read any of it. The provider creates the directory with the
//! default umask, so the agent closes it at start and checks what else the program user could
//! reach.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use stratus_plugin_runtime::ProgramUser;

/// Mode of `<root>/agent/`: only its owner (the agent) may list or enter it.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of the credential file.
pub const CREDENTIAL_MODE: u32 = 0o600;

/// Closes `<root>/agent/` and the file holding the credential (the bootstrap) to everyone but
/// the agent, and warns when the program user could change `<root>` or cannot reach it at all
/// (then programs cannot open the absolute paths of their service directories).
pub fn protect(root: &Path, credential: &Path, user: ProgramUser) {
    let agent_dir = root.join("agent");
    for (path, mode) in [
        (agent_dir.as_path(), PRIVATE_DIR_MODE),
        (credential, CREDENTIAL_MODE),
    ] {
        if let Err(e) = close(path, mode) {
            tracing::error!(path = %path.display(), error = %e, "cannot make agent file private");
        }
    }
    match std::fs::symlink_metadata(root) {
        Ok(m) if m.uid() == user.uid || m.mode() & 0o002 != 0 => tracing::warn!(
            root = %root.display(),
            "the server root is writable by the program user: programs could replace `agent/`"
        ),
        _ => {}
    }
    if let Some(blocked) = unreachable(root, user) {
        tracing::warn!(
            root = %root.display(), %user, dir = %blocked.display(),
            "the program user cannot search this directory, so programs cannot reach the \
             server root by its path; make it searchable (chmod o+x) or move the state directory"
        );
    }
}

/// Sets `mode` on `path` (not through a link) when it grants more.
fn close(path: &Path, mode: u32) -> std::io::Result<()> {
    let m = std::fs::symlink_metadata(path)?;
    if m.file_type().is_symlink() {
        return Err(std::io::Error::other("is a symbolic link"));
    }
    if m.mode() & 0o777 & !mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// The first directory from `/` to `root` (included) that `user` may not search, if any.
fn unreachable(root: &Path, user: ProgramUser) -> Option<std::path::PathBuf> {
    stratus_plugin_runtime::program_user::unsearchable(root, user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_dir_and_credential_are_closed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir(root.join("agent")).unwrap();
        let cred = root.join("agent/credential");
        std::fs::write(&cred, "s").unwrap();
        std::fs::set_permissions(root.join("agent"), PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&cred, PermissionsExt::from_mode(0o644)).unwrap();
        protect(root, &cred, stratus_plugin_runtime::DEFAULT_PROGRAM_USER);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&root.join("agent")), 0o700);
        assert_eq!(mode(&cred), 0o600);
    }

    #[test]
    fn a_closed_ancestor_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("a/b");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::set_permissions(tmp.path(), PermissionsExt::from_mode(0o700)).unwrap();
        let user = stratus_plugin_runtime::DEFAULT_PROGRAM_USER;
        assert_eq!(unreachable(&root, user), Some(tmp.path().to_path_buf()));
        std::fs::set_permissions(tmp.path(), PermissionsExt::from_mode(0o711)).unwrap();
        assert_eq!(unreachable(&root, user), None);
    }
}
