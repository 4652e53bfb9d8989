//! The logs of supervised processes: `<log dir>/<owner>/<name>.log`, mode 0600, appended to by
//! the process itself (so it keeps running when the agent restarts) and kept bounded by the
//! agent: a log over [`MAX_PROCESS_LOG_BYTES`] has its newest part copied to `<name>.log.1`
//! and is emptied in place (the process writes with `O_APPEND`, so it carries on at the start).
//! The agent checks every second: a program that writes faster than that overshoots the bound
//! between two checks (a log sink process between the program and its file would make it
//! exact, at the cost of one more process per program).

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Largest a process log grows before it is rotated; one older part of the same size is kept.
pub const MAX_PROCESS_LOG_BYTES: u64 = 10 << 20;

/// Where `owner`'s process `name` logs: one directory per owner, so no two owners' names can
/// meet in one file name.
pub fn log_path(dir: &Path, owner: &str, name: &str) -> PathBuf {
    dir.join(owner).join(format!("{name}.log"))
}

/// Opens (creating, mode 0600) the log a process appends to.
pub fn open(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(NOFOLLOW)
        .open(path)
}

/// The log directory is the agent's own, but no link there is ever followed either.
const NOFOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;

/// Rotates every process log under `dir` that outgrew `max`; returns how many it rotated.
pub fn bound(dir: &Path, max: u64) -> usize {
    oversized(dir, max)
        .iter()
        .filter(|log| rotate(log, max).is_ok())
        .count()
}

/// The process logs under `dir` that outgrew `max` (a listing and a `stat` per log: cheap).
pub fn oversized(dir: &Path, max: u64) -> Vec<PathBuf> {
    let owners = std::fs::read_dir(dir).into_iter().flatten().flatten();
    let logs = owners.flat_map(|o| std::fs::read_dir(o.path()).into_iter().flatten().flatten());
    logs.filter(|l| l.file_name().to_string_lossy().ends_with(".log"))
        .filter(|l| l.metadata().is_ok_and(|m| m.is_file() && m.len() > max))
        .map(|l| l.path())
        .collect()
}

/// Keeps the newest `max` bytes of `path` in `path.1`, then empties `path` in place.
pub fn rotate(path: &Path, max: u64) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(NOFOLLOW)
        .open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut tail = Vec::new();
    f.by_ref().take(max).read_to_end(&mut tail)?;
    let older = path.with_extension("log.1");
    let _ = std::fs::remove_file(&older);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&older)
        .and_then(|mut o| std::io::Write::write_all(&mut o, &tail))?;
    f.set_len(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_log_over_the_bound_keeps_its_newest_part_and_the_writer_carries_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path(), "svc", "p");
        let mut writer = open(&path).unwrap();
        writer.write_all(&[b'a'; 300]).unwrap();
        writer.write_all(&[b'b'; 100]).unwrap();
        assert_eq!(
            bound(dir.path(), 1000),
            0,
            "under the bound nothing happens"
        );
        assert_eq!(bound(dir.path(), 150), 1);
        let older = std::fs::read(path.with_extension("log.1")).unwrap();
        assert_eq!(older.len(), 150);
        assert!(older.ends_with(&[b'b'; 100]));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        // The process's own descriptor appends at the new end, not at its old offset.
        writer.write_all(b"after").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"after");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&path.with_extension("log.1")), 0o600);
    }

    #[test]
    fn owners_cannot_share_a_log_file() {
        let d = Path::new("/l");
        assert_ne!(log_path(d, "a", "b-s1"), log_path(d, "a-b", "s1"));
    }
}
