//! Adoption: the supervisor writes down every process it keeps (`<log dir>/.supervised.json`,
//! mode 0600, rewritten whole at each change), each with its pid and the start time the kernel
//! gave it (`/proc/<pid>/stat` field 22). A supervisor started again on the same log directory
//! (an agent that restarted) takes each one back only if that pid still has that start time,
//! so a reused pid is never adopted; a recorded process that is gone is started again.

use crate::program_user::ProgramUser;
use crate::supervisor::ProcessSpec;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The table's file name: a leading dot, which no owner or process name may have, so it can
/// never meet an owner's log directory.
const TABLE: &str = ".supervised.json";
/// Largest table read back: 4096 processes with long arguments fit well within it.
const MAX_TABLE_BYTES: u64 = 16 << 20;

/// One kept process as written down.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Record {
    pub owner: String,
    pub name: String,
    /// `None` while it waits for its next start.
    pub pid: Option<u32>,
    pub start_time: Option<u64>,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: PathBuf,
    pub processes: u64,
    /// The uid and gid it runs as, when not the supervisor's own.
    pub user: Option<(u32, u32)>,
}

impl Record {
    pub fn new(
        owner: &str,
        spec: &ProcessSpec,
        user: Option<ProgramUser>,
        pid: Option<u32>,
    ) -> Record {
        Record {
            owner: owner.to_owned(),
            name: spec.name.clone(),
            pid,
            start_time: pid.and_then(start_time),
            program: spec.program.clone(),
            args: spec.args.clone(),
            env: spec.env.clone(),
            working_dir: spec.working_dir.clone(),
            processes: spec.processes,
            user: user.map(|u| (u.uid, u.gid)),
        }
    }

    /// The spec to start it again with. The spawning call's secrets are not written down, so
    /// its output can no longer be redacted: reports leave it out (see `Supervisor::keep`).
    pub fn spec(&self) -> (ProcessSpec, Option<ProgramUser>) {
        let spec = ProcessSpec {
            name: self.name.clone(),
            program: self.program.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            working_dir: self.working_dir.clone(),
            processes: self.processes,
            redactor: Default::default(),
        };
        let user = self.user.map(|(uid, gid)| ProgramUser { uid, gid });
        (spec, user)
    }

    /// Whether its pid is still the process it recorded: same start time, and leading its
    /// own process group (as every supervised process does).
    pub fn still_running(&self) -> Option<u32> {
        let (pid, recorded) = (self.pid?, self.start_time?);
        let same = start_time(pid) == Some(recorded)
            && nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32)))
                .is_ok_and(|g| g.as_raw() as u32 == pid);
        same.then_some(pid)
    }
}

/// The start time of `pid` in clock ticks since boot (`/proc/<pid>/stat` field 22); `None`
/// when there is no such process or it is a zombie (it ended, only its parent has not reaped
/// it).
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after the last `)`.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (the state), so field 22 is `fields[19]`.
    if fields.first().is_none_or(|s| *s == "Z" || *s == "X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

fn table_path(log_dir: &Path) -> PathBuf {
    log_dir.join(TABLE)
}

/// Writes the table whole (a new file renamed over the old one, so a crash never leaves half
/// of it).
pub(crate) fn save(log_dir: &Path, records: &[Record]) -> std::io::Result<()> {
    std::fs::create_dir_all(log_dir)?;
    let text = serde_json::to_vec(records).map_err(std::io::Error::other)?;
    let tmp = log_dir.join(format!("{TABLE}.new"));
    let _ = std::fs::remove_file(&tmp);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?
        .write_all(&text)?;
    std::fs::rename(&tmp, table_path(log_dir))
}

/// The table a previous supervisor left (empty when there is none or it cannot be read).
pub(crate) fn load(log_dir: &Path) -> Vec<Record> {
    let path = table_path(log_dir);
    let read = || -> std::io::Result<Vec<u8>> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_TABLE_BYTES), &mut bytes)?;
        Ok(bytes)
    };
    match read() {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(error = %e, path = %path.display(), "ignored an unreadable process table");
            Vec::new()
        }),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_of_a_live_process_is_stable_and_a_dead_one_has_none() {
        let me = std::process::id();
        let t = start_time(me).expect("this process has a start time");
        assert_eq!(start_time(me), Some(t));
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(start_time(pid), None, "a reaped process has none");
    }

    #[test]
    fn a_record_whose_start_time_differs_is_not_still_running() {
        let spec = ProcessSpec {
            name: "p".into(),
            program: "/bin/sleep".into(),
            args: vec![],
            env: vec![],
            working_dir: "/".into(),
            processes: 1,
            redactor: Default::default(),
        };
        // This test's process leads no process group of its own, and a changed start time
        // is a different process whatever its pid.
        let mut r = Record::new("o", &spec, None, Some(std::process::id()));
        assert!(r.start_time.is_some());
        r.start_time = r.start_time.map(|t| t + 1);
        assert_eq!(r.still_running(), None);
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), std::slice::from_ref(&r)).unwrap();
        assert_eq!(load(dir.path()), vec![r]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(table_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(table_path(dir.path()), "not json").unwrap();
        assert!(load(dir.path()).is_empty());
    }
}
