//! Process containment: every process a plugin starts lives in a cgroup the agent owns, so
//! stopping it kills the whole tree (including daemons that double-forked and called `setsid`)
//! and `pids.max` bounds how many tasks it may have.
//!
//! What exists is detected at start-up from `/proc/self/mountinfo` and `/proc/self/cgroup`,
//! never assumed:
//! - a cgroup v2 hierarchy (pure, or the `unified` one of a hybrid host) gives `cgroup.kill`
//!   and, when its `pids` controller is available, `pids.max`;
//! - a cgroup v1 `pids` hierarchy gives `pids.max` on hybrid and v1 hosts.
//!
//! A [`Cgroup`] is one node present in every usable hierarchy at once. Where no hierarchy is
//! usable, [`descendants`] offers the fallback: the agent becomes a child subreaper and kills
//! every descendant it finds through `/proc`; the process limit is then not enforced.

mod cgroup;
pub mod descendants;
mod detect;

pub use cgroup::{Cgroup, Joiner};
pub use detect::Containment;

/// The uids (and gids) Stratus gives processes of its own accord: the local provider's
/// per-server program users, the SSH provider's slots and the ids its kill helpers take. They
/// lie above every range systems allocate and below systemd's foreign range, and none has a
/// passwd or group entry by design, so nothing asks a user database about them: with LDAP or
/// sssd in `nsswitch.conf`, every agent would otherwise query the directory for an id no entry
/// can have.
pub const STRATUS_UIDS: std::ops::Range<u32> = 0x7000_0000..0x7ffe_0000;

/// A cgroup operation that failed; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ContainmentError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cgroup {path} still has processes after being killed: {pids:?}")]
    StillPopulated {
        path: std::path::PathBuf,
        pids: Vec<u32>,
    },
    #[error("no cgroup hierarchy is usable on this host")]
    Unavailable,
}

impl ContainmentError {
    pub(crate) fn io(
        op: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> ContainmentError {
        let path = path.to_owned();
        move |source| ContainmentError::Io { op, path, source }
    }
}

/// Cgroup directory names come from deployment, server and service names: keep them to a
/// safe alphabet, so no name can climb out of its parent or clash with a control file.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && !name.starts_with("cgroup.")
        && !name.starts_with("pids.")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Set by the local provider in an agent's environment to the name of the cgroup it made for
/// that agent; the agent then moves itself into a leaf of it and puts services beside.
pub const AGENT_CGROUP_ENV: &str = "STRATUS_AGENT_CGROUP";
