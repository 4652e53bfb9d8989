//! Which environment variables a plugin may hand to the programs it runs (`host.run`,
//! `host.spawn`): the manifest's `program-env` names, minus the variables that make a program
//! load or run code of the caller's choosing.
//!
//! A plugin can write files into the directories it is granted, so any variable that makes a
//! dynamic loader or an interpreter pick up a file (a shared library, a module, a start-up
//! script) turns "run this allowed program" into "run my native code as the agent's user".
//! Those variables are refused even when a manifest lists them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

/// Names that are always refused. An entry ending in `*` is a prefix.
///
/// The first group is glibc's `UNSECURE_ENVVARS` (what the loader itself drops for setuid
/// programs) with `LD_*` and `MALLOC_*` as prefixes; the second makes interpreters and
/// runtimes load code or options (Python, Perl, Ruby, Node, shells, the JVM, Lua, Tcl,
/// OpenSSL engines, Facter's custom facts); the third names programs other programs start.
pub const REFUSED_ENV: &[&str] = &[
    // glibc's unsecure-environment list.
    "LD_*",
    "GCONV_PATH",
    "GETCONF_DIR",
    "GLIBC_TUNABLES",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "MALLOC_*",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "TMPDIR",
    "TZDIR",
    // Interpreter and runtime hooks.
    "PYTHON*",
    "PERL5LIB",
    "PERL5OPT",
    "PERLLIB",
    "PERL5DB",
    "PERLIO",
    "RUBYLIB",
    "RUBYOPT",
    "GEM_HOME",
    "GEM_PATH",
    "BUNDLE_GEMFILE",
    "NODE_OPTIONS",
    "NODE_PATH",
    "BASH_ENV",
    "ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "BASH_FUNC_*",
    "PS4",
    "IFS",
    "CDPATH",
    "GLOBIGNORE",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "CLASSPATH",
    "LUA_PATH*",
    "LUA_CPATH*",
    "LUA_INIT*",
    "TCLLIBPATH",
    "OPENSSL_CONF",
    "OPENSSL_ENGINES",
    "OPENSSL_MODULES",
    "FACTERLIB",
    // Programs that programs run.
    "PAGER",
    "EDITOR",
    "VISUAL",
    "SHELL",
    "BROWSER",
    "MANPAGER",
    "LESSOPEN",
    "LESSCLOSE",
    "PROMPT_COMMAND",
    "ZDOTDIR",
    "GIT_*",
    "RSYNC_RSH",
    "SSH_ASKPASS",
    "SUDO_ASKPASS",
];

/// Whether `name` is a loader or interpreter variable, whatever the manifest says.
pub fn is_refused(name: &str) -> bool {
    REFUSED_ENV.iter().any(|p| pattern_matches(p, name))
}

fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// One `program-env` entry: an exact variable name, or a prefix ending in `*`
/// (`FACTER_*`). Names use letters, digits and `_`, and do not start with a digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvPattern(String);

impl EnvPattern {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether variable `name` is covered by this entry.
    pub fn matches(&self, name: &str) -> bool {
        pattern_matches(&self.0, name)
    }

    /// Whether every name `other` covers is covered by `self` (for operator narrowing).
    pub fn covers(&self, other: &EnvPattern) -> bool {
        match self.0.strip_suffix('*') {
            None => self == other,
            Some(prefix) => other.0.starts_with(prefix),
        }
    }

    /// A refused variable this entry would let through, if any: the entry itself when it is
    /// an exact name, else the refused name or prefix it overlaps (`*` or `L*` cover `LD_*`).
    pub fn refused_overlap(&self) -> Option<&'static str> {
        let mine = self.0.strip_suffix('*');
        REFUSED_ENV.iter().copied().find(|r| {
            let theirs = r.strip_suffix('*');
            match (mine, theirs) {
                (None, _) => pattern_matches(r, &self.0),
                (Some(m), None) => r.starts_with(m),
                (Some(m), Some(t)) => m.starts_with(t) || t.starts_with(m),
            }
        })
    }
}

