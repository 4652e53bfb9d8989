//! Who the programs a plugin starts (`host.run`, `host.spawn`) run as.
//!
//! The agent runs as root (it configures a server), but a granted program runs with
//! arguments and files the plugin chose: haproxy's `lua-load`, mariadbd's `--plugin-load`,
//! `cat <root>/agent/credential`. So when the agent is root, every program runs as an
//! unprivileged *program user*: a numeric uid and gid with no supplementary groups and
//! `PR_SET_NO_NEW_PRIVS` (a setuid binary cannot regain root). The drop happens in the child
//! after it joined its cgroups (joining needs root on the v1 `pids` hierarchy) and before exec.
//!
//! Which user: the local provider gives each server a uid of its own, derived from its address
//! lease (`stratus_provider::program_uid`), and passes it as `stratus agent --program-user`;
//! an operator's `STRATUS_PROGRAM_USER` makes one user shared by all servers; without either,
//! [`DEFAULT_PROGRAM_USER`].
//!
//! The plugin (inside the agent, so root) and the agent create files in the plugin's writable
//! directories; before a program starts, [`hand_over`] gives those directories to the program
//! user, walking beneath them without following a link.

use rustix::fd::{AsFd, AsRawFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// `nobody:nogroup` (65534:65534), for an agent no provider gave a user (another provider,
/// `stratus plugin call`): present on every common distribution and owning no files, so
/// programs can reach nothing but world-readable files and what they are handed. The local
/// provider gives each server its own uid instead, since processes of one uid can signal and
/// trace each other.
pub const DEFAULT_PROGRAM_USER: ProgramUser = ProgramUser {
    uid: 65534,
    gid: 65534,
};

/// Most entries [`hand_over`] changes or inspects in one directory tree, so a plugin's
/// million-file tree costs it an error, not the agent minutes of `lchown`.
pub const MAX_HAND_OVER_ENTRIES: u64 = 200_000;

/// Deepest nesting [`hand_over`] walks (each level holds a descriptor and a stack frame).
pub const MAX_HAND_OVER_DEPTH: usize = 128;

/// The variable in a plugin's own (WASI) environment naming the user its programs run as:
/// the user name, or the uid where it has none. Absent when programs keep the agent's user.
pub const PROGRAM_USER_ENV: &str = "STRATUS_PROGRAM_USER";

/// An unprivileged uid and gid (never 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramUser {
    pub uid: u32,
    pub gid: u32,
}

/// A `--program-user` value that is not `<uid>`, `<uid>:<gid>` or a known user name, with
/// neither id 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "program user `{0}` must be `<uid>`, `<uid>:<gid>` or the name of a user, and not root (0)"
)]
pub struct InvalidProgramUser(pub String);

impl std::str::FromStr for ProgramUser {
    type Err = InvalidProgramUser;
    /// `<uid>` (the gid is the same number), `<uid>:<gid>`, or a user name (with its primary
    /// group) from the password database.
    fn from_str(s: &str) -> Result<ProgramUser, InvalidProgramUser> {
        let bad = || InvalidProgramUser(s.to_string());
        let named = !s.is_empty() && !s.starts_with(|c: char| c.is_ascii_digit() || c == '-');
        let ids = match named {
            true => nix::unistd::User::from_name(s)
                .ok()
                .flatten()
                .map(|u| (u.uid.as_raw().to_string(), u.gid.as_raw().to_string())),
            false => None,
        };
        let (uid, gid) = match &ids {
            Some((u, g)) => (u.as_str(), g.as_str()),
            None => s.split_once(':').unwrap_or((s, s)),
        };
        let uid: u32 = uid.parse().map_err(|_| bad())?;
        let gid: u32 = gid.parse().map_err(|_| bad())?;
        // u32::MAX is (uid_t)-1, which setuid reads as "leave unchanged".
        if uid == 0 || gid == 0 || uid == u32::MAX || gid == u32::MAX {
            return Err(bad());
        }
        Ok(ProgramUser { uid, gid })
    }
}

impl fmt::Display for ProgramUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

