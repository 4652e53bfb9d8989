//! The host functions called directly on a call's store data, without a guest: the checks and
//! the real processes and sockets behind them.

use super::*;
use crate::bindings::host::Host;
use crate::capabilities::{Access, Capabilities, DirGrant, DirKind, NetworkGrant, Program};
use crate::env::{CallEnv, DirMap, Labels};
use crate::output::Redactor;
use crate::supervisor::Supervisor;
use std::path::Path;

fn caps(network: &[&str]) -> Capabilities {
    Capabilities {
        timeout_ms: 30_000, // a loaded machine may be slow to run even a short program
        output_bytes: 64,
        dirs: vec![DirGrant {
            dir: DirKind::Service,
            access: Access::ReadWrite,
        }],
        programs: ["/bin/sh", "/usr/bin/env", "/bin/pwd", "/bin/sleep"]
            .iter()
            .map(|p| Program::try_from(p.to_string()).unwrap())
            .collect(),
        network: network
            .iter()
            .map(|n| NetworkGrant::try_from(n.to_string()).unwrap())
            .collect(),
        program_env: ["ONLY", "PATH"]
            .iter()
            .map(|p| p.to_string().try_into().unwrap())
            .collect(),
        ..Capabilities::default()
    }
}

fn state(dir: &Path, caps: &Capabilities) -> (State, crate::call::Captured) {
    let env = CallEnv {
        sealed_package: None,
        dirs: DirMap::from([(DirKind::Service, dir.to_owned())]),
        server_address: "127.0.0.1".into(),
        supervisor: Supervisor::new(dir.join("logs")),
        capabilities: None,
        secrets: Vec::new(),
        labels: Labels {
            service: "web".into(),
            ..Labels::default()
        },
    };
    State::new("t", caps, &env, Redactor::default(), None).unwrap()
}

/// A call environment with no labels or secrets of its own.
fn bare_env(dirs: DirMap, logs: std::path::PathBuf) -> CallEnv {
    CallEnv {
        sealed_package: None,
        dirs,
        server_address: "127.0.0.1".into(),
        supervisor: Supervisor::new(logs),
        capabilities: None,
        secrets: Vec::new(),
        labels: Labels::default(),
    }
}

fn cmd(program: &str, args: &[&str]) -> Command {
    Command {
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: vec![("ONLY".into(), "this".into())],
        working_dir: None,
        timeout_ms: 0,
        stdin: None,
    }
}

#[tokio::test]
async fn run_clears_env_defaults_to_the_service_dir_and_feeds_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = state(dir.path(), &caps(&[]));
    let out = s.run(cmd("/usr/bin/env", &[])).await.unwrap().unwrap();
    assert_eq!(out.stdout, "ONLY=this\n");
    assert_eq!(out.exit_code, Some(0));
    let out = s.run(cmd("/bin/pwd", &[])).await.unwrap().unwrap();
    assert_eq!(out.stdout.trim(), dir.path().to_str().unwrap());
    let mut c = cmd("/bin/sh", &["-c", "read x; echo got $x; exit 4"]);
    c.stdin = Some("abc\n".into());
    let out = s.run(c).await.unwrap().unwrap();
    assert_eq!((out.stdout.as_str(), out.exit_code), ("got abc\n", Some(4)));
}

#[tokio::test]
async fn run_bounds_output_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = state(dir.path(), &caps(&[]));
    let out = s
        .run(cmd("/bin/sh", &["-c", "yes | head -c 100000"]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.stdout.len(), 64);
    assert!(out.truncated);
    let mut slow = cmd("/bin/sleep", &["5"]);
    slow.timeout_ms = 100;
    let err = s.run(slow).await.unwrap().unwrap_err();
    assert_eq!(err, "program /bin/sleep timed out after 100 ms");
}

