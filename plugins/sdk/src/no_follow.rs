//! Opening files without following a symbolic link at the last component. A plugin's
//! programs may run as a less privileged program user that can plant a link in the service
//! directory; the plugin itself runs with the agent's rights, so writing (or reading) through
//! such a link would do for that user what it cannot do itself. WASI's stable std has no
//! `O_NOFOLLOW`, so the file is opened with libc (wasi-libc on wasm32-wasip2), as on Unix.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::path::Path;

/// How a file is opened.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    Read,
    /// Create or truncate, with these permission bits where the platform has them.
    Replace(u32),
    /// Create or append.
    Append,
    /// Write over an existing file from its start, without truncating it.
    Overwrite,
}

/// Opens `path` as `mode` says; a symbolic link at `path` is an error, never followed.
pub(crate) fn open(path: &Path, mode: Mode) -> io::Result<File> {
    let text = path
        .to_str()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path is not UTF-8"))?;
    let c = CString::new(text).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL"))?;
    let (flags, perms) = match mode {
        Mode::Read => (libc::O_RDONLY, 0),
        Mode::Replace(perms) => (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, perms),
        Mode::Append => (libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND, 0o644),
        Mode::Overwrite => (libc::O_WRONLY, 0),
    };
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            perms,
        )
    };
    if fd < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ELOOP) {
            return Err(io::Error::other(
                "it is a symbolic link, which is never followed",
            ));
        }
        return Err(err);
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn files_open_and_links_are_refused_in_every_mode() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        open(&file, Mode::Replace(0o600))
            .unwrap()
            .write_all(b"one\n")
            .unwrap();
        open(&file, Mode::Append)
            .unwrap()
            .write_all(b"two\n")
            .unwrap();
        let mut text = String::new();
        open(&file, Mode::Read)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "one\ntwo\n");

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        for mode in [
            Mode::Read,
            Mode::Replace(0o644),
            Mode::Append,
            Mode::Overwrite,
        ] {
            let err = open(&link, mode).unwrap_err();
            assert_eq!(
                err.to_string(),
                "it is a symbolic link, which is never followed"
            );
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "one\ntwo\n");
    }
}
