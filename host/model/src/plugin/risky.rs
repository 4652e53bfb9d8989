//! Programs known to run arbitrary code. Granting one to a plugin is granting everything the
//! agent's user can do, because the plugin chooses the arguments (`sh -c`, `env X`, `find
//! -exec`, `python3 -c`, `sed e`, a Puppet manifest...). Validation and `stratus plugin
//! inspect` warn about them; they are not refused, because configuration-management adapters
//! exist precisely to run such tools.
//!
//! Matching is by file name (`/usr/bin/python3.11` is `python3.11`), so the list catches the
//! programs whose purpose is to run other code wherever they are installed. It is a warning
//! list, not a complete catalogue of programs with an escape hatch: many more (editors,
//! pagers, `tar`, `git`...) can be coaxed into running commands.

use std::path::Path;

/// Why a program counts as one that runs arbitrary code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Risk {
    /// A command shell.
    Shell,
    /// A program whose job is to run another program (`env`, `find -exec`, `sudo`...).
    Launcher,
    /// A language interpreter that runs code given on its command line or stdin.
    Interpreter,
    /// A configuration-management tool that applies code (manifests, playbooks, recipes).
    ConfigurationManagement,
}

impl Risk {
    /// What kind of program it is, for messages.
    pub fn kind(self) -> &'static str {
        match self {
            Risk::Shell => "a shell",
            Risk::Launcher => "a program launcher",
            Risk::Interpreter => "an interpreter",
            Risk::ConfigurationManagement => "a configuration-management tool",
        }
    }

    /// Why granting it matters, as the end of a warning sentence.
    pub fn why(self) -> String {
        format!(
            "runs other programs ({}): a plugin granted it can run anything as the agent's user",
            self.kind()
        )
    }
}

