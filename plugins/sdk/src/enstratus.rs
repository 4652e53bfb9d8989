//! The classic enStratus `enstratus.cfg` (`[enstratus]` section, `key=value` lines) for legacy
//! scripts and templates, rendered by the host (`enstratus-cfg` in `wit/host.wit`), written
//! next to the service and erased when the hook is done.

use std::path::{Path, PathBuf};

use crate::files::io_error;
use crate::host;
use crate::no_follow::{self, Mode};
use crate::types::{HookError, ServiceContext};

/// The file name enStratus used inside the service directory.
pub const FILE_NAME: &str = "enstratus.cfg";

/// The context in enStratus's format, e.g. `port.80.privatePort=80`, `serviceKeys=admin`,
/// `serviceKey.admin.password=…`. Contains secrets.
pub fn enstratus_cfg() -> Result<String, HookError> {
    host::enstratus_cfg().map_err(HookError::fatal)
}

/// Erases `enstratus.cfg` when dropped: it holds passwords and must not outlive the hook.
#[derive(Debug)]
pub struct EnstratusCfgGuard {
    path: PathBuf,
}

impl EnstratusCfgGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for EnstratusCfgGuard {
    fn drop(&mut self) {
        use std::io::Write;
        // Overwrite in place (not truncate) before unlinking, so the secrets do not linger in
        // freed blocks; a link planted in the file's place is removed, never written through.
        if let Ok(mut f) = no_follow::open(&self.path, Mode::Overwrite)
            && let Ok(meta) = f.metadata()
        {
            let _ = f.write_all(&vec![0u8; meta.len() as usize]);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `<service_dir>/enstratus.cfg` (mode 0600 where the platform has modes; under WASI
/// the service directory's own permissions protect it) and returns the guard that erases it.
pub fn write_enstratus_cfg(ctx: &ServiceContext) -> Result<EnstratusCfgGuard, HookError> {
    let text = enstratus_cfg()?;
    write_private(&Path::new(&ctx.service_dir).join(FILE_NAME), &text)
}

/// Writes `text` to a new private file and returns the guard that erases it.
fn write_private(path: &Path, text: &str) -> Result<EnstratusCfgGuard, HookError> {
    use std::io::Write;
    let mut file =
        no_follow::open(path, Mode::Replace(0o600)).map_err(|e| io_error("creating", path, &e))?;
    // From here on the guard owns the file, so a failed write still erases it.
    let guard = EnstratusCfgGuard {
        path: path.to_owned(),
    };
    file.write_all(text.as_bytes())
        .map_err(|e| io_error("writing", &guard.path, &e))?;
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_file_is_private_and_erased_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let guard = write_private(&path, "[enstratus]\nserviceKey.a.password=pw\n").unwrap();
        assert_eq!(guard.path(), path);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[enstratus]\nserviceKey.a.password=pw\n"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(guard);
        assert!(!path.exists());
    }

    #[test]
    fn a_link_planted_at_the_file_is_neither_written_nor_zeroed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("rootfile");
        std::fs::write(&target, "root only\n").unwrap();
        let path = dir.path().join(FILE_NAME);
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = write_private(&path, "serviceKey.a.password=pw\n").unwrap_err();
        assert!(err.message.contains("symbolic link"), "{}", err.message);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "root only\n");

        // Swapped for a link after it was written: the guard removes the link only.
        std::fs::remove_file(&path).unwrap();
        let guard = write_private(&path, "serviceKey.a.password=pw\n").unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        drop(guard);
        assert!(std::fs::symlink_metadata(&path).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "root only\n");
    }
}
