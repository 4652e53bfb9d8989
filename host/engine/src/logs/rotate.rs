//! A log file bounded by size: past its limit it is renamed `<name>.1` (older ones shift to
//! `.2` …) and a fresh file starts, so a chatty component or plugin cannot fill the disk.
//!
//! Hand-written because the crates that rotate by size (`file-rotate`, `rolling-file`) bring
//! in date handling and compression we do not need, and `tracing-appender` rotates by time
//! only; this is one rename loop.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Size at which a log file is rotated.
pub const LOG_FILE_BYTES: u64 = 10 << 20;
/// Rotated files kept besides the current one (`.1`, `.2`): at most 30 MiB per log.
pub const LOG_FILES_KEPT: usize = 2;

/// An append-only file that rotates itself at `max_bytes`.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    kept: usize,
}

impl RotatingFile {
    /// Opens (or creates, mode 0600) `path` with the default bounds.
    pub fn open(path: &Path) -> io::Result<RotatingFile> {
        RotatingFile::with_bounds(path, LOG_FILE_BYTES, LOG_FILES_KEPT)
    }

    pub fn with_bounds(path: &Path, max_bytes: u64, kept: usize) -> io::Result<RotatingFile> {
        let file = append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes,
            kept,
        })
    }

    fn numbered(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.kept == 0 {
            self.file.set_len(0)?;
        } else {
            for n in (1..self.kept).rev() {
                let from = self.numbered(n);
                if from.exists() {
                    std::fs::rename(&from, self.numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.numbered(1))?;
            self.file = append(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        // A single write larger than the limit is cut: one line must not undo the bound.
        let room = buf.len().min(self.max_bytes.max(1) as usize);
        let n = self.file.write(&buf[..room])?;
        self.size += n as u64;
        // Report the whole buffer as written, so `write_all` does not retry the cut tail.
        Ok(if n == room { buf.len() } else { n })
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(p: &Path) -> u64 {
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    }

    #[test]
    fn files_rotate_at_the_limit_and_only_the_newest_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut f = RotatingFile::with_bounds(&path, 100, 2).unwrap();
        for i in 0..50 {
            f.write_all(format!("line {i:04} of the log\n").as_bytes())
                .unwrap();
        }
        for p in [path.clone(), f.numbered(1), f.numbered(2)] {
            assert!(size(&p) > 0 && size(&p) <= 100, "{}", p.display());
        }
        assert!(!f.numbered(3).exists());
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("line 0049")
        );
        assert!(
            std::fs::read_to_string(f.numbered(1))
                .unwrap()
                .contains("line 0045")
        );
    }

    #[test]
    fn an_oversized_write_is_cut_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut f = RotatingFile::with_bounds(&path, 100, 1).unwrap();
        f.write_all(&[b'a'; 1000]).unwrap();
        assert_eq!(size(&path), 100);
    }

    #[test]
    fn a_reopened_file_counts_what_it_already_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        std::fs::write(&path, [b'a'; 90]).unwrap();
        let mut f = RotatingFile::with_bounds(&path, 100, 1).unwrap();
        f.write_all(&[b'b'; 20]).unwrap();
        assert_eq!(size(&f.numbered(1)), 90);
        assert_eq!(size(&path), 20);
    }
}
