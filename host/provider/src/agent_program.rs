//! Which program a local server's agent runs as: `stratus-agent` when it sits beside the
//! `stratus` binary (one build installs both), else `stratus agent`.
//!
//! The agent-only binary leaves out the control plane, the HTTP API and the CLI: about half the
//! code and 0.62x the relocations of `stratus`, which every one of a thousand agents maps,
//! relocates and faults in for itself (BENCHMARKS.md, "eighth round").

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The agent-only binary's file name, looked for beside `stratus`.
pub const AGENT_BINARY: &str = "stratus-agent";

/// How an agent process is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentProgram {
    /// The agent-only binary: `<path> --bootstrap …`.
    Standalone(Program),
    /// The `stratus` binary's hidden subcommand: `<path> agent --bootstrap …`.
    Subcommand(Program),
}

/// A program file, held open from when it was chosen when it could be: agents started later
/// run that file even once its path names another (an upgrade that renamed new binaries over
/// the old while the control plane runs would otherwise mix versions, and a file swapped in
/// after the checks would run unchecked).
#[derive(Debug, Clone)]
pub struct Program {
    path: PathBuf,
    /// Run through `/proc/self/fd/<fd>` (an ELF binary: the kernel opens it before it closes
    /// the descriptor at exec); `None` runs the path.
    file: Option<Arc<File>>,
}

/// Programs are the same when their paths are: the file held is the one the path named.
impl PartialEq for Program {
    fn eq(&self, other: &Program) -> bool {
        self.path == other.path
    }
}

impl Eq for Program {}

impl Program {
    /// The program at `path`, run by its path.
    pub fn at(path: PathBuf) -> Program {
        Program { path, file: None }
    }

    /// The program `file`, opened from `path`.
    fn held(path: PathBuf, file: File) -> Program {
        let file = Some(Arc::new(file));
        Program { path, file }
    }

    /// The path it was found at (what `ps` shows as its name).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A command that runs this program.
    fn command(&self) -> Command {
        match &self.file {
            Some(file) => {
                let mut cmd = Command::new(format!("/proc/self/fd/{}", file.as_raw_fd()));
                cmd.arg0(&self.path);
                cmd
            }
            None => Command::new(&self.path),
        }
    }
}

impl AgentProgram {
    /// The agent program for the `stratus` binary at `stratus`: the `stratus-agent` beside it
    /// when that is an ELF executable, writable by its owner alone (root or this user),
    /// answering `--version` with `version` (the caller's own), else `stratus` itself.
    /// A leftover `stratus-agent` of another release is passed over with a warning rather than
    /// run against a control plane it may not speak to. Either is held open (see [`Program`]).
    pub fn beside(stratus: &Path, version: &str) -> AgentProgram {
        let candidate = stratus.with_file_name(AGENT_BINARY);
        let why = match trusted_agent(&candidate, version) {
            Ok(file) => return AgentProgram::Standalone(Program::held(candidate, file)),
            Err(why) => why,
        };
        if let Some(why) = why {
            tracing::warn!(program = %candidate.display(), reason = %why,
                "not run as the agent; agents run as `stratus agent`");
        }
        AgentProgram::Subcommand(own_program(stratus))
    }

    /// The program file.
    pub fn path(&self) -> &Path {
        match self {
            AgentProgram::Standalone(p) | AgentProgram::Subcommand(p) => p.path(),
        }
    }

    /// A command that runs the agent; the caller adds the agent's own arguments.
    pub fn command(&self) -> Command {
        match self {
            AgentProgram::Standalone(p) => p.command(),
            AgentProgram::Subcommand(p) => {
                let mut cmd = p.command();
                cmd.arg("agent");
                cmd
            }
        }
    }
}

/// The `stratus` binary itself, run by its path: `<path> agent …`.
impl From<PathBuf> for AgentProgram {
    fn from(stratus: PathBuf) -> AgentProgram {
        AgentProgram::Subcommand(Program::at(stratus))
    }
}