#[tokio::test]
async fn run_refuses_unlisted_programs_and_foreign_working_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, captured) = state(dir.path(), &caps(&[]));
    // Lexical tricks do not get around the allow-list.
    let err = s
        .run(cmd("/bin/../usr/bin/id", &[]))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err,
        "capability denied: program /bin/../usr/bin/id is not in the plugin's allowed programs"
    );
    let ok = s.run(cmd("/bin/./sh", &["-c", "true"])).await.unwrap();
    assert!(ok.is_ok(), "{ok:?}");
    let mut c = cmd("/bin/pwd", &[]);
    c.working_dir = Some("/tmp".into());
    let err = s.run(c).await.unwrap().unwrap_err();
    assert_eq!(
        err,
        "capability denied: working-dir /tmp is not inside a granted directory"
    );
    // A symlink inside the granted dir that leads out is refused too.
    std::os::unix::fs::symlink("/etc", dir.path().join("out")).unwrap();
    let mut c = cmd("/bin/pwd", &[]);
    c.working_dir = Some(format!("{}/out", dir.path().display()));
    assert!(
        s.run(c)
            .await
            .unwrap()
            .unwrap_err()
            .contains("not inside a granted directory")
    );
    assert_eq!(captured.denials.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn wait_for_port_needs_a_grant_and_sees_a_listener() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let (mut s, captured) = state(dir.path(), &caps(&["self:*"]));
    assert_eq!(
        s.wait_for_port("127.0.0.1".into(), port, 1000)
            .await
            .unwrap(),
        Ok(true)
    );
    drop(listener);
    let free = s.wait_for_port("self".into(), port, 150).await.unwrap();
    assert_eq!(free, Ok(false));
    let err = s
        .wait_for_port("127.0.0.2".into(), 22, 100)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err,
        "capability denied: network connect to 127.0.0.2:22 is not granted"
    );
    assert_eq!(
        captured.denials.lock().unwrap().as_slice(),
        ["network connect to 127.0.0.2:22 is not granted"]
    );
}

#[tokio::test]
async fn spawn_applies_the_same_checks_and_supervises() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = state(dir.path(), &caps(&[]));
    let spec = |program: &str| WitSpec {
        name: "sleeper".into(),
        program: program.into(),
        args: vec!["30".into()],
        env: Vec::new(),
        working_dir: None,
    };
    let err = s
        .spawn(spec("/usr/bin/sleep-not-allowed"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.starts_with("capability denied: program"), "{err}");
    let pid = s.spawn(spec("/bin/sleep")).await.unwrap().unwrap();
    let state = s.query_process("sleeper".into()).await.unwrap();
    assert!(
        matches!(state, host::ProcessState::Running(p) if p == pid),
        "{state:?}"
    );
    s.stop_process("sleeper".into(), 1000)
        .await
        .unwrap()
        .unwrap();
    let state = s.query_process("sleeper".into()).await.unwrap();
    assert!(
        matches!(state, host::ProcessState::Exited(None)),
        "{state:?}"
    );
    let state = s.query_process("nope".into()).await.unwrap();
    assert!(matches!(state, host::ProcessState::Unknown), "{state:?}");
}

#[tokio::test]
async fn logs_and_status_are_redacted_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let env = bare_env(DirMap::new(), dir.path().to_owned());
    let (mut s, _) = State::new(
        "t",
        &caps(&[]),
        &env,
        Redactor::new(["pw1".to_string()]),
        None,
    )
    .unwrap();
    s.log(Level::Warn, "user=app password=pw1".into())
        .await
        .unwrap();
    s.set_status("connecting with pw1".into()).await.unwrap();
    assert_eq!(
        s.host.logs,
        vec![LogRecord {
            level: LogLevel::Warn,
            message: "user=app password=****".into()
        }]
    );
    assert_eq!(s.host.status.as_deref(), Some("connecting with ****"));
}

#[tokio::test]
async fn a_log_flood_keeps_a_bounded_head_and_says_how_much_was_dropped() {
    use stratus_protocol::bounds::{MAX_LOG_RECORD_BYTES, MAX_LOG_RECORDS};
    let dir = tempfile::tempdir().unwrap();
    let env = bare_env(DirMap::new(), dir.path().to_owned());
    let (mut s, _) = State::new("t", &caps(&[]), &env, Redactor::default(), None).unwrap();
    s.log(Level::Info, "y".repeat(10 << 20)).await.unwrap();
    for i in 0..MAX_LOG_RECORDS + 500 {
        s.log(Level::Info, format!("line {i}")).await.unwrap();
    }
    s.host.finish_logs();
    let logs = &s.host.logs;
    assert_eq!(logs.len(), MAX_LOG_RECORDS + 1);
    assert!(logs[0].message.len() < MAX_LOG_RECORD_BYTES + 64);
    assert!(logs[0].message.ends_with("(cut, 10485760 bytes)"));
    let last = &logs[MAX_LOG_RECORDS].message;
    assert!(last.starts_with("… 501 more log records dropped"), "{last}");
}

