//! Real cgroups with real processes; skipped (with the reason printed) where cgroups are absent.

use crate::Containment;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Kills and removes the test's cgroup even when an assertion fails.
struct Scratch(crate::Cgroup);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.0.destroy();
    }
}

impl std::ops::Deref for Scratch {
    type Target = crate::Cgroup;
    fn deref(&self) -> &crate::Cgroup {
        &self.0
    }
}

/// A fresh cgroup under this test process's own, or `None` (printed) without cgroups.
fn scratch(name: &str) -> Option<Scratch> {
    let c = Containment::detect();
    if !c.is_available() {
        eprintln!(
            "skipped: no usable cgroup hierarchy on this host ({})",
            c.describe()
        );
        return None;
    }
    let cg = c
        .own()
        .child(&format!("stratus-test-{}-{name}", std::process::id()));
    if let Err(e) = cg.create() {
        eprintln!("skipped: cannot create a cgroup here: {e}");
        return None;
    }
    Some(Scratch(cg))
}

fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty()
        && !stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
}

#[test]
fn a_child_joins_before_exec_and_dies_with_its_daemonized_grandchildren() {
    let Some(cg) = scratch("kill") else { return };
    let leaf = cg.child("leaf");
    leaf.create().unwrap();
    let joiner = leaf.joiner().unwrap();
    // The shell double-forks a sleep into a new session, as a daemon does, then exits.
    let mut cmd = Command::new("/bin/sh");
    cmd.args([
        "-c",
        "setsid sh -c 'sleep 300 >/dev/null 2>&1 & echo $!' & wait",
    ]);
    cmd.stdout(std::process::Stdio::piped());
    // SAFETY: join_self only calls write(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || joiner.join_self());
    }
    let out = cmd.output().unwrap();
    let daemon: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(alive(daemon), "the daemon runs on after its parent exited");
    assert!(
        cg.procs().contains(&daemon),
        "{:?} lacks {daemon}",
        cg.procs()
    );
    cg.kill().unwrap();
    assert!(!alive(daemon), "the daemon survived the kill");
    cg.remove().unwrap();
    assert!(!cg.exists(), "{:?} left behind", cg.paths());
}

#[test]
fn pids_max_bounds_the_tasks_of_a_cgroup() {
    let Some(cg) = scratch("pids") else { return };
    if !cg.set_pids_max(4).unwrap() {
        eprintln!("skipped: no pids controller on this host");
        return;
    }
    let joiner = cg.joiner().unwrap();
    let mut cmd = Command::new("/bin/sh");
    // Ten background sleeps; only a few fit under the limit, the rest fail to fork.
    cmd.args([
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 300 >/dev/null 2>&1 & done; echo started",
    ]);
    cmd.stdout(std::process::Stdio::piped());
    cmd.stderr(std::process::Stdio::piped());
    // SAFETY: join_self only calls write(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || joiner.join_self());
    }
    let _ = cmd.output().unwrap();
    let (current, max) = cg.pids_usage().unwrap();
    assert_eq!(max, 4);
    assert!(current <= 4, "{current} tasks under pids.max 4");
    assert!(cg.procs().len() <= 4, "{:?}", cg.procs());
    cg.destroy().unwrap();
    assert!(!cg.exists());
}

#[test]
fn fallback_finds_and_kills_descendants() {
    let mut child = Command::new("/bin/sh")
        .args(["-c", "sleep 300 & sleep 300 & wait"])
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while crate::descendants::descendants(pid).len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let kids = crate::descendants::descendants(pid);
    assert_eq!(kids.len(), 2, "{kids:?}");
    crate::descendants::kill_tree(pid, Some(pid));
    let _ = child.wait();
    // SIGKILL is delivered at once, but the exit itself may take a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while kids.iter().any(|k| alive(*k)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(kids.iter().all(|k| !alive(*k)), "{kids:?}");
}

/// Set when this test binary is re-run as the subreaper helper below.
const HELPER_ENV: &str = "STRATUS_CONTAINMENT_SUBREAPER_HELPER";

/// Runs only as a child of `a_subreaper_finds_and_kills_a_setsid_daemon` (becoming a
/// subreaper changes how orphans of every other test would be reparented).
#[test]
fn subreaper_helper() {
    let Ok(pidfile) = std::env::var(HELPER_ENV) else {
        return;
    };
    crate::descendants::become_subreaper().unwrap();
    // The daemon's parent exits at once; as subreaper we inherit the orphan.
    let script = format!("setsid sh -c 'sleep 300 >/dev/null 2>&1 & echo $! > {pidfile}' &");
    Command::new("/bin/sh")
        .args(["-c", &script])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let daemon: u32 = loop {
        if let Some(p) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "no daemon pid");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert!(
        crate::descendants::descendants(std::process::id()).contains(&daemon),
        "the orphaned daemon was not reparented to the subreaper"
    );
    crate::descendants::kill_tree(std::process::id(), None);
    // SIGKILL is delivered at once; the exit may take a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while alive(daemon) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(!alive(daemon), "kill_tree left the daemon running");
    std::fs::write(format!("{pidfile}.killed"), "yes").unwrap();
}

#[test]
fn a_subreaper_finds_and_kills_a_setsid_daemon() {
    let dir = tempfile_dir();
    let pidfile = dir.join("daemon.pid");
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "cgroup::tests::subreaper_helper", "--nocapture"])
        .env(HELPER_ENV, &pidfile)
        .status()
        .unwrap();
    let daemon = std::fs::read_to_string(&pidfile).unwrap_or_default();
    if let Ok(pid) = daemon.trim().parse::<u32>()
        && alive(pid)
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        panic!("the daemon {pid} survived");
    }
    assert!(status.success(), "the helper failed");
    assert!(
        dir.join("daemon.pid.killed").exists(),
        "the helper did not run the check"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A private directory without a dev-dependency on tempfile.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "stratus-containment-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
