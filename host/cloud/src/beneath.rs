//! File operations confined beneath a directory a plugin may write, following no symbolic
//! link on the way.
//!
//! A plugin can create symlinks inside its own directories (WASI allows it, and the sandbox
//! never follows one out). The agent runs as root and writes into those same directories
//! (packages, data sources, CM credentials), so every such write resolves its path with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from a directory fd (or, on kernels
//! without openat2, one `openat(O_NOFOLLOW)` per component): a link anywhere on the path is
//! refused (`ELOOP`), never followed. Files are replaced by an atomic rename of a
//! fresh file whose mode was set on its own fd, so a planted link or hard link at the target
//! is replaced, not written through.

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Mode of directories the agent creates beneath a plugin directory.
const DIR_MODE: u32 = 0o755;

/// Deepest nesting [`Beneath::usage`] walks: each level holds descriptors and a stack frame,
/// so a plugin's 10,000-deep tree must be an error, not an agent crash.
pub const MAX_DEPTH: usize = 128;

/// A directory opened by fd; everything below it resolves without following links.
#[derive(Debug)]
pub struct Beneath {
    fd: OwnedFd,
    /// For error messages and the paths reported back; never re-resolved.
    path: PathBuf,
}

fn resolve() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// An error naming `path`, turning `ELOOP`/`EXDEV` into a plain refusal.
fn named(path: &Path, e: io::Error) -> io::Error {
    let refused = [rustix::io::Errno::LOOP, rustix::io::Errno::XDEV]
        .map(|c| Some(c.raw_os_error()))
        .contains(&e.raw_os_error());
    match refused {
        true => io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{}: refusing to follow a symbolic link (or leave the directory) on the way",
                path.display()
            ),
        ),
        false => io::Error::new(e.kind(), format!("{}: {e}", path.display())),
    }
}

/// Opens `rel` (plain components only) beneath `dir` without following any link:
/// `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, which covers the last component too; on a
/// kernel without openat2 (before 5.6), one `openat(O_NOFOLLOW)` per component, refusing a
/// link it finds with `ELOOP` like openat2 does.
fn open_beneath(
    dir: &OwnedFd,
    rel: &Path,
    flags: OFlags,
    mode: u32,
    try_openat2: bool,
) -> rustix::io::Result<OwnedFd> {
    // openat2 refuses a mode without O_CREAT.
    let mode = match flags.contains(OFlags::CREATE) {
        true => Mode::from_raw_mode(mode),
        false => Mode::empty(),
    };
    if try_openat2 {
        match rustix::fs::openat2(dir, rel, flags, mode, resolve()) {
            Err(rustix::io::Errno::NOSYS) => {}
            done => return done,
        }
    }
    let parts: Vec<&OsStr> = parts(rel).map_err(|_| rustix::io::Errno::INVAL)?;
    let Some((last, parents)) = parts.split_last() else {
        return rustix::fs::openat(dir, ".", flags, mode);
    };
    let mut at = dir.try_clone().map_err(|_| rustix::io::Errno::MFILE)?;
    let component = |at: &OwnedFd, name: &OsStr, flags: OFlags| {
        let link = rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Symlink);
        if link {
            return Err(rustix::io::Errno::LOOP);
        }
        rustix::fs::openat(at, name, flags | OFlags::NOFOLLOW, mode)
    };
    for p in parents {
        at = component(&at, p, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC)?;
    }
    component(&at, last, flags)
}

/// The plain relative components of `rel`; anything else (`..`, `/`, `.`) is refused.
fn parts(rel: &Path) -> io::Result<Vec<&OsStr>> {
    rel.components()
        .map(|c| match c {
            Component::Normal(p) => Ok(p),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a plain relative path", rel.display()),
            )),
        })
        .collect()
}

impl Beneath {
    /// Opens `root` itself as the anchor. `root` is a path the agent chose (the server root),
    /// not one a plugin can write, so it is opened normally.
    pub fn open(root: &Path) -> io::Result<Beneath> {
        let fd = rustix::fs::open(
            root,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| named(root, e.into()))?;
        Ok(Beneath {
            fd,
            path: root.to_path_buf(),
        })
    }

    /// The path this directory was reached by (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Always non-blocking: a FIFO a plugin's program planted where the agent reads must fail
    /// the caller's file-type check at once, not hold an agent thread in `open` until a
    /// writer comes (regular files and directories ignore the flag).
    fn open_at(&self, rel: &Path, flags: OFlags, mode: u32) -> io::Result<OwnedFd> {
        let flags = flags | OFlags::CLOEXEC | OFlags::NONBLOCK;
        open_beneath(&self.fd, rel, flags, mode, true)
            .map_err(|e| named(&self.path.join(rel), e.into()))
    }