#[tokio::test]
async fn service_programs_run_from_the_sealed_package_not_the_writable_service_dir() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let service = dir.path().join("service");
    let sealed = dir.path().join("sealed");
    for (root, says) in [
        (&service, "rewritten by the plugin"),
        (&sealed, "as installed"),
    ] {
        std::fs::create_dir_all(root.join("bin")).unwrap();
        let tool = root.join("bin/tool");
        std::fs::write(&tool, format!("#!/bin/sh\necho {says}\n")).unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut caps = caps(&[]);
    caps.programs = vec![Program::try_from("service:bin/tool".to_string()).unwrap()];
    let env = |sealed_package: Option<std::path::PathBuf>| CallEnv {
        sealed_package,
        dirs: DirMap::from([(DirKind::Service, service.clone())]),
        server_address: "127.0.0.1".into(),
        supervisor: Supervisor::new(dir.path().join("logs")),
        capabilities: None,
        secrets: Vec::new(),
        labels: Labels::default(),
    };
    let program = service.join("bin/tool");
    let program = program.to_str().unwrap();

    let (mut s, _) = State::new(
        "t",
        &caps,
        &env(Some(sealed.clone())),
        Redactor::default(),
        None,
    )
    .unwrap();
    let out = s.run(cmd(program, &[])).await.unwrap().unwrap();
    assert_eq!(out.stdout, "as installed\n");

    // A program the package never shipped is refused rather than run from the service dir.
    std::fs::remove_file(sealed.join("bin/tool")).unwrap();
    let err = s.run(cmd(program, &[])).await.unwrap().unwrap_err();
    assert!(
        err.contains("is not part of the installed package"),
        "{err}"
    );

    // Without a sealed copy (`stratus plugin call`), the service dir's program runs.
    let (mut s, _) = State::new("t", &caps, &env(None), Redactor::default(), None).unwrap();
    let out = s.run(cmd(program, &[])).await.unwrap().unwrap();
    assert_eq!(out.stdout, "rewritten by the plugin\n");
}

#[tokio::test]
async fn program_env_refuses_loader_variables_unlisted_names_and_a_planted_path() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = state(dir.path(), &caps(&[]));
    let with = |k: &str, v: &str| Command {
        env: vec![(k.into(), v.into())],
        ..cmd("/usr/bin/env", &[])
    };
    let lib = format!("{}/evil.so", dir.path().display());
    for (k, v, why) in [
        (
            "LD_PRELOAD",
            lib.as_str(),
            "makes programs load code and is never passed",
        ),
        (
            "PYTHONPATH",
            "/tmp",
            "makes programs load code and is never passed",
        ),
        ("HOME", "/root", "is not in the plugin's program-env"),
    ] {
        let e = s.run(with(k, v)).await.unwrap().unwrap_err();
        assert_eq!(
            e,
            format!("capability denied: environment variable {k} {why}"),
            "{k}"
        );
        let e = s.spawn(spawn_spec(k, v)).await.unwrap().unwrap_err();
        assert!(e.contains(&format!("environment variable {k} ")), "{e}");
    }
    let planted = format!("/usr/bin:{}/bin", dir.path().display());
    let e = s.run(with("PATH", &planted)).await.unwrap().unwrap_err();
    assert!(
        e.contains("environment variable PATH entry") && e.contains("/bin`"),
        "{e}"
    );
    let out = s.run(with("PATH", "/usr/bin:/bin")).await.unwrap().unwrap();
    assert_eq!(out.stdout, "PATH=/usr/bin:/bin\n");
}

fn spawn_spec(k: &str, v: &str) -> crate::bindings::host::ProcessSpec {
    crate::bindings::host::ProcessSpec {
        name: "p".into(),
        program: "/bin/sleep".into(),
        args: vec!["1".into()],
        env: vec![(k.into(), v.into())],
        working_dir: None,
    }
}

/// A state whose supervisor puts programs in cgroups beneath `parent`.
fn contained_state(dir: &Path, parent: &stratus_containment::Cgroup) -> State {
    let env = CallEnv {
        sealed_package: None,
        dirs: DirMap::from([(DirKind::Service, dir.to_owned())]),
        server_address: "127.0.0.1".into(),
        supervisor: Supervisor::contained(dir.join("logs"), parent.clone()),
        capabilities: None,
        secrets: Vec::new(),
        labels: Labels {
            service: "web".into(),
            ..Labels::default()
        },
    };
    State::new("t", &caps(&[]), &env, Redactor::default(), None)
        .unwrap()
        .0
}