impl TryFrom<String> for EnvPattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let name = s.strip_suffix('*').unwrap_or(&s);
        let valid = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && (!name.is_empty() || s == "*");
        if !valid {
            return Err(format!(
                "program-env entry `{s}` must be a variable name (letters, digits, `_`), \
                 optionally ending in `*` for a prefix"
            ));
        }
        Ok(EnvPattern(s))
    }
}

impl From<EnvPattern> for String {
    fn from(p: EnvPattern) -> String {
        p.0
    }
}

impl fmt::Display for EnvPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why one variable may not be passed to a program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvRefusal {
    #[error("environment variable {0} makes programs load code and is never passed")]
    Loader(String),
    #[error("environment variable {0} is not in the plugin's program-env")]
    NotListed(String),
    #[error("environment variable PATH entry `{0}` must be an absolute directory")]
    RelativePath(String),
    #[error(
        "environment variable PATH entry `{0}` lies inside a directory the plugin can write, \
         where it could plant programs"
    )]
    PathInGrant(String),
    #[error(
        "environment variable PATH entry `{0}` is under /proc or /dev, which resolve to \
         something else in the program (/proc/self/cwd is its working directory)"
    )]
    PathInProc(String),
    #[error(
        "environment variable PATH entry `{0}` is writable by others than root (owned by \
         another user, or group- or world-writable, like /tmp), where programs could be planted"
    )]
    PathWritable(String),
    #[error("environment variable {0} names a locale by path; only locale names are passed")]
    LocalePath(String),
}

/// Checks the variables a plugin passes to a program. `granted` are the host directories the
/// plugin is granted; no `PATH` entry may lie inside one.
pub fn check_program_env<'a>(
    allowed: &[EnvPattern],
    granted: impl IntoIterator<Item = &'a Path> + Clone,
    env: &[(String, String)],
) -> Result<(), EnvRefusal> {
    for (name, value) in env {
        if is_refused(name) {
            return Err(EnvRefusal::Loader(name.clone()));
        }
        if !allowed.iter().any(|p| p.matches(name)) {
            return Err(EnvRefusal::NotListed(name.clone()));
        }
        if name == "PATH" {
            check_path(value, granted.clone())?;
        }
        // A locale named by path makes glibc parse files the plugin may have written.
        let locale = name == "LANG" || name == "LANGUAGE" || name.starts_with("LC_");
        if locale && value.contains('/') {
            return Err(EnvRefusal::LocalePath(name.clone()));
        }
    }
    Ok(())
}

/// Each `PATH` entry decides which binary a program runs for a bare command name.
fn check_path<'a>(
    value: &str,
    granted: impl IntoIterator<Item = &'a Path> + Clone,
) -> Result<(), EnvRefusal> {
    for entry in value.split(':') {
        let Some(dir) = super::normalize(Path::new(entry)) else {
            return Err(EnvRefusal::RelativePath(entry.to_string()));
        };
        if dir.starts_with("/proc") || dir.starts_with("/dev") {
            return Err(EnvRefusal::PathInProc(entry.to_string()));
        }
        // Compare the resolved path too, so a symlink to a granted dir does not slip through.
        let real = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
        let inside = granted.clone().into_iter().any(|g| {
            let g_real = std::fs::canonicalize(g).unwrap_or_else(|_| g.to_owned());
            dir.starts_with(g) || real.starts_with(&g_real)
        });
        if inside {
            return Err(EnvRefusal::PathInGrant(entry.to_string()));
        }
        if !only_root_writes(&real) {
            return Err(EnvRefusal::PathWritable(entry.to_string()));
        }
    }
    Ok(())
}

/// Whether only root can change what `dir` holds: it (or, where it does not exist yet, the
/// nearest directory above it, where it could be made) is root's and not group- or
/// world-writable.
fn only_root_writes(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    dir.ancestors()
        .find_map(|d| std::fs::metadata(d).ok())
        .is_some_and(|m| m.uid() == 0 && m.mode() & 0o022 == 0)
}

#[cfg(test)]
#[path = "program_env_tests.rs"]
mod tests;
