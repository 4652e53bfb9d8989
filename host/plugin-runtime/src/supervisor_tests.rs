use super::*;

fn spec(name: &str, program: &str, args: &[&str], dir: &std::path::Path) -> ProcessSpec {
    ProcessSpec {
        name: name.into(),
        program: program.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![("GREETING".into(), "hi".into())],
        working_dir: dir.to_owned(),
        processes: 16,
    }
}

async fn wait_exit(sup: &Supervisor, owner: &str, name: &str) -> ProcessState {
    for _ in 0..200 {
        let s = sup.state(owner, name);
        if matches!(s, ProcessState::Exited(_)) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sup.state(owner, name)
}

#[tokio::test]
async fn runs_logs_and_reports_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Supervisor::new(dir.path().join("logs"));
    let s = spec(
        "job",
        "/bin/sh",
        &["-c", "echo $GREETING; echo out-of-env $HOME; exit 3"],
        dir.path(),
    );
    let pid = sup.spawn("svc", s).unwrap();
    assert!(pid > 0);
    assert_eq!(
        wait_exit(&sup, "svc", "job").await,
        ProcessState::Exited(Some(3))
    );
    let log = std::fs::read_to_string(sup.log_path("svc", "job")).unwrap();
    assert_eq!(
        log, "hi\nout-of-env\n",
        "env must be cleared except the given variables"
    );
    assert_eq!(sup.state("svc", "other"), ProcessState::Unknown);
}

#[tokio::test]
async fn duplicate_running_name_is_refused_and_stop_terminates() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Supervisor::new(dir.path().to_owned());
    let pid = sup
        .spawn("svc", spec("sleeper", "/bin/sleep", &["30"], dir.path()))
        .unwrap();
    assert_eq!(sup.state("svc", "sleeper"), ProcessState::Running(pid));
    let again = sup
        .spawn("svc", spec("sleeper", "/bin/sleep", &["30"], dir.path()))
        .unwrap_err();
    assert!(again.contains("already running"), "{again}");
    // The same name under another owner is a different process.
    let other = sup
        .spawn("svc2", spec("sleeper", "/bin/sleep", &["30"], dir.path()))
        .unwrap();
    sup.stop("svc", "sleeper", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(sup.state("svc", "sleeper"), ProcessState::Exited(None));
    assert_eq!(sup.state("svc2", "sleeper"), ProcessState::Running(other));
    let stopped = sup.stop_all(Duration::from_secs(5)).await;
    assert_eq!(stopped, vec![("svc2".to_string(), "sleeper".to_string())]);
    assert_eq!(sup.state("svc2", "sleeper"), ProcessState::Exited(None));
    // Stopping an exited or unknown process succeeds.
    sup.stop("svc", "sleeper", Duration::from_secs(1))
        .await
        .unwrap();
    sup.stop("svc", "nothing", Duration::from_secs(1))
        .await
        .unwrap();
}

#[tokio::test]
async fn sigterm_ignoring_process_is_killed_after_grace() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Supervisor::new(dir.path().to_owned());
    let script = "trap '' TERM; echo ready; while true; do sleep 0.05; done";
    sup.spawn(
        "svc",
        spec("stubborn", "/bin/sh", &["-c", script], dir.path()),
    )
    .unwrap();
    // Let the shell install its trap before signalling.
    for _ in 0..100 {
        if std::fs::read_to_string(sup.log_path("svc", "stubborn"))
            .unwrap_or_default()
            .contains("ready")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = std::time::Instant::now();
    sup.stop("svc", "stubborn", Duration::from_millis(200))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(sup.state("svc", "stubborn"), ProcessState::Exited(None));
}

#[tokio::test]
async fn unsafe_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Supervisor::new(dir.path().to_owned());
    let e = sup
        .spawn("svc", spec("../escape", "/bin/true", &[], dir.path()))
        .unwrap_err();
    assert!(e.contains("must use only"), "{e}");
}

