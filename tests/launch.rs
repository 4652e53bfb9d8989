//! End to end on the local provider with the real binary: launch the hello example to
//! RUNNING, check what every hook saw on disk, check that no secret leaked into any log or
//! event, terminate, and check that no process is left.

use crate::common;

use common::{
    Stratus, alive, assert_no_secret_leaked, hello_deployment, read, server_root, servers,
    terminate_keeping_disks, wait_gone,
};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// The service directory of the only service on a server.
fn service_dir(st: &Stratus, dep: &str, server: &Value) -> PathBuf {
    let id = server["services"][0]["id"].as_str().unwrap().to_string();
    server_root(st, dep, server).join("mnt/services").join(id)
}

#[test]
fn hello_example_launches_to_running_and_terminates_without_leftovers() {
    let st = Stratus::new();
    let file = st.write_file("hello.toml", &hello_deployment("hello", 2));
    st.ok(&["launch", file.to_str().unwrap()]);

    let d = st.deployment("hello");
    assert_eq!(d["state"], "RUNNING", "{d}");
    let lb = servers(&d, "lb");
    let app = servers(&d, "app");
    let db = servers(&d, "db");
    assert_eq!((lb.len(), app.len(), db.len()), (1, 2, 1));
    // Agents run as the agent-only binary built beside `stratus`.
    let agent_binary =
        PathBuf::from(env!("CARGO_BIN_EXE_stratus")).with_file_name(stratus_provider::AGENT_BINARY);
    for pid in st.agent_pids() {
        assert_eq!(program_of(pid), (agent_binary.clone(), None), "agent {pid}");
        // Started from a descriptor, named by itself.
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert_eq!(comm.trim_end(), "stratus-agent", "agent {pid}");
    }
    for s in lb.iter().chain(&app).chain(&db) {
        assert_eq!(s["agent"], "RUNNING", "{s}");
        assert_eq!(s["services"][0]["state"], "RUNNING", "{s}");
        assert!(s["address"].as_str().unwrap().starts_with("127."), "{s}");
    }
    let addresses: Vec<&str> = lb
        .iter()
        .chain(&app)
        .chain(&db)
        .map(|s| s["address"].as_str().unwrap())
        .collect();
    let mut unique = addresses.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        addresses.len(),
        "every server has its own address: {addresses:?}"
    );
    assert_eq!(
        d["endpoints"],
        serde_json::json!([format!("{}:8000", lb[0]["address"].as_str().unwrap())])
    );

    // Each app server rendered its own facts.
    for s in &app {
        let conf = read(&service_dir(&st, "hello", s).join("hello.conf"));
        assert!(conf.contains(s["address"].as_str().unwrap()), "{conf}");
        assert!(conf.contains("greeting=application"), "{conf}");
        let hooks = read(&service_dir(&st, "hello", s).join("hooks.log"));
        assert_eq!(
            hooks.lines().collect::<Vec<_>>(),
            ["install-service", "configure", "stop", "start"],
            "{hooks}"
        );
        // The plugin's own copy of its package has no component (the agent loads the sealed
        // copy's): nothing of its disk allowance goes to a file it has no use for.
        let dir = service_dir(&st, "hello", s);
        assert!(dir.join("plugin.toml").is_file() && dir.join("cfg").is_dir());
        assert!(!dir.join("plugin.wasm").exists(), "{}", dir.display());
        let root = server_root(&st, "hello", s);
        let sealed = root
            .join("agent/sealed")
            .join(dir.strip_prefix(&root).unwrap());
        let shipped = stratus_plugin_artifacts::package_dir("hello").join("plugin.wasm");
        // Compared, not asserted equal: a failure would print two 150 KB byte vectors.
        assert!(
            std::fs::read(sealed.join("plugin.wasm")).unwrap() == std::fs::read(shipped).unwrap(),
            "{} is not the shipped component",
            sealed.join("plugin.wasm").display()
        );
    }
    // The database granted exactly the app servers' addresses, after installing its data source.
    let db_dir = service_dir(&st, "hello", &db[0]);
    let grants = read(&db_dir.join("grants.log"));
    let mut app_addrs: Vec<&str> = app.iter().map(|s| s["address"].as_str().unwrap()).collect();
    app_addrs.sort();
    assert!(
        grants.contains(&format!("addresses={}", app_addrs.join(",")))
            || grants.contains(&format!("addresses={},{}", app_addrs[1], app_addrs[0])),
        "{grants}"
    );
    assert!(grants.contains("user=app"), "{grants}");
    assert!(db_dir.join("datasource.sql").exists());
    let db_hooks = read(&db_dir.join("hooks.log"));
    assert!(
        db_hooks.starts_with("install-service\ninstall-data-source"),
        "{db_hooks}"
    );
    // The load balancer was told exactly the app nodes.
    let nodes = read(&service_dir(&st, "hello", &lb[0]).join("nodes.txt"));
    for a in &app_addrs {
        assert!(nodes.contains(&format!("{a}:8080")), "{nodes}");
    }
    assert_eq!(nodes.lines().count(), 2, "{nodes}");

    // No generated secret appears in any log, event or hook output.
    assert!(st.ok(&["events"]).contains("RUNNING"));
    assert_no_secret_leaked(&st, |p| {
        p.extension().is_some_and(|e| e == "log" || e == "out")
    });

    // Terminate: reverse order, every process gone; the disks are kept to read what ran.
    let (pids, kept) = terminate_keeping_disks(&st, "hello");
    assert_eq!(pids.len(), 4);
    let kept_dir = |server: &Value| {
        let live = service_dir(&st, "hello", server);
        let root = server_root(&st, "hello", server);
        kept.join(server["id"].as_str().unwrap())
            .join("root")
            .join(live.strip_prefix(&root).unwrap())
    };
    let lb_hooks = read(&kept_dir(&lb[0]).join("hooks.log"));
    assert!(lb_hooks.ends_with("remove-nodes\nstop\n"), "{lb_hooks}");
    let revoked = read(&kept_dir(&db[0]).join("grants.log"));
    assert!(revoked.contains("revoke"), "{revoked}");
    // The control plane started by `launch` leaves once nothing is active.
    if let Some(c) = st.control_pid() {
        assert!(
            wait_gone(c, Duration::from_secs(15)),
            "control plane still running"
        );
    }
}