#[tokio::test]
async fn run_programs_live_in_a_leaf_of_the_service_and_a_timeout_kills_their_daemons() {
    let c = stratus_containment::Containment::detect();
    let parent = c
        .own()
        .child(&format!("stratus-run-test-{}", std::process::id()));
    if !c.is_available() || parent.create().is_err() {
        eprintln!("skipped: no usable cgroup here ({})", c.describe());
        return;
    }
    struct Destroy(stratus_containment::Cgroup);
    impl Drop for Destroy {
        fn drop(&mut self) {
            let _ = self.0.destroy();
        }
    }
    let _guard = Destroy(parent.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut s = contained_state(dir.path(), &parent);
    let out = s
        .run(cmd("/bin/sh", &["-c", "cat /proc/self/cgroup"]))
        .await
        .unwrap()
        .unwrap();
    let name = parent.paths()[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        out.stdout.contains(&format!("{name}/svc-web/run-")),
        "{}",
        out.stdout
    );
    // A daemon that keeps the output pipe open makes the run time out; the leaf dies with it.
    let pidfile = dir.path().join("daemon.pid");
    let script = format!(
        "setsid sh -c 'echo $$ > {}; sleep 300' & wait",
        pidfile.display()
    );
    let mut slow = cmd("/bin/sh", &["-c", &script]);
    slow.timeout_ms = 300;
    let err = s.run(slow).await.unwrap().unwrap_err();
    assert!(err.contains("timed out"), "{err}");
    // On a loaded machine the run can time out before the daemon wrote its pid; the
    // cgroup below must be empty all the same.
    let daemon = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok());
    if let Some(daemon) = daemon {
        let stat = std::fs::read_to_string(format!("/proc/{daemon}/stat")).unwrap_or_default();
        let alive = !stat.is_empty()
            && !stat
                .rsplit_once(')')
                .unwrap()
                .1
                .trim_start()
                .starts_with('Z');
        assert!(!alive, "the daemon of a timed-out run survived");
    }
    let svc = parent.child("svc-web");
    assert!(svc.procs().is_empty(), "{:?}", svc.procs());
}

#[tokio::test]
async fn a_process_named_after_a_secret_is_refused_before_it_reaches_the_agent_log() {
    let dir = tempfile::tempdir().unwrap();
    let dirs = DirMap::from([(DirKind::Service, dir.path().to_owned())]);
    let env = bare_env(dirs, dir.path().join("logs"));
    let redactor = Redactor::new(["Sup3rSecret".to_string()]);
    let (mut s, _) = State::new("t", &caps(&[]), &env, redactor, None).unwrap();
    let spec = WitSpec {
        name: "x-Sup3rSecret".into(),
        program: "/bin/sleep".into(),
        args: vec!["30".into()],
        env: Vec::new(),
        working_dir: None,
    };
    let err = s.spawn(spec).await.unwrap().unwrap_err();
    assert_eq!(err, "a process name must not contain a secret");
    assert!(!err.contains("Sup3rSecret"));
    let logs = dir.path().join("logs");
    assert!(!logs.exists() || std::fs::read_dir(&logs).unwrap().next().is_none());
}

/// A call's state carrying `ctx` as its hook's context.
fn state_with_context(
    dir: &Path,
    caps: &Capabilities,
    ctx: Option<stratus_model::context::ServiceContext>,
) -> State {
    let env = bare_env(DirMap::default(), dir.join("logs"));
    State::new(
        "t",
        caps,
        &env,
        Redactor::default(),
        ctx.map(std::sync::Arc::new),
    )
    .unwrap()
    .0
}

fn sample_context(dir: &Path) -> stratus_model::context::ServiceContext {
    use stratus_model::context::*;
    ServiceContext {
        deployment: "shop".into(),
        tier: "app".into(),
        server: ServerInfo {
            id: "app-1".into(),
            name: "shop-app-1".into(),
            address: "127.0.0.5".into(),
        },
        service_id: "7".into(),
        service_name: "web".into(),
        service_dir: dir.display().to_string(),
        settings: vec![("greeting".into(), "say \"hi\"".into())],
        ports: vec![Port {
            name: "http".into(),
            private_port: 8080,
            public_port: 80,
        }],
        credentials: vec![Credential {
            name: "admin".into(),
            user: "root".into(),
            password: "pw-admin".into(),
        }],
        data_source: None,
        dependencies: vec![],
    }
}

