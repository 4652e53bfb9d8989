use super::*;
use std::time::Instant;

fn spec(name: &str, program: &str, args: &[&str], dir: &std::path::Path) -> ProcessSpec {
    ProcessSpec {
        name: name.into(),
        program: program.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![("GREETING".into(), "hi".into())],
        working_dir: dir.to_owned(),
        processes: 16,
        redactor: crate::output::Redactor::default(),
    }
}

/// The process's state once it exited, or as it is after 30 s (generous: a loaded machine
/// may be slow to start and end even a short shell).
async fn wait_exit(sup: &Supervisor, owner: &str, name: &str) -> ProcessState {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
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
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(sup.log_path("svc", "stubborn"))
        .unwrap_or_default()
        .contains("ready")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the shell never got ready"
        );
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

/// Waits until `done` holds for the crash report, for up to `secs`.
async fn report_until(
    sup: &Supervisor,
    secs: u64,
    done: impl Fn(&stratus_protocol::SupervisionReport) -> bool,
) -> stratus_protocol::SupervisionReport {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = sup.crashes();
        if done(&r) || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_killed_process_is_started_again_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Supervisor::new(dir.path().join("logs"));
    let pid = sup
        .spawn("svc", spec("d", "/bin/sleep", &["30"], dir.path()))
        .unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let r = report_until(&sup, 30, |r| r.processes.iter().any(|p| p.pid.is_some())).await;
    let p = &r.processes[0];
    assert_eq!(
        (p.owner.as_str(), p.name.as_str(), p.restarts),
        ("svc", "d", 1),
        "{r:?}"
    );
    assert_eq!(p.last_exit, "killed by signal 9 (SIGKILL)");
    assert!(!p.crash_loop);
    let ProcessState::Running(again) = sup.state("svc", "d") else {
        panic!("not running again: {:?}", sup.state("svc", "d"));
    };
    assert_ne!(again, pid);
    // Asked to stop, it stays stopped.
    sup.stop("svc", "d", Duration::from_secs(2)).await.unwrap();
    tokio::time::sleep(crate::restart::RESTART_BACKOFF_INITIAL * 2).await;
    assert!(matches!(sup.state("svc", "d"), ProcessState::Exited(_)));
    assert_eq!(sup.crashes().processes[0].restarts, 1);
}

#[tokio::test]
async fn a_process_that_exits_at_once_waits_longer_each_time_and_is_a_crash_loop() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Supervisor::new(dir.path().join("logs"));
    let s = ProcessSpec {
        redactor: crate::output::Redactor::new(["hunter2".to_string()]),
        ..spec(
            "bad",
            "/bin/sh",
            &["-c", "echo pw=hunter2 no config; exit 7"],
            dir.path(),
        )
    };
    let began = Instant::now();
    sup.spawn("svc", s).unwrap();
    // Waits of 1, 2 and 4 s: the third restart comes 7 s after the start, not before.
    let r = report_until(&sup, 30, |r| {
        r.processes.first().is_some_and(|p| p.restarts >= 3)
    })
    .await;
    let took = began.elapsed();
    let p = &r.processes[0];
    assert!(p.restarts >= 3, "{r:?}");
    assert!(took >= Duration::from_secs(7), "{took:?}");
    assert!(p.crash_loop && p.quick_exits_in_a_row >= 3, "{r:?}");
    assert_eq!(p.last_exit, "exit code 7");
    assert!(
        p.output_tail.ends_with("pw=**** no config\n"),
        "{:?}",
        p.output_tail
    );
    // While it waits, it is Exited and stopping it ends the wait for good.
    sup.stop("svc", "bad", Duration::from_secs(1))
        .await
        .unwrap();
    let n = sup.crashes().processes[0].restarts;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sup.crashes().processes[0].restarts, n);
}

#[tokio::test]
async fn a_process_that_finishes_with_status_0_is_not_started_again() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Supervisor::new(dir.path().join("logs"));
    sup.spawn(
        "svc",
        spec("once", "/bin/sh", &["-c", "echo done"], dir.path()),
    )
    .unwrap();
    assert_eq!(
        wait_exit(&sup, "svc", "once").await,
        ProcessState::Exited(Some(0))
    );
    tokio::time::sleep(crate::restart::RESTART_BACKOFF_INITIAL + Duration::from_millis(300)).await;
    assert_eq!(sup.state("svc", "once"), ProcessState::Exited(Some(0)));
    assert!(sup.crashes().processes.is_empty());
    let log = std::fs::read_to_string(sup.log_path("svc", "once")).unwrap();
    assert_eq!(log, "done\n");
}

