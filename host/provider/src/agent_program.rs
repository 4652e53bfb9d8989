//! Which program a local server's agent runs as: `stratus-agent` when it sits beside the
//! `stratus` binary (one build installs both), else `stratus agent`.
//!
//! The agent-only binary leaves out the control plane, the HTTP API and the CLI: about half the
//! code and 0.62x the relocations of `stratus`, which every one of a thousand agents maps,
//! relocates and faults in for itself (BENCHMARKS.md, "eighth round").

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The agent-only binary's file name, looked for beside `stratus`.
pub const AGENT_BINARY: &str = "stratus-agent";

/// How an agent process is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentProgram {
    /// The agent-only binary: `<path> --bootstrap …`.
    Standalone(PathBuf),
    /// The `stratus` binary's hidden subcommand: `<path> agent --bootstrap …`.
    Subcommand(PathBuf),
}

impl AgentProgram {
    /// The agent program for the `stratus` binary at `stratus`: the `stratus-agent` beside it
    /// when that is an executable regular file, writable by its owner alone (root or this
    /// user), answering `--version` with `version` (the caller's own), else `stratus` itself.
    /// A leftover `stratus-agent` of another release is passed over with a warning rather than
    /// run against a control plane it may not speak to.
    pub fn beside(stratus: &Path, version: &str) -> AgentProgram {
        let candidate = stratus.with_file_name(AGENT_BINARY);
        if let Err(why) = trusted_executable(&candidate) {
            if std::fs::symlink_metadata(&candidate).is_ok() {
                tracing::warn!(program = %candidate.display(), reason = why,
                    "not run as the agent; agents run as `stratus agent`");
            }
            return AgentProgram::Subcommand(stratus.to_path_buf());
        }
        match version_of(&candidate) {
            Some(found) if found == version => AgentProgram::Standalone(candidate),
            found => {
                tracing::warn!(program = %candidate.display(), expected = version,
                    found = found.as_deref().unwrap_or("no version"),
                    "not the agent of this build; agents run as `stratus agent`");
                AgentProgram::Subcommand(stratus.to_path_buf())
            }
        }
    }

    /// The program file.
    pub fn path(&self) -> &Path {
        match self {
            AgentProgram::Standalone(p) | AgentProgram::Subcommand(p) => p,
        }
    }

    /// A command that runs the agent; the caller adds the agent's own arguments.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(self.path());
        if let AgentProgram::Subcommand(_) = self {
            cmd.arg("agent");
        }
        cmd
    }
}

/// The `stratus` binary itself: `<path> agent …`.
impl From<PathBuf> for AgentProgram {
    fn from(stratus: PathBuf) -> AgentProgram {
        AgentProgram::Subcommand(stratus)
    }
}

/// An executable regular file (not a link: a symbolic link someone else put in a sticky
/// directory such as `/tmp` could be pointed elsewhere after this check) that only its owner
/// can change, the owner being root or this process's user: a `stratus-agent` someone else
/// planted is not run, let alone by root. `Err` says why not.
fn trusted_executable(path: &Path) -> Result<(), &'static str> {
    let meta = std::fs::symlink_metadata(path).map_err(|_| "cannot be read")?;
    let mode = meta.permissions().mode();
    let euid = nix::unistd::geteuid().as_raw();
    match () {
        _ if meta.file_type().is_symlink() => Err("is a symbolic link"),
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
    use std::io::Read;
    let mut child = Command::new(program)
        .arg("--version")
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .ok()?;
    let stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    // A reader of its own: a probe that never closes its output must not hold this thread.
    std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.take(VERSION_OUTPUT_BYTES).read_to_end(&mut text);
        let _ = tx.send(text);
    });
    let deadline = Instant::now() + VERSION_TIMEOUT;
    let text = rx.recv_timeout(VERSION_TIMEOUT).ok();
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

    #[test]
    fn the_agent_binary_of_the_same_version_beside_stratus_is_chosen() {
        let dir = tempfile::tempdir().unwrap();
        let stratus = script(dir.path(), "stratus", "exit 1", 0o755);
        let agent = script(dir.path(), AGENT_BINARY, "echo stratus-agent 1.2.3", 0o755);
        let program = AgentProgram::beside(&stratus, "1.2.3");
        assert_eq!(program, AgentProgram::Standalone(agent));
        let cmd = program.command();
        assert_eq!(
            cmd.get_args().count(),
            0,
            "no subcommand word for stratus-agent"
        );
    }

    #[test]
    fn without_an_agent_binary_stratus_runs_its_agent_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let stratus = script(dir.path(), "stratus", "exit 1", 0o755);
        let program = AgentProgram::beside(&stratus, "1.2.3");
        assert_eq!(program, AgentProgram::Subcommand(stratus));
        let cmd = program.command();
        assert_eq!(cmd.get_args().collect::<Vec<_>>(), ["agent"]);
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
                AgentProgram::Subcommand(stratus),
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
            AgentProgram::Subcommand(stratus)
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
            let stratus = script(dir.path(), "stratus", "exit 1", 0o755);
            let marker = dir.path().join("pid");
            let agent = script(
                dir.path(),
                AGENT_BINARY,
                &format!("echo $$ > {}; {body}", marker.display()),
                0o755,
            );
            let started = Instant::now();
            assert_eq!(
                AgentProgram::beside(&stratus, "1.2.3"),
                AgentProgram::Subcommand(stratus),
                "{body}"
            );
            assert!(
                started.elapsed() < VERSION_TIMEOUT * 2,
                "{body}: not given up"
            );
            let pgid: i32 = std::fs::read_to_string(&marker)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
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
            AgentProgram::Subcommand(stratus)
        );
    }
}