#[tokio::test]
async fn render_template_uses_the_hooks_context_extra_variables_and_escaping() {
    use crate::bindings::host::Escaping;
    let dir = tempfile::tempdir().unwrap();
    let ctx = sample_context(dir.path());
    let mut s = state_with_context(dir.path(), &caps(&[]), Some(ctx));
    let extra = vec![("port.http.private".to_string(), "9090".to_string())];
    let text = "{{ server.address }}:{{port.http.private}} g=\"{{ setting.greeting }}\"\n";
    let plain = s.render_template(text.into(), extra.clone(), Escaping::None);
    assert_eq!(
        plain.await.unwrap().unwrap(),
        "127.0.0.5:9090 g=\"say \"hi\"\"\n"
    );
    let toml = s.render_template(text.into(), extra, Escaping::TomlString);
    assert_eq!(
        toml.await.unwrap().unwrap(),
        "127.0.0.5:9090 g=\"say \\\"hi\\\"\"\n"
    );
    let typo = s.render_template("a\n{{ port.http.privat }}".into(), vec![], Escaping::None);
    assert_eq!(
        typo.await.unwrap().unwrap_err(),
        "line 2: unknown template variable `port.http.privat`"
    );
}

#[tokio::test]
async fn rendering_is_bounded_by_the_plugins_memory() {
    use crate::bindings::host::Escaping;
    let dir = tempfile::tempdir().unwrap();
    let caps = Capabilities {
        memory_mb: 1,
        ..caps(&[])
    };
    let mut s = state_with_context(dir.path(), &caps, Some(sample_context(dir.path())));
    // 64 KiB per placeholder, 32 placeholders: 2 MiB of output from a 600-byte template.
    let extra = vec![("big".to_string(), "x".repeat(64 << 10))];
    let err = s
        .render_template("{{big}}".repeat(32), extra, Escaping::None)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err, "the rendered text exceeds 1048576 bytes");
}

/// A rendering that outgrows what is rendered in place is finished whole on a blocking
/// thread, and a mistake found past that size is still the error reported.
#[tokio::test]
async fn a_rendering_beyond_the_inline_size_is_whole_and_its_late_mistakes_are_reported() {
    use crate::bindings::host::Escaping;
    use crate::render::INLINE_RENDER_BYTES;
    let dir = tempfile::tempdir().unwrap();
    let mut s = state_with_context(dir.path(), &caps(&[]), Some(sample_context(dir.path())));
    let extra = vec![("big".to_string(), "x".repeat(INLINE_RENDER_BYTES))];
    let whole = s
        .render_template(
            "{{big}}\n{{big}}\n{{ tier }}".into(),
            extra.clone(),
            Escaping::None,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(whole.len(), 2 * INLINE_RENDER_BYTES + 2 + "app".len());
    assert!(whole.ends_with("\napp"), "{}", &whole[whole.len() - 10..]);
    let late = s
        .render_template("{{big}}\n{{big}}\n{{ tyer }}".into(), extra, Escaping::None)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(late, "line 3: unknown template variable `tyer`");
}

#[tokio::test]
async fn rendering_stops_at_16_mib_however_much_memory_the_plugin_has() {
    use crate::bindings::host::Escaping;
    let dir = tempfile::tempdir().unwrap();
    let caps = Capabilities {
        memory_mb: 1024,
        ..caps(&[])
    };
    let mut s = state_with_context(dir.path(), &caps, Some(sample_context(dir.path())));
    // JSON-escaping makes each control character six bytes: 6 GiB if nothing stopped it.
    let extra = vec![("x".to_string(), "\u{1}".repeat(1 << 20))];
    let err = s
        .render_template("{{ x }}".repeat(1000), extra, Escaping::JsonString)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err, "the rendered text exceeds 16777216 bytes");
}

#[tokio::test]
async fn enstratus_cfg_renders_the_context_and_cm_hooks_have_none() {
    use crate::bindings::host::Escaping;
    let dir = tempfile::tempdir().unwrap();
    let mut s = state_with_context(dir.path(), &caps(&[]), Some(sample_context(dir.path())));
    let cfg = s.enstratus_cfg().await.unwrap().unwrap();
    assert!(cfg.starts_with("[enstratus]\n"), "{cfg}");
    assert!(
        cfg.lines()
            .any(|l| l == "serviceKey.admin.password=pw-admin")
    );
    assert!(cfg.lines().any(|l| l == "port.http.privatePort=8080"));

    let mut cm = state_with_context(dir.path(), &caps(&[]), None);
    let err = cm.enstratus_cfg().await.unwrap().unwrap_err();
    assert!(err.contains("no service context"), "{err}");
    let err = cm
        .render_template("{{ tier }}".into(), vec![], Escaping::None)
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.contains("no service context"), "{err}");
}