impl ProgramUser {
    /// The user programs run as in a process with effective uid `euid`: `configured` (or the
    /// default) when root, `None` otherwise (an unprivileged agent has nothing to drop, and
    /// could not switch users anyway).
    pub fn for_agent(configured: Option<ProgramUser>, euid: u32) -> Option<ProgramUser> {
        (euid == 0).then(|| configured.unwrap_or(DEFAULT_PROGRAM_USER))
    }

    /// The user's name from the password database, else its uid. A uid of Stratus's own
    /// ([`stratus_containment::STRATUS_UIDS`], e.g. a server's program user) has no entry by
    /// design, so no database is asked: every agent asking every NSS source (LDAP, sssd,
    /// systemd-userdb) for it would cost each server a lookup that cannot succeed.
    pub fn name(self) -> String {
        if stratus_containment::STRATUS_UIDS.contains(&self.uid) {
            return self.uid.to_string();
        }
        match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(self.uid)) {
            Ok(Some(u)) => u.name,
            _ => self.uid.to_string(),
        }
    }

    /// Becomes this user for good: no new privileges, no supplementary groups, then gid and
    /// uid (real, effective and saved). Only raw system calls, so it is async-signal-safe and
    /// may run between fork and exec.
    pub fn become_self(self) -> io::Result<()> {
        use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};
        nix::sys::prctl::set_no_new_privs()?;
        setgroups(&[])?;
        setgid(Gid::from_raw(self.gid))?;
        setuid(Uid::from_raw(self.uid))?;
        Ok(())
    }
}

/// The first of `/`, the directories on the way to `path`, and `path` itself that `user`
/// may not search (or, for a file, execute), judged by owner, group and mode bits (ACLs
/// aside).
pub fn unsearchable(path: &Path, user: ProgramUser) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut dirs: Vec<&Path> = path.ancestors().collect();
    dirs.reverse();
    dirs.into_iter().find_map(|dir| {
        let m = std::fs::metadata(dir).ok()?;
        let bits = match (m.uid() == user.uid, m.gid() == user.gid) {
            (true, _) => m.mode() >> 6,
            (false, true) => m.mode() >> 3,
            _ => m.mode(),
        };
        (bits & 0o1 == 0).then(|| dir.to_path_buf())
    })
}

/// A program file the agent opened for a child that cannot reach it by its path (the sealed
/// copy of a package in the agent-private `<root>/agent/`): the child executes
/// `/proc/self/fd/<n>`, a link the kernel follows without searching the directories again;
/// the file's own execute bits still apply. Keep it until the child was spawned.
pub(crate) struct ProgramFile {
    fd: OwnedFd,
}

impl ProgramFile {
    /// Opens `program` when `user` cannot reach it by its path; `None` when it can.
    pub fn for_user(program: &Path, user: Option<ProgramUser>) -> io::Result<Option<ProgramFile>> {
        let Some(user) = user else { return Ok(None) };
        if unsearchable(program, user).is_none() {
            return Ok(None);
        }
        let fd = rustix::fs::open(program, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| named(program, e))?;
        Ok(Some(ProgramFile { fd }))
    }

    /// What the child executes.
    pub fn exec_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// Keeps the descriptor open across exec in the child only (the parent's copy stays
    /// close-on-exec, so no other program the agent starts inherits it).
    pub fn attach(&self, cmd: &mut tokio::process::Command) {
        let raw = self.fd.as_raw_fd();
        // SAFETY: fcntl(F_SETFD) is async-signal-safe; `raw` is open in the forked child.
        unsafe {
            cmd.pre_exec(move || {
                let fd = rustix::fd::BorrowedFd::borrow_raw(raw);
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
                Ok(())
            });
        }
    }
}

/// The command that starts `program` as `user`, and the file it executes when `user`
/// cannot reach `program` by its path (keep it until after spawn). `argv[0]` is `program`.
pub(crate) fn command(
    program: &Path,
    user: Option<ProgramUser>,
) -> io::Result<(tokio::process::Command, Option<ProgramFile>)> {
    let Some(file) = ProgramFile::for_user(program, user)? else {
        return Ok((tokio::process::Command::new(program), None));
    };
    let mut cmd = tokio::process::Command::new(file.exec_path());
    cmd.arg0(program);
    file.attach(&mut cmd);
    Ok((cmd, Some(file)))
}

