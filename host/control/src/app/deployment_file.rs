//! Reading a deployment file named by path, which whoever asks the control plane chooses: it
//! must be a regular file (a FIFO would block a reader forever, `/dev/zero` never ends) of at
//! most [`MAX_DEPLOYMENT_FILE_BYTES`], opened without blocking and read off the async
//! workers. A file asked for over HTTP must also be readable by every user of the machine: the
//! control plane runs as root, and the operator token must not read what its holder could not.

use super::AppError;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The largest deployment file read (a large one is far under 100 KiB).
pub const MAX_DEPLOYMENT_FILE_BYTES: u64 = 1 << 20;

/// Who may name the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAccess {
    /// An operator of this machine (the line protocol, or a file the control plane unpacked).
    Operator,
    /// An HTTP client: only files every user may read.
    Anyone,
}

/// The text of the deployment file at `file`.
pub async fn read_deployment_file(file: &str, access: FileAccess) -> Result<String, AppError> {
    let path = file.to_string();
    tokio::task::spawn_blocking(move || read_blocking(Path::new(&path), access))
        .await
        .map_err(|e| AppError::Internal(format!("reading a deployment file: {e}")))?
        .map_err(|message| AppError::Unreadable {
            file: file.to_string(),
            message,
        })
}

fn read_blocking(path: &Path, access: FileAccess) -> Result<String, String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if access == FileAccess::Anyone && meta.mode() & 0o004 == 0 {
        return Err(
            "not readable by every user of this machine; the HTTP API launches only \
                    such files (or upload the file with its packages)"
                .into(),
        );
    }
    if meta.len() > MAX_DEPLOYMENT_FILE_BYTES {
        return Err(format!(
            "{} bytes; a deployment file is at most {MAX_DEPLOYMENT_FILE_BYTES} bytes",
            meta.len()
        ));
    }
    let mut text = String::new();
    f.take(MAX_DEPLOYMENT_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_DEPLOYMENT_FILE_BYTES {
        return Err(format!(
            "grew past {MAX_DEPLOYMENT_FILE_BYTES} bytes while it was read"
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn refused(path: &Path, access: FileAccess) -> String {
        read_blocking(path, access).unwrap_err()
    }

    #[test]
    fn only_small_regular_files_are_read_and_over_http_only_world_readable_ones() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        // Opened without blocking, then refused: no writer is ever waited for.
        assert_eq!(refused(&fifo, FileAccess::Operator), "not a regular file");
        assert_eq!(
            refused(Path::new("/dev/zero"), FileAccess::Operator),
            "not a regular file"
        );
        let big = dir.path().join("big.toml");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(2 << 30)
            .unwrap();
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(refused(&big, FileAccess::Operator).contains("is at most 1048576 bytes"));
        let secret = dir.path().join("secret.toml");
        std::fs::write(&secret, "name = \"s3cret\"\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(refused(&secret, FileAccess::Anyone).contains("not readable by every user"));
        assert_eq!(
            read_blocking(&secret, FileAccess::Operator).unwrap(),
            "name = \"s3cret\"\n"
        );
    }
}
