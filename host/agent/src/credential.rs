//! The credential this agent presents. It starts as the launch credential of its bootstrap,
//! which a cloud instance's metadata service keeps serving to any process on the instance for
//! the instance's whole life; so the control plane replaces it once the agent is connected
//! (`AgentRequest::ReplaceCredential`) and stops accepting the launch one. The replacement is
//! kept in `<root>/agent/credential` (mode 0600, inside the agent-private directory) before
//! the agent says it has it, so an agent started again presents it too.
//!
//! Crash windows: the control plane accepts both credentials until it has recorded the new
//! one, so an agent that dies before storing keeps working with the one it had. The file keeps
//! the new credential and the one presented when it came, since a control plane that stopped
//! before recording the new one still expects that one: an agent refused with its newest
//! credential presents the one before, then the launch credential, and only then gives up.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use stratus_protocol::bootstrap::{BOOTSTRAP_MODE, CREDENTIAL_FILE, check_credential};

/// The credentials this agent may present, newest first, and which one it presents now.
pub(crate) struct Credentials {
    /// `<root>/agent/credential`: the newest credential, then the one before it.
    file: PathBuf,
    launch: String,
    presented: RwLock<Presented>,
}

struct Presented {
    /// The stored credentials and the launch one, newest first, without repeats.
    candidates: Vec<String>,
    at: usize,
}

impl Presented {
    fn new(stored: Vec<String>, launch: &str) -> Presented {
        let mut candidates: Vec<String> = Vec::new();
        for c in stored.into_iter().chain([launch.to_string()]) {
            if !candidates.contains(&c) {
                candidates.push(c);
            }
        }
        Presented { candidates, at: 0 }
    }

    fn current(&self) -> &str {
        &self.candidates[self.at]
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("file", &self.file)
            .field("replaced", &!self.presents_launch())
            .finish()
    }
}

impl Credentials {
    /// The stored credentials in `<root>/agent/` if there are valid ones, and `launch`.
    pub(crate) fn load(root: &Path, launch: String) -> Credentials {
        let file = root.join("agent").join(CREDENTIAL_FILE);
        let stored = stored(&file).unwrap_or_else(|why| {
            tracing::warn!(file = %file.display(), %why, "ignoring the stored credential");
            Vec::new()
        });
        Credentials {
            file,
            presented: RwLock::new(Presented::new(stored, &launch)),
            launch,
        }
    }

    /// The credential to present now.
    pub(crate) fn current(&self) -> String {
        self.read().current().to_string()
    }

    /// Whether the credential presented now is the launch credential.
    pub(crate) fn presents_launch(&self) -> bool {
        self.read().current() == self.launch
    }

    /// Presents the next older credential (the one presented now was refused); `false` when
    /// there is none left to try.
    pub(crate) fn fall_back(&self) -> bool {
        let mut p = self.presented.write().unwrap_or_else(|e| e.into_inner());
        if p.at + 1 >= p.candidates.len() {
            return false;
        }
        p.at += 1;
        true
    }

    /// Stores `fresh` durably, with the credential presented now (which the control plane
    /// still expects until it records `fresh`), then presents `fresh` from now on.
    pub(crate) fn replace(&self, fresh: &str) -> Result<(), String> {
        check_credential(fresh).map_err(|why| format!("the new credential is unusable: {why}"))?;
        let mut p = self.presented.write().unwrap_or_else(|e| e.into_inner());
        let accepted = p.current().to_string();
        write_durably(&self.file, format!("{fresh}\n{accepted}\n").as_bytes())
            .map_err(|e| format!("storing the new credential: {e}"))?;
        *p = Presented::new(vec![fresh.to_string(), accepted], &self.launch);
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Presented> {
        self.presented.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// The credentials kept in `file`, newest first (none when there is no file); why not when
/// it is unusable.
fn stored(file: &Path) -> Result<Vec<String>, String> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.to_string()),
    };
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() || lines.len() > 2 {
        return Err(format!("{} lines, not one or two", lines.len()));
    }
    for line in &lines {
        check_credential(line)?;
    }
    Ok(lines)
}

/// Writes `bytes` to a fresh file next to `file` (mode 0600; `create_new` follows no link left
/// at that name), syncs it,
/// renames it over `file` and syncs the directory: a crash leaves the old file or the new.
fn write_durably(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = file
        .parent()
        .ok_or_else(|| std::io::Error::other("no directory"))?;
    let staged = file.with_extension("new");
    match std::fs::remove_file(&staged) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(BOOTSTRAP_MODE)
        .open(&staged)?;
    out.write_all(bytes)?;
    out.sync_all()?;
    std::fs::rename(&staged, file)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("agent")).unwrap();
        dir
    }

    #[test]
    fn a_replacement_is_kept_private_and_presented_after_a_restart() {
        let dir = root();
        let first = Credentials::load(dir.path(), "launch".into());
        assert!(first.presents_launch());
        first.replace("fresh").unwrap();
        assert_eq!(first.current(), "fresh");
        let file = dir.path().join("agent/credential");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = Credentials::load(dir.path(), "launch".into());
        assert_eq!(again.current(), "fresh");
        assert!(!again.presents_launch());
        assert!(again.fall_back());
        assert_eq!(again.current(), "launch");
        assert!(
            !again.fall_back(),
            "nothing older than the launch credential"
        );
    }

    /// The control plane stopped before recording the newest: it expects the one before,
    /// which the agent presents next, before the launch credential.
    #[test]
    fn a_refused_newest_credential_gives_way_to_the_one_before_then_the_launch_one() {
        let dir = root();
        let creds = Credentials::load(dir.path(), "launch".into());
        creds.replace("second").unwrap();
        creds.replace("third").unwrap();
        let again = Credentials::load(dir.path(), "launch".into());
        let tried: Vec<String> = std::iter::once(again.current())
            .chain(std::iter::from_fn(|| {
                again.fall_back().then(|| again.current())
            }))
            .collect();
        assert_eq!(tried, ["third", "second", "launch"]);
        // Accepted with "launch" and replaced: the file keeps the new one and "launch".
        again.replace("fourth").unwrap();
        let kept = std::fs::read_to_string(dir.path().join("agent/credential")).unwrap();
        assert_eq!(kept, "fourth\nlaunch\n");
    }

    #[test]
    fn an_unusable_replacement_is_refused_and_changes_nothing() {
        let dir = root();
        let creds = Credentials::load(dir.path(), "launch".into());
        for bad in ["", "has space", "line\nbreak", &"x".repeat(2000)] {
            assert!(creds.replace(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(creds.current(), "launch");
        assert!(!dir.path().join("agent/credential").exists());
    }

    #[test]
    fn a_corrupt_stored_credential_gives_way_to_the_launch_one() {
        let dir = root();
        std::fs::write(dir.path().join("agent/credential"), "two words").unwrap();
        let creds = Credentials::load(dir.path(), "launch".into());
        assert_eq!(creds.current(), "launch");
    }

    #[test]
    fn a_planted_link_at_the_staging_name_is_replaced_not_followed() {
        let dir = root();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "untouched").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("agent/credential.new")).unwrap();
        let creds = Credentials::load(dir.path(), "launch".into());
        creds.replace("fresh").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        let kept = std::fs::read_to_string(dir.path().join("agent/credential")).unwrap();
        assert_eq!(kept, "fresh\nlaunch\n");
    }
}
