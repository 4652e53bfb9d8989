//! Programs known to run arbitrary code. Granting one to a plugin is granting everything the
//! programs' user can do (the agent's program user, or root for a `run-as = "root"` CM
//! adapter), because the plugin chooses the arguments and files (`sh -c`, `env X`, `find
//! -exec`, `python3 -c`, `sed e`, haproxy's `lua-load`, a Puppet manifest...). Validation
//! and `stratus plugin inspect` warn about them; they are not refused, because servers and
//! configuration-management adapters exist precisely to run such tools.
//!
//! Matching is by file name (`/usr/bin/python3.11` is `python3.11`), so the list catches the
//! programs whose purpose is to run other code wherever they are installed. It is a warning
//! list, not a complete catalogue of programs with an escape hatch: many more (editors,
//! pagers, `tar`, `git`...) can be coaxed into running commands.

use crate::plugin::capabilities::RunAs;
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
    /// A server or tool that loads code named by its arguments or configuration (haproxy's
    /// `lua-load`, mariadbd's `--plugin-load`, openssl engines, a compiler's output).
    LoadsCode,
    /// A program with an escape to a shell or command (`\\!` in the mariadb client, `!` in
    /// an editor or pager, tar's `--checkpoint-action=exec`, git's hooks and aliases).
    CommandEscape,
    /// A program that writes any file its arguments name (`cp`, `tee`, `curl -o`), so it can
    /// replace what another program later runs or reads.
    WritesFiles,
}