/// How a list entry matches a file name.
#[derive(Clone, Copy)]
enum Pattern {
    /// Exactly this name.
    Exact(&'static str),
    /// This name, optionally followed by a version made of digits and dots (`python3.11`).
    Versioned(&'static str),
    /// Like `Versioned`, or this name followed by `-` and anything (`ansible-playbook`).
    Family(&'static str),
}

use Pattern::{Exact, Family, Versioned};

/// The list: every entry runs code its caller chooses.
const RISKY: &[(Pattern, Risk)] = &[
    (Exact("sh"), Risk::Shell),
    (Exact("bash"), Risk::Shell),
    (Exact("dash"), Risk::Shell),
    (Exact("zsh"), Risk::Shell),
    (Exact("ksh"), Risk::Shell),
    (Exact("mksh"), Risk::Shell),
    (Exact("csh"), Risk::Shell),
    (Exact("tcsh"), Risk::Shell),
    (Exact("fish"), Risk::Shell),
    (Exact("busybox"), Risk::Shell),
    (Exact("env"), Risk::Launcher),
    (Exact("xargs"), Risk::Launcher),
    (Exact("find"), Risk::Launcher),
    (Exact("nice"), Risk::Launcher),
    (Exact("ionice"), Risk::Launcher),
    (Exact("nohup"), Risk::Launcher),
    (Exact("timeout"), Risk::Launcher),
    (Exact("setsid"), Risk::Launcher),
    (Exact("stdbuf"), Risk::Launcher),
    (Exact("taskset"), Risk::Launcher),
    (Exact("sudo"), Risk::Launcher),
    (Exact("su"), Risk::Launcher),
    (Exact("doas"), Risk::Launcher),
    (Exact("runuser"), Risk::Launcher),
    (Exact("chroot"), Risk::Launcher),
    (Exact("unshare"), Risk::Launcher),
    (Exact("nsenter"), Risk::Launcher),
    (Exact("flock"), Risk::Launcher),
    (Exact("watch"), Risk::Launcher),
    (Exact("strace"), Risk::Launcher),
    (Exact("ltrace"), Risk::Launcher),
    (Exact("gdb"), Risk::Launcher),
    (Exact("systemd-run"), Risk::Launcher),
    (Versioned("python"), Risk::Interpreter),
    (Versioned("pypy"), Risk::Interpreter),
    (Versioned("perl"), Risk::Interpreter),
    (Versioned("ruby"), Risk::Interpreter),
    (Exact("node"), Risk::Interpreter),
    (Exact("nodejs"), Risk::Interpreter),
    (Exact("deno"), Risk::Interpreter),
    (Family("php"), Risk::Interpreter),
    (Versioned("lua"), Risk::Interpreter),
    (Versioned("luajit"), Risk::Interpreter),
    (Versioned("tclsh"), Risk::Interpreter),
    (Exact("awk"), Risk::Interpreter),
    (Exact("gawk"), Risk::Interpreter),
    (Exact("mawk"), Risk::Interpreter),
    (Exact("nawk"), Risk::Interpreter),
    // GNU sed's `e` command runs its pattern space as a shell command.
    (Exact("sed"), Risk::Interpreter),
    (Exact("java"), Risk::Interpreter),
    (Exact("puppet"), Risk::ConfigurationManagement),
    (Family("ansible"), Risk::ConfigurationManagement),
    (Exact("chef-client"), Risk::ConfigurationManagement),
    (Exact("chef-solo"), Risk::ConfigurationManagement),
    (Family("salt"), Risk::ConfigurationManagement),
];

/// Whether `program` (a path, or a bare file name) runs arbitrary code, judged by its file
/// name. `service:bin/sh` is judged as `sh`.
pub fn risk_of(program: &str) -> Option<Risk> {
    let name = Path::new(program.strip_prefix("service:").unwrap_or(program))
        .file_name()?
        .to_str()?;
    RISKY
        .iter()
        .find(|(pattern, _)| pattern.matches(name))
        .map(|(_, risk)| *risk)
}

/// The warning for a plugin granted `program`, or `None` when the program is not on the list.
pub fn warning(program: &str) -> Option<String> {
    Some(format!("{program}, which {}", risk_of(program)?.why()))
}

impl Pattern {
    fn matches(self, name: &str) -> bool {
        let version = |rest: &str| rest.chars().all(|c| c.is_ascii_digit() || c == '.');
        match self {
            Exact(n) => name == n,
            Versioned(n) => name.strip_prefix(n).is_some_and(version),
            Family(n) => name
                .strip_prefix(n)
                .is_some_and(|rest| version(rest) || rest.starts_with('-')),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shells_launchers_interpreters_and_cm_tools_are_risky() {
        for p in [
            "/bin/sh",
            "/usr/bin/env",
            "/usr/bin/find",
            "/usr/bin/python3",
            "/usr/bin/python3.11",
            "/usr/bin/perl5.36.0",
            "/usr/bin/php8.2",
            "/usr/bin/php-cgi",
            "/usr/bin/lua5.4",
            "/usr/bin/sed",
            "/usr/bin/puppet",
            "/usr/bin/ansible-playbook",
            "/usr/bin/chef-client",
            "/usr/bin/salt-call",
            "service:bin/sh",
            "busybox",
        ] {
            assert!(risk_of(p).is_some(), "{p} should be risky");
        }
        assert_eq!(risk_of("/usr/bin/python3.11"), Some(Risk::Interpreter));
        assert_eq!(risk_of("/bin/dash"), Some(Risk::Shell));
    }

    #[test]
    fn ordinary_programs_and_look_alikes_are_not() {
        for p in [
            "/usr/sbin/haproxy",
            "/usr/sbin/mariadbd",
            "/usr/bin/echo",
            "/usr/bin/shred",
            "/usr/bin/envsubst",
            "/usr/bin/python-config-tool",
            "/usr/bin/pythonista",
            "/usr/bin/seduce",
            "/usr/bin/saltpeter",
            "service:bin/greeter",
            "/",
            "",
        ] {
            assert_eq!(risk_of(p), None, "{p} should not be risky");
        }
    }

    #[test]
    fn the_warning_names_the_program_and_why() {
        assert_eq!(
            warning("/usr/bin/env").unwrap(),
            "/usr/bin/env, which runs other programs (a program launcher): a plugin granted \
             it can run anything as the agent's user"
        );
        assert_eq!(warning("/usr/sbin/haproxy"), None);
    }
}
