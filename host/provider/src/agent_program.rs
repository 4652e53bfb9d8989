//! Which program a local server's agent runs as: `stratus-agent` when it sits beside the
//! `stratus` binary (one build installs both), else `stratus agent`.
//!
//! The agent-only binary leaves out the control plane, the HTTP API and the CLI: about half the
//! code and 0.62x the relocations of `stratus`, which every one of a thousand agents maps,
//! relocates and faults in for itself (BENCHMARKS.md, "eighth round").

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

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
        if !is_trusted_executable(&candidate) {
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

/// An executable regular file that only its owner can change, the owner being root or this
/// process's user: a `stratus-agent` someone else planted is not run, let alone by root.
fn is_trusted_executable(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let mode = meta.permissions().mode();
    let euid = nix::unistd::geteuid().as_raw();
    meta.is_file()
        && mode & 0o111 != 0
        && mode & 0o022 == 0
        && (meta.uid() == 0 || meta.uid() == euid)
}

/// The version a `stratus-agent` prints (`stratus-agent 0.1.0` → `0.1.0`), or `None` when it
/// does not run or prints something else.
fn version_of(program: &Path) -> Option<String> {
    let out = Command::new(program)
        .arg("--version")
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let version = text.trim().strip_prefix(AGENT_BINARY)?.trim();
    (out.status.success() && !version.is_empty()).then(|| version.to_string())
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