/// `stratus` held open: the running binary itself when it is this process's (whatever its
/// path names now), else the file at the path; by its path if neither opens.
fn own_program(stratus: &Path) -> Program {
    let own = std::env::current_exe().is_ok_and(|me| me == stratus);
    let source = if own {
        Path::new("/proc/self/exe")
    } else {
        stratus
    };
    match File::open(source) {
        Ok(file) => Program::held(stratus.to_path_buf(), file),
        Err(_) => Program::at(stratus.to_path_buf()),
    }
}

/// The `stratus-agent` at `path`, opened, when it is trusted (see [`trusted_executable`]) and
/// answers `--version` with `version`. `Err(None)` when there is none; `Err(Some(why))` when
/// one is passed over.
fn trusted_agent(path: &Path, version: &str) -> Result<File, Option<String>> {
    // Not following a link; not waiting on a FIFO.
    let flags = nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(Some("is a symbolic link".into()));
        }
        Err(_) => return Err(Some("cannot be read".into())),
    };
    let meta = file
        .metadata()
        .map_err(|_| Some("cannot be read".to_string()))?;
    trusted_executable(&meta).map_err(|why| Some(why.to_string()))?;
    if !is_elf(&file) {
        return Err(Some(
            "is not an ELF executable (agents run from the file held open, which a script \
             cannot be)"
                .into(),
        ));
    }
    // Asked through the descriptor, as agents are started: what answers is what was checked
    // and what will run, whatever the path names meanwhile.
    let held = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    match version_of(&held) {
        Some(found) if found == version => Ok(file),
        Some(found) => Err(Some(format!(
            "answers `--version` with {found}, not {version}: not the agent of this build"
        ))),
        None => Err(Some(format!(
            "gives no `stratus-agent` version (this build is {version})"
        ))),
    }
}

/// Whether `file` starts with the ELF magic number.
fn is_elf(file: &File) -> bool {
    use std::os::unix::fs::FileExt;
    let mut magic = [0u8; 4];
    file.read_exact_at(&mut magic, 0).is_ok() && magic == *b"\x7fELF"
}

/// An executable regular file that only its owner can change, the owner being root or this
/// process's user (described by `meta`, of a file opened without following a link: one
/// someone else put in a sticky directory such as `/tmp` could be pointed elsewhere): a
/// `stratus-agent` someone else planted is not run, let alone by root. `Err` says why not.
fn trusted_executable(meta: &std::fs::Metadata) -> Result<(), &'static str> {
    let mode = meta.permissions().mode();
    let euid = nix::unistd::geteuid().as_raw();
    match () {
        _ if !meta.is_file() => Err("is not a regular file"),
        _ if mode & 0o111 == 0 => Err("is not executable"),
        _ if mode & 0o022 != 0 => Err("is writable by its group or by everyone"),
        _ if meta.uid() != 0 && meta.uid() != euid => Err("belongs to another user"),
        _ => Ok(()),
    }
}

/// How long `--version` may take: a real agent answers in milliseconds, and the control plane
/// does not listen until it has.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// The most of `--version`'s output read: `stratus-agent <version>` is a few dozen bytes.
const VERSION_OUTPUT_BYTES: u64 = 256;

/// The version a `stratus-agent` prints (`stratus-agent 0.1.0` → `0.1.0`), or `None` when it
/// does not run, prints something else, or has not answered and exited within
/// [`VERSION_TIMEOUT`] (its process group is then killed).
fn version_of(program: &Path) -> Option<String> {
    version_within(program, VERSION_TIMEOUT)
}

/// [`version_of`] with the time it may take as a parameter (tests give up sooner).
fn version_within(program: &Path, timeout: Duration) -> Option<String> {
    let child = version_probe(program).ok()?;
    version_answered(child, program, timeout)
}

/// `program --version` started in a process group of its own, so that giving up kills
/// whatever it started too.
fn version_probe(program: &Path) -> std::io::Result<std::process::Child> {
    Command::new(program)
        .arg("--version")
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
}

