//! What every user of this machine may read. The control plane runs as root, and a deployment
//! file named over the HTTP API must not make it read, upload and hand to a plugin anything
//! the token's holder could not read as any user: every package, data source, CM input and
//! scaling rule the file names must be readable by everyone, and every directory above it
//! searchable by everyone.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Most entries looked at under one path; a package holds at most 10 000 (cloud files).
pub const MAX_CHECKED_ENTRIES: u64 = 20_000;

/// Ok when everyone may read `path` (a file, or a directory and all it would upload).
pub(super) fn check(path: &Path) -> Result<(), String> {
    let real = std::fs::canonicalize(path).map_err(|e| e.to_string())?;
    for dir in real.ancestors().skip(1) {
        let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if meta.mode() & 0o001 == 0 {
            return Err(format!(
                "the directory {} is not searchable by every user of this machine",
                dir.display()
            ));
        }
    }
    let mut budget = 0;
    walk(&real, "", &mut budget)
}

/// Checks `path` and, for a directory, every entry a package upload would read.
fn walk(path: &Path, prefix: &str, budget: &mut u64) -> Result<(), String> {
    *budget += 1;
    if *budget > MAX_CHECKED_ENTRIES {
        return Err(format!("more than {MAX_CHECKED_ENTRIES} entries"));
    }
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.mode();
    let ft = meta.file_type();
    if ft.is_symlink() {
        return Err(format!("{} is a symbolic link", path.display()));
    }
    if ft.is_file() && mode & 0o004 == 0 {
        return Err(format!("{} is not readable by every user", path.display()));
    }
    if !ft.is_dir() {
        return Ok(());
    }
    if mode & 0o005 != 0o005 {
        return Err(format!(
            "the directory {} is not readable by every user",
            path.display()
        ));
    }
    let entries = std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if stratus_cloud::not_payload(prefix, &name) {
            continue;
        }
        let inner = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        walk(&entry.path(), &inner, budget)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn only_trees_everyone_may_read_pass() {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let pkg = dir.path().join("pkg");
        std::fs::create_dir_all(pkg.join("cfg")).unwrap();
        std::fs::write(pkg.join("plugin.toml"), "x").unwrap();
        std::fs::write(pkg.join("cfg/a.conf"), "x").unwrap();
        for p in [&pkg, &pkg.join("cfg")] {
            chmod(p, 0o755);
        }
        for f in ["plugin.toml", "cfg/a.conf"] {
            chmod(&pkg.join(f), 0o644);
        }
        assert_eq!(check(&pkg), Ok(()));

        // Not uploaded, so not checked: build inputs at the top, dotfiles anywhere.
        std::fs::create_dir(pkg.join("target")).unwrap();
        std::fs::write(pkg.join("cfg/.secret"), "x").unwrap();
        chmod(&pkg.join("target"), 0o700);
        chmod(&pkg.join("cfg/.secret"), 0o600);
        assert_eq!(check(&pkg), Ok(()));

        chmod(&pkg.join("cfg/a.conf"), 0o600);
        let err = check(&pkg).unwrap_err();
        assert!(
            err.ends_with("cfg/a.conf is not readable by every user"),
            "{err}"
        );
        chmod(&pkg.join("cfg/a.conf"), 0o644);

        chmod(&pkg.join("cfg"), 0o711);
        let err = check(&pkg).unwrap_err();
        assert!(err.contains("directory") && err.contains("cfg"), "{err}");
        chmod(&pkg.join("cfg"), 0o755);

        std::os::unix::fs::symlink("/etc/shadow", pkg.join("cfg/link")).unwrap();
        let err = check(&pkg).unwrap_err();
        assert!(err.ends_with("cfg/link is a symbolic link"), "{err}");
        std::fs::remove_file(pkg.join("cfg/link")).unwrap();

        chmod(dir.path(), 0o700);
        let err = check(&pkg.join("plugin.toml")).unwrap_err();
        assert!(err.contains("is not searchable by every user"), "{err}");
        chmod(dir.path(), 0o755);
    }

    #[test]
    fn a_root_only_file_is_refused() {
        assert!(check(Path::new("/etc/shadow")).is_err());
        assert_eq!(check(Path::new("/etc/hostname")), Ok(()));
    }
}