    /// This directory again, on a descriptor of its own.
    fn dup(&self) -> io::Result<Beneath> {
        Ok(Beneath {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// Opens the existing directory `rel` beneath this one; an empty `rel` names this one.
    pub fn open_dir(&self, rel: &Path) -> io::Result<Beneath> {
        if parts(rel)?.is_empty() {
            return self.dup();
        }
        let fd = self.open_at(rel, OFlags::DIRECTORY | OFlags::RDONLY, 0)?;
        Ok(Beneath {
            fd,
            path: self.path.join(rel),
        })
    }

    /// Opens `rel` beneath this directory, creating missing directories (mode 0755) one
    /// component at a time; an existing link on the way is refused.
    pub fn create_dir_all(&self, rel: &Path) -> io::Result<Beneath> {
        // Most calls find the directory there already (an agent prepares a hook's directories
        // before every call): one open with the same refusals, instead of three system calls
        // per component. Any failure (missing, a link, a path longer than PATH_MAX) goes the
        // long way, which refuses or creates it component by component.
        if let Ok(found) = self.open_dir(rel) {
            return Ok(found);
        }
        let mut dir = self.dup()?;
        for part in parts(rel)? {
            match rustix::fs::mkdirat(&dir.fd, part, Mode::from_raw_mode(DIR_MODE)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(named(&dir.path.join(part), e.into())),
            }
            dir = dir.open_dir(Path::new(part))?;
        }
        Ok(dir)
    }

    /// Splits `rel` into its parent directory (created) and its file name.
    fn parent_of<'a>(&self, rel: &'a Path) -> io::Result<(Beneath, &'a OsStr)> {
        let parts = parts(rel)?;
        let (name, parents) = parts.split_last().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "an empty path names no file")
        })?;
        let parent: PathBuf = parents.iter().collect();
        Ok((self.create_dir_all(&parent)?, name))
    }

    /// Replaces `rel` with a regular file holding `bytes` and mode `mode`: a fresh file is
    /// written (its mode set on its fd) and renamed over the target, so a link already there
    /// is replaced, never written through.
    pub fn write_file(&self, rel: &Path, bytes: &[u8], mode: u32) -> io::Result<PathBuf> {
        self.written(rel, bytes, mode)?.commit()
    }

    /// [`Beneath::write_file`] without waiting for the disk ([`NewFile::commit_unsynced`]).
    pub fn write_file_unsynced(&self, rel: &Path, bytes: &[u8], mode: u32) -> io::Result<PathBuf> {
        self.written(rel, bytes, mode)?.commit_unsynced()
    }

    fn written(&self, rel: &Path, bytes: &[u8], mode: u32) -> io::Result<NewFile> {
        let mut new = self.new_file(rel, mode)?;
        let target = new.target.clone();
        new.file.write_all(bytes).map_err(|e| named(&target, e))?;
        Ok(new)
    }

    /// A fresh file with mode `mode` that replaces `rel` only when [`NewFile::commit`] is
    /// called, so content of any size can be streamed into it; dropped uncommitted, it is
    /// removed and `rel` is left as it was.
    pub fn new_file(&self, rel: &Path, mode: u32) -> io::Result<NewFile> {
        let (dir, name) = self.parent_of(rel)?;
        let tmp = format!(".stratus-tmp-{}", crate::keys::random_token().expose());
        let fd = dir.open_at(
            Path::new(&tmp),
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY,
            0o600,
        )?;
        let target = dir.path.join(name);
        let new = NewFile {
            file: std::fs::File::from(fd),
            name: name.to_os_string(),
            tmp,
            target,
            dir,
            committed: false,
        };
        rustix::fs::fchmod(&new.file, Mode::from_raw_mode(mode))
            .map_err(|e| named(&new.target, e.into()))?;
        Ok(new)
    }

    /// Removes the file (or link) `rel` itself; whether it existed.
    pub fn remove_file(&self, rel: &Path) -> io::Result<bool> {
        let parts = parts(rel)?;
        let Some((name, parents)) = parts.split_last() else {
            return Ok(false);
        };
        let parent: PathBuf = parents.iter().collect();
        let dir = match self.open_dir(&parent) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        match rustix::fs::unlinkat(&dir.fd, *name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(named(&dir.path.join(name), e.into())),
        }
    }

    /// Erases the regular file `rel`: empties it, then removes its name. Emptying reaches every
    /// other name the file was given (a hard link a plugin made elsewhere), which removing one
    /// name would not. A link or anything but a regular file is only removed.
    pub fn erase_file(&self, rel: &Path) -> io::Result<bool> {
        parts(rel)?;
        if let Ok(fd) = self.open_at(rel, OFlags::WRONLY, 0) {
            let regular = rustix::fs::fstat(&fd)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile);
            if regular {
                rustix::fs::ftruncate(&fd, 0).map_err(|e| named(&self.path.join(rel), e.into()))?;
            }
        }
        self.remove_file(rel)
    }

    /// Reads the regular file `rel`, at most `limit` bytes (more is an error).
    pub fn read_file(&self, rel: &Path, limit: u64) -> io::Result<Vec<u8>> {
        parts(rel)?;
        let fd = self.open_at(rel, OFlags::RDONLY, 0)?;
        let path = self.path.join(rel);
        let stat = rustix::fs::fstat(&fd).map_err(|e| named(&path, e.into()))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", path.display()),
            ));
        }
        let mut bytes = Vec::new();
        std::fs::File::from(fd)
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| named(&path, e))?;
        if bytes.len() as u64 > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is larger than {limit} bytes", path.display()),
            ));
        }
        Ok(bytes)
    }

    /// Disk use of everything beneath this directory (allocated blocks, so sparse files count
    /// for what they occupy), counting at most `max_entries` entries; links are counted, not
    /// followed.
    pub fn usage(&self, max_entries: u64) -> io::Result<Usage> {
        let mut usage = Usage::default();
        self.add_usage(&mut usage, max_entries, 0)?;
        Ok(usage)
    }

    fn add_usage(&self, usage: &mut Usage, max_entries: u64, depth: usize) -> io::Result<()> {
        if depth > MAX_DEPTH {
            return Err(io::Error::other(format!(
                "{} is nested deeper than {MAX_DEPTH} directories",
                self.path.display()
            )));
        }
        let mut dir =
            rustix::fs::Dir::read_from(&self.fd).map_err(|e| named(&self.path, e.into()))?;
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(|e| named(&self.path, e.into()))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            usage.entries += 1;
            if usage.entries > max_entries {
                return Err(io::Error::other(format!(
                    "{} holds more than {max_entries} entries",
                    self.path.display()
                )));
            }
            let stat = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| named(&self.path.join(name), e.into()))?;
            usage.bytes += stat.st_blocks as u64 * 512;
            if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
                self.open_dir(Path::new(name))?
                    .add_usage(usage, max_entries, depth + 1)?;
            }
        }
        Ok(())
    }
}