#[tokio::test]
async fn a_new_spawn_replaces_a_crashed_process_waiting_for_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Supervisor::new(dir.path().join("logs"));
    sup.spawn("svc", spec("p", "/bin/sh", &["-c", "exit 2"], dir.path()))
        .unwrap();
    let crashed = report_until(&sup, 30, |r| !r.processes.is_empty()).await;
    assert!(
        !crashed.processes.is_empty(),
        "the first process never exited"
    );
    let pid = sup
        .spawn("svc", spec("p", "/bin/sleep", &["30"], dir.path()))
        .unwrap();
    tokio::time::sleep(crate::restart::RESTART_BACKOFF_INITIAL * 2).await;
    assert_eq!(
        sup.state("svc", "p"),
        ProcessState::Running(pid),
        "started once, not twice"
    );
    assert!(
        sup.crashes().processes.is_empty(),
        "a new start begins a new record"
    );
    sup.stop_all(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_second_supervisor_adopts_what_the_first_kept_and_never_a_reused_pid() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    // The first supervisor runs on a runtime of its own, dropped like a dying agent's: its
    // processes keep running with nobody watching.
    let (first_logs, d) = (logs.clone(), dir.path().to_owned());
    let (kept, gone, stopped) = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let first = Supervisor::new(first_logs);
            let run = |n: &str| {
                first
                    .spawn("svc", spec(n, "/bin/sleep", &["30"], &d))
                    .unwrap()
            };
            let (kept, gone, stopped) = (run("kept"), run("gone"), run("stopped"));
            first
                .stop("svc", "stopped", Duration::from_secs(2))
                .await
                .unwrap();
            (kept, gone, stopped)
        })
    })
    .join()
    .unwrap();
    assert!(!common_alive(stopped));
    // "gone" ends while no supervisor watches; a process now holding its pid would differ
    // in start time, which the record is checked against.
    kill(Pid::from_raw(gone as i32), Signal::SIGKILL).unwrap();
    let _ = nix::sys::wait::waitpid(Pid::from_raw(gone as i32), None);

    // The second supervisor (an agent started again) reads what the first wrote down.
    let second = Supervisor::new(logs.clone());
    let mut adopted = second.adopt();
    adopted.sort();
    assert_eq!(
        adopted,
        [
            ("svc".to_string(), "gone".to_string(), None),
            ("svc".to_string(), "kept".to_string(), Some(kept)),
        ],
        "the stopped one is not taken back"
    );
    assert_eq!(second.state("svc", "kept"), ProcessState::Running(kept));
    let again = second
        .spawn("svc", spec("kept", "/bin/sleep", &["30"], dir.path()))
        .unwrap_err();
    assert!(
        again.contains("already running"),
        "never started twice: {again}"
    );
    // The gone one is left to its plugin: unknown, and not started again here.
    assert_eq!(second.state("svc", "gone"), ProcessState::Unknown);
    assert!(second.crashes().processes.is_empty());
    // An adopted process that is killed is noticed and started again; stop ends it for good.
    kill(Pid::from_raw(kept as i32), Signal::SIGKILL).unwrap();
    let r = report_until(&second, 30, |r| {
        r.processes
            .iter()
            .any(|p| p.name == "kept" && p.pid.is_some())
    })
    .await;
    assert!(r.processes.iter().any(|p| p.name == "kept"), "{r:?}");
    second.stop_all(Duration::from_secs(2)).await;
    let third = Supervisor::new(logs);
    assert!(
        third.adopt().is_empty(),
        "nothing is kept after a stop of all"
    );
}

/// Whether `pid` is a live (not zombie) process.
fn common_alive(pid: u32) -> bool {
    crate::adoption::start_time(pid).is_some()
}

#[test]
fn the_program_user_name_is_looked_up_when_asked_for_and_follows_the_user_set() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Supervisor::new(dir.path().join("logs"));
    let root = nix::unistd::geteuid().is_root();
    // Asked for before the user is set: the default user's name (root only).
    assert_eq!(sup.program_user_name().is_some(), root);
    // No password entry has this uid, so its name is the uid itself.
    let user = ProgramUser {
        uid: 3_999_999_001,
        gid: 3_999_999_001,
    };
    let sup = sup.with_program_user(user);
    let expected = root.then(|| "3999999001".to_string());
    assert_eq!(sup.program_user_name(), expected.as_deref());
}

/// `until_supervising` waits while nothing was ever started, returns once a process was, and
/// at once from then on, even after that process exited (its log may have been handed on).
#[tokio::test]
async fn until_supervising_waits_for_the_first_process() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Supervisor::new(dir.path().join("logs"));
    let quick = Duration::from_millis(50);
    assert!(
        tokio::time::timeout(quick, sup.until_supervising())
            .await
            .is_err(),
        "nothing was started yet"
    );
    let waiting = tokio::spawn({
        let sup = sup.clone();
        async move { sup.until_supervising().await }
    });
    sup.spawn("svc", spec("job", "/bin/true", &[], dir.path()))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("woken by the start")
        .unwrap();
    wait_exit(&sup, "svc", "job").await;
    tokio::time::timeout(quick, sup.until_supervising())
        .await
        .expect("at once after an exit");
}
