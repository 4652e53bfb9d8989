//! The files `host.run-with-files` connects to a program's standard input and output.
//!
//! Paths come from the plugin, which can plant symbolic links, FIFOs and hard links in its own
//! directories, while the agent opening them runs as root. So each path must be absolute,
//! free of `..`, inside a directory of the call's [`DirMap`] that the plugin was granted with
//! the access it needs, and is opened beneath that directory with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: a link anywhere on the way is refused,
//! never followed. Opening is non-blocking, so a FIFO fails its file-type check at once
//! instead of holding an agent thread. The opened `File` becomes the child's descriptor, so
//! the data never passes through the plugin or the agent's memory.

use crate::capabilities::{Access, Capabilities};
use crate::command::Refusal;
use crate::env::DirMap;
use rustix::fd::OwnedFd;
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::fs::File;
use std::path::{Component, Path, PathBuf};

/// Mode of a standard-output file the agent creates: only its owner reads what a program
/// wrote (a dump may hold passwords).
pub(crate) const STDOUT_FILE_MODE: u32 = 0o600;

/// Which of the two streams a path is for; it decides the access needed and the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdin,
    Stdout,
}

impl Stream {
    fn field(self) -> &'static str {
        match self {
            Stream::Stdin => "stdin-file",
            Stream::Stdout => "stdout-file",
        }
    }
}

/// The opened files; `None` where the plugin named none.
#[derive(Debug, Default)]
pub(crate) struct Opened {
    pub stdin: Option<File>,
    pub stdout: Option<File>,
}

/// Checks and opens both paths; the first refusal wins.
pub(crate) fn open(
    caps: &Capabilities,
    dirs: &DirMap,
    stdin: Option<&str>,
    stdout: Option<&str>,
) -> Result<Opened, Refusal> {
    let mut opened = Opened::default();
    if let Some(p) = stdin {
        opened.stdin = Some(open_one(caps, dirs, p, Stream::Stdin)?);
    }
    if let Some(p) = stdout {
        opened.stdout = Some(open_one(caps, dirs, p, Stream::Stdout)?);
    }
    Ok(opened)
}

fn open_one(caps: &Capabilities, dirs: &DirMap, path: &str, s: Stream) -> Result<File, Refusal> {
    let (root, rel) = locate(caps, dirs, path, s)?;
    let dir = rustix::fs::open(
        &root,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Refusal::invalid(format!("{} {path}: {}: {e}", s.field(), root.display())))?;
    let fd = open_beneath(&dir, &rel, s).map_err(|e| refusal(path, s, e))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| refusal(path, s, e))?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => {}
        FileType::Directory => return Err(not_regular(path, s, "directory")),
        FileType::Fifo => return Err(not_regular(path, s, "FIFO")),
        FileType::Socket => return Err(not_regular(path, s, "socket")),
        FileType::CharacterDevice | FileType::BlockDevice => {
            return Err(not_regular(path, s, "device"));
        }
        _ => return Err(not_regular(path, s, "special file")),
    }
    // A file with another name may be one outside the grant that a program linked in:
    // truncating it would empty that one, and reading it as root would hand a program-user
    // program what it could not read (where fs.protected_hardlinks is off).
    if st.st_nlink > 1 {
        let verb = if s == Stream::Stdout { "write" } else { "read" };
        return Err(Refusal::denied(format!(
            "{} {path} has other hard links; refusing to {verb} through them",
            s.field()
        )));
    }
    if s == Stream::Stdout {
        rustix::fs::ftruncate(&fd, 0).map_err(|e| refusal(path, s, e))?;
    }
    // Regular files ignore O_NONBLOCK, but the program's descriptor should not carry it.
    let flags = rustix::fs::fcntl_getfl(&fd).map_err(|e| refusal(path, s, e))?;
    rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK).map_err(|e| refusal(path, s, e))?;
    Ok(File::from(fd))
}

/// The granted directory holding `path` (with the access `s` needs) and the path below it.
fn locate(
    caps: &Capabilities,
    dirs: &DirMap,
    path: &str,
    s: Stream,
) -> Result<(PathBuf, PathBuf), Refusal> {
    let field = s.field();
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(Refusal::invalid(format!(
            "{field} `{path}` must be an absolute path"
        )));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(Refusal::denied(format!(
            "{field} {path} contains `..`, which is not allowed"
        )));
    }
    let mut read_only = false;
    for grant in &caps.dirs {
        let Some(root) = dirs.get(&grant.dir) else {
            continue;
        };
        let Ok(rel) = p.strip_prefix(root) else {
            continue;
        };
        if s == Stream::Stdout && grant.access != Access::ReadWrite {
            read_only = true;
            continue;
        }
        if rel.as_os_str().is_empty() {
            return Err(not_regular(path, s, "directory"));
        }
        return Ok((root.clone(), rel.to_path_buf()));
    }
    Err(Refusal::denied(match read_only {
        true => format!("{field} {path} is in a directory the plugin may only read"),
        false => format!("{field} {path} is not inside a granted directory"),
    }))
}

/// Opens `rel` beneath `dir`, following no link; standard output is created if missing.
fn open_beneath(dir: &OwnedFd, rel: &Path, s: Stream) -> rustix::io::Result<OwnedFd> {
    let base = OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::NOFOLLOW;
    let (flags, mode) = match s {
        Stream::Stdin => (base | OFlags::RDONLY, Mode::empty()),
        Stream::Stdout => (
            base | OFlags::WRONLY | OFlags::CREATE,
            Mode::from_raw_mode(STDOUT_FILE_MODE),
        ),
    };
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    rustix::fs::openat2(dir, rel, flags, mode, resolve)
}

/// A failed open or check as the plugin sees it: links and escapes are denials.
fn refusal(path: &str, s: Stream, e: Errno) -> Refusal {
    let field = s.field();
    match e {
        Errno::LOOP => Refusal::denied(format!(
            "{field} {path} is a symbolic link or is reached through one"
        )),
        Errno::XDEV => Refusal::denied(format!("{field} {path} leads out of its directory")),
        // A FIFO opened for writing without a reader, or a socket.
        Errno::NXIO => not_regular(path, s, "FIFO or socket"),
        Errno::ISDIR => not_regular(path, s, "directory"),
        Errno::NOSYS => Refusal::invalid(format!(
            "{field} {path}: this kernel has no openat2 (Linux 5.6 or later is needed)"
        )),
        e => Refusal::invalid(format!("{field} {path}: {}", std::io::Error::from(e))),
    }
}

fn not_regular(path: &str, s: Stream, what: &str) -> Refusal {
    Refusal::denied(format!(
        "{} {path} is a {what}; it must be a regular file",
        s.field()
    ))
}

#[cfg(test)]
#[path = "command_files_tests.rs"]
mod tests;
