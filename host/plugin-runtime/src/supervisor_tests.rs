use super::*;

fn spec(name: &str, program: &str, args: &[&str], dir: &std::path::Path) -> ProcessSpec {
    ProcessSpec {
        name: name.into(),
        program: program.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![("GREETING".into(), "hi".into())],
        working_dir: dir.to_owned(),
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
