//! Each local server's agent runs in its own cgroup, so terminate ends everything the server
//! started (daemons that left the agent's process group included) even if the agent is dead.
//! The name is derived from the server root (state dir, deployment, server id), so a restarted
//! control plane finds it again.

use std::path::Path;
use stratus_containment::{Cgroup, Containment};

/// Longest piece of a deployment or server name kept in a cgroup name; the hash keeps the
/// name unique whatever is cut.
const NAME_PART: usize = 60;

/// The agent cgroup of the server whose root is `root`, or `None` without cgroups.
pub fn agent_cgroup(root: &Path) -> Option<(String, Cgroup)> {
    // The mounts do not change under a running control plane; reading them for every
    // liveness check of every server did add up.
    static DETECTED: std::sync::OnceLock<Containment> = std::sync::OnceLock::new();
    let c = DETECTED.get_or_init(Containment::detect);
    if !c.is_available() {
        return None;
    }
    let name = cgroup_name(root);
    Some((name.clone(), c.root().child(&name)))
}

/// `stratus-<deployment>-<server>-<hash of the root path>`.
fn cgroup_name(root: &Path) -> String {
    let part = |p: Option<&Path>| -> String {
        let s = p
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or("x");
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .take(NAME_PART)
            .collect()
    };
    // root = <state>/servers/<deployment>/<server>/root
    let server = root.parent();
    let deployment = server.and_then(Path::parent);
    format!(
        "stratus-{}-{}-{:016x}",
        part(deployment),
        part(server),
        fnv1a(root.as_os_str().as_encoded_bytes())
    )
}

/// Whether `name` has the shape [`cgroup_name`] gives, so nothing else is ever removed.
fn is_agent_cgroup(name: &str) -> bool {
    let hash = name.rsplit('-').next().unwrap_or("");
    name.starts_with("stratus-")
        && stratus_containment::valid_name(name)
        && hash.len() == 16
        && hash.chars().all(|c| c.is_ascii_hexdigit())
}

/// FNV-1a: a stable 64-bit hash (std's hasher is not stable across releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// Kills whatever an earlier agent left in the cgroup and creates it afresh for the new agent,
/// which joins it itself. `false` (logged) when the cgroup cannot be made.
pub fn prepare(cg: &Cgroup) -> bool {
    if cg.exists()
        && let Err(e) = cg.destroy()
    {
        tracing::warn!(error = %e, "cannot clear the cgroup of an earlier agent");
    }
    match cg.create() {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "agent runs without its own cgroup");
            let _ = cg.remove();
            false
        }
    }
}

/// How old an empty agent cgroup must be before a launch removes it: older than any launch
/// that has created its cgroup and whose agent has not joined it yet.
const STALE_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// How often a launch sweeps for dead agents' cgroups: a sweep reads every agent cgroup, so
/// one per launch made launching N servers cost N² reads.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Removes the empty agent cgroups of servers whose agent died without a terminate (killed,
/// or the machine's harness ended it); populated ones are left for their terminate. At most
/// once per [`SWEEP_EVERY`] in a process: the first launch sweeps, the next ones of the same
/// burst do not.
pub fn remove_dead() {
    static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    {
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
            return;
        }
        *last = Some(std::time::Instant::now());
    }
    let c = Containment::detect();
    let root = c.root();
    let Some(dir) = root.paths().into_iter().next() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE_AGE));
        if !is_agent_cgroup(&name) || !old {
            continue;
        }
        let cg = root.child(&name);
        if cg.procs().is_empty() && cg.remove().is_ok() {
            tracing::info!(cgroup = %name, "removed the cgroup of a dead agent");
        }
    }
}

/// Every process in the server's cgroup, once its agent joined it (it makes the leaf `agent`
/// to do so): from then on the agent and everything it started, whatever their process group,
/// are in there, since only root may move a process out. `None` when the agent never joined.
pub fn joined_members(root: &Path) -> Option<Vec<u32>> {
    let (_, cg) = agent_cgroup(root)?;
    cg.child("agent").exists().then(|| cg.procs())
}

/// Kills everything left in the server's cgroup and removes it (children first).
pub fn destroy(root: &Path) -> Result<(), String> {
    let Some((_, cg)) = agent_cgroup(root) else {
        return Ok(());
    };
    if !cg.exists() {
        return Ok(());
    }
    cg.destroy().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_unique_and_safe() {
        let a = cgroup_name(Path::new("/s1/servers/web/web-1/root"));
        assert!(a.starts_with("stratus-web-web-1-"), "{a}");
        assert_eq!(a, cgroup_name(Path::new("/s1/servers/web/web-1/root")));
        assert_ne!(a, cgroup_name(Path::new("/s2/servers/web/web-1/root")));
        assert!(stratus_containment::valid_name(&a));
        assert!(is_agent_cgroup(&a));
        assert!(!is_agent_cgroup("stratus-agent-1234"));
        assert!(!is_agent_cgroup("stratus-test-99-kill"));
        let long = format!("/s/servers/{}/x/root", "d".repeat(300));
        assert!(stratus_containment::valid_name(&cgroup_name(Path::new(
            &long
        ))));
    }
}