/// A parent cgroup for a contained supervisor, removed on drop; `None` (printed) where this
/// host has no usable cgroups.
struct Parent(stratus_containment::Cgroup);

impl Drop for Parent {
    fn drop(&mut self) {
        let _ = self.0.destroy();
    }
}

fn parent(name: &str) -> Option<Parent> {
    let c = stratus_containment::Containment::detect();
    let cg = c
        .own()
        .child(&format!("stratus-sup-test-{}-{name}", std::process::id()));
    if !c.is_available() || cg.create().is_err() {
        eprintln!("skipped: no usable cgroup here ({})", c.describe());
        return None;
    }
    Some(Parent(cg))
}

/// A temporary directory the program user (a root supervisor's programs run as it) may
/// write, as a service directory handed over to it is.
fn writable_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty()
        && !stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
}

async fn read_pid(path: &std::path::Path) -> u32 {
    for _ in 0..500 {
        if let Ok(p) = std::fs::read_to_string(path)
            && let Ok(p) = p.trim().parse()
        {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} never appeared", path.display());
}

#[tokio::test]
async fn stop_kills_a_setsid_daemon_and_spares_the_owners_other_processes() {
    let Some(parent) = parent("daemon") else {
        return;
    };
    let dir = writable_tempdir();
    let sup = Supervisor::contained(dir.path().join("logs"), parent.0.clone());
    let pidfile = dir.path().join("daemon.pid");
    // Double fork into a new session, as a daemon does; the spawned shell exits at once.
    let script = format!(
        "setsid sh -c 'sleep 300 >/dev/null 2>&1 & echo $! > {}' &",
        pidfile.display()
    );
    sup.spawn(
        "svc",
        spec("forker", "/bin/sh", &["-c", &script], dir.path()),
    )
    .unwrap();
    let other = sup
        .spawn("svc", spec("other", "/bin/sleep", &["300"], dir.path()))
        .unwrap();
    let daemon = read_pid(&pidfile).await;
    assert_eq!(
        wait_exit(&sup, "svc", "forker").await,
        ProcessState::Exited(Some(0))
    );
    assert!(
        alive(daemon),
        "the daemon outlived its parent, as daemons do"
    );
    sup.stop("svc", "forker", Duration::from_secs(1))
        .await
        .unwrap();
    assert!(
        !alive(daemon),
        "stop left the setsid daemon {daemon} running"
    );
    assert!(alive(other), "stop of one process killed another");
    let svc = parent.0.child("svc-svc");
    assert!(!svc.child("p-forker").exists(), "the stopped leaf remains");
    sup.stop_all(Duration::from_secs(1)).await;
    assert!(!alive(other));
    assert!(!svc.exists(), "stop_all left {:?}", svc.paths());
}

#[tokio::test]
async fn spawning_beyond_the_process_limit_fails_clearly() {
    if !stratus_containment::Containment::detect().limits_processes() {
        eprintln!("skipped: no pids controller on this host");
        return;
    }
    let Some(parent) = parent("limit") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sup = Supervisor::contained(dir.path().join("logs"), parent.0.clone());
    let svc = parent.0.child("svc-svc");
    let limited = |name: &str| ProcessSpec {
        processes: 3,
        ..spec(name, "/bin/sleep", &["300"], dir.path())
    };
    let mut refused = None;
    for i in 0..10 {
        if let Err(e) = sup.spawn("svc", limited(&format!("s{i}"))) {
            refused = Some((i, e));
            break;
        }
    }
    let (at, e) = refused.expect("no spawn was refused");
    assert_eq!(at, 3, "{e}");
    assert!(
        e.contains("process limit reached") && e.contains("3 of its 3"),
        "{e}"
    );
    assert_eq!(svc.pids_usage(), Some((3, 3)));
    sup.stop_all(Duration::from_secs(1)).await;
    assert!(!svc.exists());
}