impl Risk {
    /// What kind of program it is, for messages.
    pub fn kind(self) -> &'static str {
        match self {
            Risk::Shell => "a shell",
            Risk::Launcher => "a program launcher",
            Risk::Interpreter => "an interpreter",
            Risk::ConfigurationManagement => "a configuration-management tool",
            Risk::LoadsCode => "it loads code its arguments or configuration name",
            Risk::CommandEscape => "it has an escape that runs commands",
            Risk::WritesFiles => "it writes any file its arguments name",
        }
    }

    /// Why granting it matters, as the end of a warning sentence. Programs run as the
    /// agent's program user (see `run-as`), so that is the reach of what they run.
    pub fn why(self) -> String {
        let what = match self {
            Risk::WritesFiles => "writes what the plugin chooses",
            _ => "runs other programs",
        };
        format!(
            "{what} ({}): a plugin granted it can do anything its programs' user can",
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
    // Found by an outside test: each ran code the plugin chose.
    // `lua-load` in a config runs Lua with `os.execute`.
    (Exact("haproxy"), Risk::LoadsCode),
    // `--plugin-dir` / `--plugin-load-add` load a shared library.
    (Exact("mariadbd"), Risk::LoadsCode),
    (Exact("mysqld"), Risk::LoadsCode),
    (Exact("mariadb-install-db"), Risk::LoadsCode),
    (Exact("mysql_install_db"), Risk::LoadsCode),
    // The client's `\!` (`system`) runs a shell command from the SQL it reads.
    (Exact("mariadb"), Risk::CommandEscape),
    (Exact("mysql"), Risk::CommandEscape),
    // The dynamic loader runs any binary it is given as its first argument.
    (Family("ld-linux"), Risk::Launcher),
    (Exact("ld-linux.so.2"), Risk::Launcher),
    (Exact("ld.so"), Risk::Launcher),
    // Each runs the program in its arguments (with a tweak: timing, scheduling, credentials,
    // limits, namespaces, a new session or group).
    (Exact("time"), Risk::Launcher),
    (Exact("chrt"), Risk::Launcher),
    (Exact("setpriv"), Risk::Launcher),
    (Exact("prlimit"), Risk::Launcher),
    (Exact("script"), Risk::Launcher),
    (Exact("start-stop-daemon"), Risk::Launcher),
    (Exact("capsh"), Risk::Launcher),
    (Exact("sg"), Risk::Launcher),
    (Exact("socat"), Risk::Launcher),
    (Exact("setarch"), Risk::Launcher),
    (Exact("linux32"), Risk::Launcher),
    (Exact("linux64"), Risk::Launcher),
    (Exact("logsave"), Risk::Launcher),
    (Exact("dbus-run-session"), Risk::Launcher),
    (Exact("fakeroot"), Risk::Launcher),
    (Exact("ssh-agent"), Risk::Launcher),
    (Exact("perf"), Risk::Launcher),
    // `--filter=` (split), `-TT` (zip), `.shell`/`.system` (sqlite3), `-P` pager (man).
    (Exact("split"), Risk::CommandEscape),
    (Exact("zip"), Risk::CommandEscape),
    (Family("sqlite3"), Risk::CommandEscape),
    (Exact("man"), Risk::CommandEscape),
    // `--checkpoint-action=exec=`, `--to-command`, `--use-compress-program`.
    (Exact("tar"), Risk::CommandEscape),
    // Hooks, aliases, `core.sshCommand`, `-c` config: all run commands.
    (Exact("git"), Risk::CommandEscape),
    // A Makefile's recipes are shell commands.
    (Exact("make"), Risk::CommandEscape),
    // `-o ProxyCommand=`, `LocalCommand`; rsync's `-e`/`--rsh`.
    (Exact("ssh"), Risk::CommandEscape),
    (Exact("rsync"), Risk::CommandEscape),
    // Editors and pagers: `:!`, `!`, `|`.
    (Family("vim"), Risk::CommandEscape),
    (Exact("vim.basic"), Risk::CommandEscape),
    (Exact("vim.tiny"), Risk::CommandEscape),
    (Exact("vi"), Risk::CommandEscape),
    (Exact("view"), Risk::CommandEscape),
    (Exact("less"), Risk::CommandEscape),
    (Exact("more"), Risk::CommandEscape),
    // Maintainer scripts of any package file given; apt's `-o APT::Update::Pre-Invoke`.
    (Exact("dpkg"), Risk::CommandEscape),
    (Exact("apt"), Risk::CommandEscape),
    (Exact("apt-get"), Risk::CommandEscape),
    // They build and can run (`-wrapper`, plugins) code from their inputs.
    (Family("gcc"), Risk::LoadsCode),
    (Exact("cc"), Risk::LoadsCode),
    (Family("clang"), Risk::LoadsCode),
    // `-engine` / `-provider` load a shared library.
    (Exact("openssl"), Risk::LoadsCode),
    // `-o`/`-O` write any file; `file://` reads any.
    (Exact("curl"), Risk::WritesFiles),
    (Exact("wget"), Risk::WritesFiles),
    (Exact("tee"), Risk::WritesFiles),
    (Exact("dd"), Risk::WritesFiles),
    (Exact("cp"), Risk::WritesFiles),
    (Exact("install"), Risk::WritesFiles),
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

/// The warning for a plugin whose programs run as `run_as`: `None` for the program user.
pub fn run_as_warning(run_as: RunAs) -> Option<String> {
    (run_as == RunAs::Root).then(|| {
        "runs its programs as root (run-as = \"root\"): what they run can do anything on the \
         server, including reading the agent's credential"
            .to_string()
    })
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

    /// What an outside test used to escape, each under its own kind.
    #[test]
    fn the_tested_escapes_are_flagged() {
        for (p, risk) in [
            ("/usr/sbin/haproxy", Risk::LoadsCode),
            ("/usr/sbin/mariadbd", Risk::LoadsCode),
            ("/usr/sbin/mysqld", Risk::LoadsCode),
            ("/usr/bin/mariadb", Risk::CommandEscape),
            ("/usr/bin/mysql", Risk::CommandEscape),
            ("/lib64/ld-linux-x86-64.so.2", Risk::Launcher),
            (
                "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                Risk::Launcher,
            ),
            ("/usr/bin/time", Risk::Launcher),
            ("/usr/bin/chrt", Risk::Launcher),
            ("/usr/bin/setpriv", Risk::Launcher),
            ("/usr/bin/prlimit", Risk::Launcher),
            ("/usr/bin/tar", Risk::CommandEscape),
            ("/usr/bin/git", Risk::CommandEscape),
            ("/usr/bin/vim.basic", Risk::CommandEscape),
            ("/usr/bin/gcc-12", Risk::LoadsCode),
            ("/usr/bin/openssl", Risk::LoadsCode),
            ("/usr/bin/curl", Risk::WritesFiles),
            ("/usr/bin/tee", Risk::WritesFiles),
            ("/usr/bin/socat", Risk::Launcher),
            ("/usr/sbin/start-stop-daemon", Risk::Launcher),
            ("/usr/bin/setarch", Risk::Launcher),
            ("/usr/bin/linux64", Risk::Launcher),
            ("/sbin/logsave", Risk::Launcher),
            ("/usr/bin/dbus-run-session", Risk::Launcher),
            ("/usr/bin/fakeroot", Risk::Launcher),
            ("/usr/bin/ssh-agent", Risk::Launcher),
            ("/usr/bin/perf", Risk::Launcher),
            ("/usr/bin/split", Risk::CommandEscape),
            ("/usr/bin/zip", Risk::CommandEscape),
            ("/usr/bin/sqlite3", Risk::CommandEscape),
            ("/usr/bin/man", Risk::CommandEscape),
        ] {
            assert_eq!(risk_of(p), Some(risk), "{p}");
        }
    }

    #[test]
    fn ordinary_programs_and_look_alikes_are_not() {
        for p in [
            "/usr/bin/echo",
            "/usr/bin/id",
            "/usr/bin/cat",
            "/usr/bin/gccgo-like",
            "/usr/bin/timeout-not",
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
    fn only_root_programs_warn() {
        assert_eq!(run_as_warning(RunAs::ProgramUser), None);
        assert!(run_as_warning(RunAs::Root).unwrap().contains("as root"));
    }

    #[test]
    fn the_warning_names_the_program_and_why() {
        assert_eq!(
            warning("/usr/bin/env").unwrap(),
            "/usr/bin/env, which runs other programs (a program launcher): a plugin granted \
             it can do anything its programs' user can"
        );
        assert_eq!(warning("/usr/bin/echo"), None);
    }
}