/// The executable a process runs and the first argument after its name.
fn program_of(pid: u32) -> (PathBuf, Option<String>) {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let first = cmdline
        .split(|b| *b == 0)
        .nth(1)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .filter(|a| !a.starts_with("--"));
    (exe, first)
}

#[test]
fn a_stratus_without_its_agent_binary_beside_it_runs_agents_as_stratus_agent() {
    // `stratus` alone in a directory (a hard link: same build, no copy of 200 MB).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let alone = dir.path().join("stratus");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_stratus"), &alone).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_stratus"), &alone).unwrap();
    }
    let st = Stratus::new();
    let file = st.write_file("hello.toml", &hello_deployment("alone", 1));
    let out = std::process::Command::new(&alone)
        .env("STRATUS_STATE_DIR", st.dir())
        .args(["launch", file.to_str().unwrap()])
        .output()
        .unwrap();
    let pids = st.agent_pids();
    let programs: Vec<_> = pids.iter().map(|p| program_of(*p)).collect();
    common::terminate(&st, "alone");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pids.len(), 3);
    for program in programs {
        assert_eq!(program, (alone.clone(), Some("agent".into())));
    }
}

/// An upgrade that renames new binaries over `stratus` and `stratus-agent` while the control
/// plane runs (here: files that fail at once) does not change what it starts: a server added
/// afterwards runs the agent binary the control plane chose at start, not the new file.
#[test]
fn agents_started_after_an_upgrade_in_place_run_the_binary_chosen_at_start() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let stratus = dir.path().join("stratus");
    let agent = dir.path().join(stratus_provider::AGENT_BINARY);
    let built = PathBuf::from(env!("CARGO_BIN_EXE_stratus"));
    for (from, to) in [
        (built.clone(), &stratus),
        (built.with_file_name(stratus_provider::AGENT_BINARY), &agent),
    ] {
        if std::fs::hard_link(&from, to).is_err() {
            std::fs::copy(&from, to).unwrap();
        }
    }
    let st = Stratus::new();
    let file = st.write_file("hello.toml", &hello_deployment("upgraded", 1));
    let out = std::process::Command::new(&stratus)
        .env("STRATUS_STATE_DIR", st.dir())
        .args(["launch", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for path in [&stratus, &agent] {
        let new = dir.path().join("new");
        std::fs::write(&new, "#!/bin/sh\nexit 3\n").unwrap();
        std::fs::set_permissions(&new, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::rename(&new, path).unwrap();
    }
    // Through the running control plane (the `stratus` of the build is only its client).
    let scaled = st.run(&["scale", "upgraded", "app", "2"]);
    let d = st.deployment("upgraded");
    let programs: Vec<_> = st.agent_pids().iter().map(|p| program_of(*p)).collect();
    common::terminate(&st, "upgraded");
    assert!(
        scaled.status.success(),
        "{}",
        String::from_utf8_lossy(&scaled.stderr)
    );
    assert_eq!(servers(&d, "app").len(), 2, "{d}");
    assert_eq!(d["state"], "RUNNING", "{d}");
    assert_eq!(programs.len(), 4);
    // The file chosen, unlinked from its path by the rename.
    let mut chosen = agent.into_os_string();
    chosen.push(" (deleted)");
    for program in programs {
        assert_eq!(program, (PathBuf::from(&chosen), None));
    }
}

#[test]
fn a_broken_deployment_file_is_refused_with_its_location_and_launches_nothing() {
    let st = Stratus::new();
    let text = hello_deployment("broken", 2).replace("min = 2\nmax = 4", "min = 5\nmax = 4");
    let file = st.write_file("broken.toml", &text);
    let out = st.run(&["launch", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.toml:"), "{err}");
    assert!(err.contains("nothing was launched"), "{err}");
    assert!(st.control_pid().is_none_or(|p| !alive(p)));
    assert!(
        !st.dir().join("stratus.db").exists(),
        "nothing was recorded"
    );
}

#[test]
fn a_failing_hook_fails_the_launch_naming_step_server_hook_and_error() {
    let st = Stratus::new();
    let hostile = stratus_plugin_artifacts::package_dir("hostile");
    let text = hello_deployment("doomed", 1);
    // The app tier's package becomes the hostile plugin, told to escape through /etc/passwd.
    let (head, app) = text.split_once("[services.app]").unwrap();
    let app = app.replacen(
        &format!(
            "package = \"{}\"",
            stratus_plugin_artifacts::package_dir("hello").display()
        ),
        &format!("package = \"{}\"", hostile.display()),
        1,
    );
    let app = app.replace(
        "settings = { greeting = \"application\" }",
        "settings = { attack = \"read-passwd\" }",
    );
    let file = st.write_file("doomed.toml", &format!("{head}[services.app]{app}"));
    let out = st.run(&["launch", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "FAILED",
        "service/app/app-1/configure",
        "app-1",
        "hook configure",
        "/etc/passwd",
    ] {
        assert!(err.contains(needle), "{needle} missing from: {err}");
    }
    let d = st.deployment("doomed");
    assert_eq!(d["state"], "FAILED");
    let app = servers(&d, "app");
    assert_eq!(app[0]["services"][0]["state"], "FAILED", "{d}");
    // The database it depends on was configured and is still running; nothing is lost.
    assert_eq!(
        servers(&d, "db")[0]["services"][0]["state"],
        "RUNNING",
        "{d}"
    );
    let pids = st.agent_pids();
    st.ok(&["terminate", "doomed"]);
    for p in pids {
        assert!(
            wait_gone(p, Duration::from_secs(10)),
            "agent {p} still running"
        );
    }
}

#[test]
fn an_agent_that_dies_is_reported_lost() {
    let st = Stratus::new();
    // Recovery off: this test is about the report, not the replacement (tests/recovery.rs).
    let text =
        hello_deployment("lost", 1).replace("[tiers.app]\n", "[tiers.app]\nrecovery = \"off\"\n");
    let file = st.write_file("lost.toml", &text);
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = st.deployment("lost");
    let app = &common::servers(&d, "app")[0];
    let pid = app["pid"].as_u64().unwrap() as u32;
    // The server dies under the agent: end its process group as a crashed VM would.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(wait_gone(pid, Duration::from_secs(10)));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let state = loop {
        let d = st.deployment("lost");
        let state = common::servers(&d, "app")[0]["agent"]
            .as_str()
            .unwrap()
            .to_string();
        if state == "LOST" || std::time::Instant::now() > deadline {
            break state;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(state, "LOST");
    let monitor = std::fs::read_to_string(st.dir().join("logs/monitor-server.log")).unwrap();
    assert!(
        monitor.contains("server=app-1 agent LOST: its connection closed"),
        "{monitor}"
    );
    // The other servers are untouched, and terminate still ends everything.
    assert_eq!(
        common::servers(&st.deployment("lost"), "db")[0]["agent"],
        "RUNNING"
    );
    st.ok(&["terminate", "lost"]);
    assert_eq!(
        common::servers(&st.deployment("lost"), "app")[0]["agent"],
        "TERMINATED"
    );
}