impl AsFd for Beneath {
    fn as_fd(&self) -> rustix::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A file being written beneath a directory under a temporary name (see [`Beneath::new_file`]).
#[derive(Debug)]
pub struct NewFile {
    file: std::fs::File,
    dir: Beneath,
    tmp: String,
    name: std::ffi::OsString,
    target: PathBuf,
    committed: bool,
}

impl NewFile {
    /// The open file, to write the content into.
    pub fn file(&mut self) -> &mut std::fs::File {
        &mut self.file
    }

    /// The path the file will have once committed (for messages).
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Flushes the file to disk and renames it over its target; returns the target's path.
    pub fn commit(self) -> io::Result<PathBuf> {
        self.file.sync_all().map_err(|e| named(&self.target, e))?;
        self.rename()
    }

    /// Renames the file over its target without waiting for the disk: for content that need
    /// not survive a crash of the machine, only of the process.
    pub fn commit_unsynced(self) -> io::Result<PathBuf> {
        self.rename()
    }

    fn rename(mut self) -> io::Result<PathBuf> {
        rustix::fs::renameat(&self.dir.fd, self.tmp.as_str(), &self.dir.fd, &self.name)
            .map_err(|e| named(&self.target, e.into()))?;
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = rustix::fs::unlinkat(&self.dir.fd, self.tmp.as_str(), AtFlags::empty());
        }
    }
}

/// What [`Beneath::usage`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub entries: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Both paths (openat2 and the per-component fallback) refuse a link at every position
    /// and open plain paths.
    #[test]
    fn both_resolvers_refuse_links_and_open_plain_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), "x").unwrap();
        symlink("b", root.join("a/lb")).unwrap();
        symlink("f", root.join("a/b/lf")).unwrap();
        symlink("/", root.join("up")).unwrap();
        let dir = Beneath::open(root).unwrap();
        for openat2 in [true, false] {
            let open =
                |rel: &str, flags| open_beneath(&dir.fd, Path::new(rel), flags, 0o600, openat2);
            assert!(open("a/b/f", OFlags::RDONLY).is_ok(), "openat2={openat2}");
            assert!(open("a/b", OFlags::DIRECTORY).is_ok(), "openat2={openat2}");
            for rel in ["a/lb/f", "a/b/lf", "up/etc", "up"] {
                assert_eq!(
                    open(rel, OFlags::RDONLY).unwrap_err(),
                    rustix::io::Errno::LOOP,
                    "{rel} openat2={openat2}"
                );
            }
            let created = open("a/b/new", OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY);
            assert!(created.is_ok(), "openat2={openat2}");
            std::fs::remove_file(root.join("a/b/new")).unwrap();
            assert!(open("a/lb/new", OFlags::CREATE | OFlags::WRONLY).is_err());
        }
    }

    /// A FIFO where the agent reads, erases or looks for a directory fails (or is removed) at
    /// once: no writer ever comes, so a blocking open would hang the test.
    #[test]
    fn a_fifo_never_blocks_the_agent() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        let fifo = tmp.path().join("d/fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let dir = Beneath::open(tmp.path()).unwrap();
        let err = dir.read_file(Path::new("d/fifo"), 10).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(dir.open_dir(Path::new("d/fifo")).is_err());
        assert!(dir.erase_file(Path::new("d/fifo")).unwrap());
        assert!(!fifo.exists());
    }
}