/// What [`hand_over`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandOver {
    /// Entries whose owner was changed.
    pub changed: u64,
    /// Entries looked at.
    pub entries: u64,
}

/// Gives `dir` and everything beneath it to `user` without following any link: links are
/// changed themselves (`lchown`), directories are opened with `O_NOFOLLOW`, and a regular
/// file with more than one hard link is left alone (it may be another file's other name, e.g.
/// one a root CM run linked in). Entries already owned by `user` are not touched.
pub fn hand_over(dir: &Path, user: ProgramUser) -> io::Result<HandOver> {
    let fd = rustix::fs::open(
        dir,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| named(dir, e))?;
    let mut done = HandOver::default();
    give(&fd, dir, user, &mut done)?;
    walk(&fd, dir, user, &mut done, 0)?;
    Ok(done)
}

fn named(path: &Path, e: rustix::io::Errno) -> io::Error {
    let e = io::Error::from(e);
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Changes the owner of the file `fd` refers to (an `O_PATH` or directory fd), if needed.
fn give(fd: &OwnedFd, path: &Path, user: ProgramUser, done: &mut HandOver) -> io::Result<()> {
    let st = rustix::fs::fstat(fd).map_err(|e| named(path, e))?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if st.st_uid == user.uid && st.st_gid == user.gid {
        return Ok(());
    }
    // Only files, directories and links (the link itself) are the plugin's work; a device
    // node (made by root) or a socket handed over would give the program user what it opens.
    if !matches!(
        kind,
        FileType::RegularFile | FileType::Directory | FileType::Symlink
    ) {
        return Ok(());
    }
    if kind == FileType::RegularFile && st.st_nlink > 1 {
        tracing::warn!(path = %path.display(), "not handing a hard-linked file to the program user");
        return Ok(());
    }
    // A secret the agent wrote (a CM credential, mode 0600 and root's) stays the agent's: the
    // program user is shared by every plugin of the server (of the machine, with an operator's
    // shared user), so handing it over would hand it to all of them. A tool that needs it must
    // run as root (`run-as = "root"`).
    if kind == FileType::RegularFile && st.st_uid == 0 && st.st_mode & 0o077 == 0 {
        return Ok(());
    }
    let (uid, gid) = (
        rustix::fs::Uid::from_raw(user.uid),
        rustix::fs::Gid::from_raw(user.gid),
    );
    rustix::fs::chownat(fd, "", Some(uid), Some(gid), AtFlags::EMPTY_PATH)
        .map_err(|e| named(path, e))?;
    done.changed += 1;
    Ok(())
}

fn walk(
    dir: &OwnedFd,
    path: &Path,
    user: ProgramUser,
    done: &mut HandOver,
    depth: usize,
) -> io::Result<()> {
    if depth > MAX_HAND_OVER_DEPTH {
        return Err(io::Error::other(format!(
            "{} is nested deeper than {MAX_HAND_OVER_DEPTH} directories",
            path.display()
        )));
    }
    let mut entries = rustix::fs::Dir::read_from(dir).map_err(|e| named(path, e))?;
    while let Some(entry) = entries.read() {
        let entry = entry.map_err(|e| named(path, e))?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        done.entries += 1;
        if done.entries > MAX_HAND_OVER_ENTRIES {
            return Err(io::Error::other(format!(
                "{} holds more than {MAX_HAND_OVER_ENTRIES} entries",
                path.display()
            )));
        }
        let child = path.join(name);
        // O_PATH | O_NOFOLLOW names the entry itself, a link included, and opens nothing.
        let fd = match rustix::fs::openat(
            dir.as_fd(),
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // Removed meanwhile by a running program: nothing to hand over.
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(named(&child, e)),
        };
        give(&fd, &child, user, done)?;
        let st = rustix::fs::fstat(&fd).map_err(|e| named(&child, e))?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let sub = rustix::fs::openat(
                dir.as_fd(),
                name,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| named(&child, e))?;
            walk(&sub, &child, user, done, depth + 1)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "program_user_tests.rs"]
mod tests;