/// The version `child` printed, if it answered and exited within `timeout`; otherwise its
/// process group is killed and the answer is `None`.
fn version_answered(
    mut child: std::process::Child,
    program: &Path,
    timeout: Duration,
) -> Option<String> {
    use std::io::Read;
    let stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    // A reader of its own: a probe that never closes its output must not hold this thread.
    std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.take(VERSION_OUTPUT_BYTES).read_to_end(&mut text);
        let _ = tx.send(text);
    });
    let deadline = Instant::now() + timeout;
    let text = rx.recv_timeout(timeout).ok();
    let status = text.as_ref().and_then(|_| exit_by(&mut child, deadline));
    if status.is_none() {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        tracing::warn!(program = %program.display(), "`--version` did not answer in time");
        return None;
    }
    let text = String::from_utf8(text?).ok()?;
    let version = text.trim().strip_prefix(AGENT_BINARY)?.trim();
    (status?.success() && !version.is_empty()).then(|| version.to_string())
}

/// The child's exit status once it has exited, `None` if it still runs at `deadline`.
fn exit_by(child: &mut std::process::Child, deadline: Instant) -> Option<std::process::ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// A script answering the right version is passed over: agents run from the file held
    /// open, and a script run from a descriptor cannot read itself. (The real agent binary
    /// is chosen in the integration tests, `launch::hello_example_…`.)
    #[test]
    fn a_script_agent_binary_is_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let stratus = script(dir.path(), "stratus", "exit 1", 0o755);
        script(dir.path(), AGENT_BINARY, "echo stratus-agent 1.2.3", 0o755);
        let program = AgentProgram::beside(&stratus, "1.2.3");
        assert_eq!(program, AgentProgram::Subcommand(Program::at(stratus)));
        let why = trusted_agent(&dir.path().join(AGENT_BINARY), "1.2.3").unwrap_err();
        assert!(why.unwrap().contains("not an ELF executable"));
    }

    /// An ELF binary passes the checks and is asked its version (through the descriptor
    /// held, which works for an ELF binary only).
    #[test]
    fn the_version_is_asked_of_the_file_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AGENT_BINARY);
        // An ELF that answers `--version` with something else: passed over for that.
        std::fs::copy("/bin/echo", &path).unwrap();
        let why = trusted_agent(&path, "1.2.3").unwrap_err().unwrap();
        assert!(
            why.contains("answers `--version` with") || why.contains("no `stratus-agent`"),
            "{why}"
        );
        assert!(!why.contains("ELF"), "{why}");
    }

    #[test]
    fn without_an_agent_binary_stratus_runs_its_agent_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let stratus = script(dir.path(), "stratus", "exit 1", 0o755);
        let program = AgentProgram::beside(&stratus, "1.2.3");
        assert_eq!(program, AgentProgram::Subcommand(Program::at(stratus)));
        let cmd = program.command();
        assert_eq!(cmd.get_args().collect::<Vec<_>>(), ["agent"]);
    }

    /// A program held open runs the file it was opened as, after a new one was renamed over
    /// its path (as an upgrade does), under its path's name.
    #[test]
    fn a_held_program_runs_the_file_it_was_chosen_as() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prog");
        std::fs::copy("/bin/true", &path).unwrap();
        let program = Program::held(path.clone(), File::open(&path).unwrap());
        let replacement = dir.path().join("new");
        std::fs::copy("/bin/false", &replacement).unwrap();
        std::fs::rename(&replacement, &path).unwrap();
        assert!(!Command::new(&path).status().unwrap().success());
        assert!(program.command().status().unwrap().success());
        assert_eq!(
            program.command().get_program(),
            format!(
                "/proc/self/fd/{}",
                program.file.as_ref().unwrap().as_raw_fd()
            )
            .as_str()
        );
    }

    /// `stratus`, when it is the running binary, is held as that: a file renamed over its
    /// path later is not what agents run.
    #[test]
    fn the_running_binary_is_held_as_itself() {
        let me = std::env::current_exe().unwrap();
        let held = own_program(&me);
        let file = held.file.as_ref().expect("held open");
        let link = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap();
        assert_eq!(link, me);
        assert_eq!(held.path(), me);
        let elsewhere = own_program(Path::new("/nonexistent/stratus"));
        assert!(elsewhere.file.is_none());
    }

    #[test]
    fn an_agent_binary_of_another_version_or_not_runnable_is_passed_over() {
        let cases = [
            ("echo stratus-agent 1.2.2", 0o755),
            ("echo something else 1.2.3", 0o755),
            ("echo stratus-agent 1.2.3; exit 3", 0o755),
            ("echo stratus-agent 1.2.3", 0o644),
            ("echo stratus-agent 1.2.3", 0o775),
            ("echo stratus-agent 1.2.3", 0o757),
        ];
        for (body, mode) in cases {
            let dir = tempfile::tempdir().unwrap();
            let stratus = script(dir.path(), "stratus", "exit 1", 0o755);
            script(dir.path(), AGENT_BINARY, body, mode);
            assert_eq!(
                AgentProgram::beside(&stratus, "1.2.3"),
                AgentProgram::Subcommand(Program::at(stratus)),
                "{body} (mode {mode:o})"
            );
        }
    }

    /// A symbolic link is not followed, even to a good agent: whoever owns the link (in a
    /// sticky directory, not the owner of `stratus`) could point it elsewhere afterwards.
    #[test]
    fn a_symbolic_link_to_a_good_agent_is_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let stratus = script(dir.path(), "stratus", "exit 1", 0o755);
        let real = script(dir.path(), "real-agent", "echo stratus-agent 1.2.3", 0o755);
        std::os::unix::fs::symlink(&real, dir.path().join(AGENT_BINARY)).unwrap();
        assert_eq!(
            AgentProgram::beside(&stratus, "1.2.3"),
            AgentProgram::Subcommand(Program::at(stratus))
        );
    }

    /// A `--version` that hangs, or answers but leaves a child holding its output open, is
    /// given up after the timeout with its whole process group killed; endless output is read
    /// only up to the limit.
    #[test]
    fn a_version_probe_that_hangs_or_floods_is_given_up() {
        let cases = [
            "sleep 600",
            "echo stratus-agent 1.2.3; sleep 600 & wait",
            "yes stratus-agent 1.2.3",
        ];
        for body in cases {
            let dir = tempfile::tempdir().unwrap();
            let agent = script(dir.path(), AGENT_BINARY, body, 0o755);
            let timeout = Duration::from_millis(300);
            let started = Instant::now();
            let child = version_probe(&agent).unwrap();
            // The probe leads its own group, so the group's id is the child's.
            let pgid = child.id() as i32;
            let version = version_answered(child, &agent, timeout);
            // Far below the probe's 600 s, with room for a slow spawn on a loaded machine.
            let bound = timeout + Duration::from_secs(5);
            assert!(started.elapsed() < bound, "{body}: not given up");
            assert!(
                version.is_none() || body.starts_with("yes"),
                "{body}: {version:?}"
            );
            // The probe's group is gone: killpg finds no member (once an orphan killed with it
            // has been reaped by its new parent).
            let gone = || nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None);
            let deadline = Instant::now() + Duration::from_secs(5);
            while gone().is_ok() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(
                gone(),
                Err(nix::errno::Errno::ESRCH),
                "{body}: {} left running",
                agent.display()
            );
        }
    }

    #[test]
    fn a_directory_named_like_the_agent_binary_is_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let stratus = script(dir.path(), "stratus", "exit 1", 0o755);
        std::fs::create_dir(dir.path().join(AGENT_BINARY)).unwrap();
        assert_eq!(
            AgentProgram::beside(&stratus, "1.2.3"),
            AgentProgram::Subcommand(Program::at(stratus))
        );
    }
}
