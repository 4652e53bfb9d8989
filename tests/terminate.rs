//! Terminate ends servers for real: their disks (root directories) are removed, without
//! following the links a plugin may have left in them, so a relaunch starts from fresh
//! servers; `--keep-disks` moves them aside for a post-mortem. The local provider's capacity
//! (`max-servers`) refuses a launch that does not fit before any server starts, and a tier
//! of a hundred million servers is an error in the file.

use crate::common;

use common::{Stratus, alive, hello_deployment, read, server_root, terminate};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const MARKER: &str = "left-by-the-first-launch";

/// Every server of a deployment's status.
fn all_servers(d: &Value) -> Vec<Value> {
    d["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["servers"].as_array().unwrap().clone())
        .collect()
}

/// Leaves in every root what a plugin could: a marker file, links out of the root (to a
/// directory, to a file, climbing with `..`) and a directory without permissions.
fn fill_roots(st: &Stratus, dep: &str, outside: &Path) -> Vec<(String, PathBuf)> {
    let mut roots = Vec::new();
    for s in all_servers(&st.deployment(dep)) {
        let root = server_root(st, dep, &s);
        assert!(root.is_dir(), "{}", root.display());
        std::fs::write(root.join(MARKER), "old data").unwrap();
        let svc = root.join("mnt/services");
        std::os::unix::fs::symlink(outside, svc.join("to-dir")).unwrap();
        std::os::unix::fs::symlink(outside.join("precious"), svc.join("to-file")).unwrap();
        let depth = svc.components().count();
        let climbing = format!("{}{}", "../".repeat(depth), outside.display());
        std::os::unix::fs::symlink(climbing, svc.join("climbing")).unwrap();
        let locked = svc.join("locked");
        std::fs::create_dir_all(locked.join("inner")).unwrap();
        std::fs::write(locked.join("inner/file"), "x").unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        roots.push((s["id"].as_str().unwrap().to_string(), root));
    }
    roots
}

/// A directory outside every root with a file the links point at.
fn outside(st: &Stratus) -> PathBuf {
    let dir = st.dir().join("outside");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("precious"), "keep me").unwrap();
    dir
}

/// What the links in the disks point at is as it was, once every disk was deleted (terminate
/// moves a disk out at once and deletes it in the background).
fn assert_outside_untouched(st: &Stratus, dir: &Path) {
    assert!(
        disks_deleted(st),
        "the disks terminate moved out were never deleted"
    );
    assert_eq!(read(&dir.join("precious")), "keep me");
    let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    assert_ne!(
        mode & 0o700,
        0,
        "the link target's mode was changed: {mode:o}"
    );
}

/// Whether the state directory's `removing/` is empty (or absent) within 60 s.
fn disks_deleted(st: &Stratus) -> bool {
    let trash = st.dir().join("removing");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < until {
        let empty = match std::fs::read_dir(&trash) {
            Ok(mut entries) => entries.next().is_none(),
            Err(_) => true,
        };
        if empty {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

/// Every server root of `dep` exists and holds nothing the first launch left.
fn assert_fresh(st: &Stratus, dep: &str) {
    let servers = all_servers(&st.deployment(dep));
    assert!(!servers.is_empty());
    for s in servers {
        let root = server_root(st, dep, &s);
        assert!(root.join("agent").is_dir(), "{}", root.display());
        assert!(!root.join(MARKER).exists(), "{} inherited", root.display());
        assert!(!root.join("mnt/services/to-dir").exists());
    }
}

#[test]
fn a_relaunch_after_terminate_starts_from_fresh_servers() {
    let st = Stratus::new();
    let file = st.write_file("hello.toml", &hello_deployment("fresh", 1));
    st.ok(&["launch", file.to_str().unwrap()]);
    let outside = outside(&st);
    let roots = fill_roots(&st, "fresh", &outside);
    assert_eq!(roots.len(), 3);

    terminate(&st, "fresh");
    for (id, root) in &roots {
        assert!(!root.exists(), "{id}: {} is left", root.display());
        assert!(
            !root.parent().unwrap().exists(),
            "{id}: its directory is left"
        );
    }
    assert!(
        !st.dir().join("servers/fresh").exists(),
        "the deployment's servers/ directory goes with its last server"
    );
    assert!(!st.dir().join("kept-disks").exists());
    assert_outside_untouched(&st, &outside);
    // The journal keeps its record of the deployment.
    let d = st.deployment("fresh");
    assert_eq!(d["state"], "TERMINATED", "{d}");
    assert_eq!(all_servers(&d).len(), 3, "{d}");
    assert!(
        st.ok(&["events", "--deployment", "fresh"])
            .contains("TERMINATED")
    );
    let log = read(&st.dir().join("logs/scaling-worker.log"));
    assert_eq!(log.matches("disk removed").count(), 3, "{log}");

    st.ok(&["launch", file.to_str().unwrap()]);
    assert_eq!(st.deployment("fresh")["state"], "RUNNING");
    assert_fresh(&st, "fresh");
    terminate(&st, "fresh");
    assert!(!st.dir().join("servers/fresh").exists());
}

#[test]
fn keep_disks_moves_them_aside_says_where_and_a_relaunch_is_still_fresh() {
    let st = Stratus::new();
    let file = st.write_file("hello.toml", &hello_deployment("kept", 1));
    st.ok(&["launch", file.to_str().unwrap()]);
    let outside = outside(&st);
    let roots = fill_roots(&st, "kept", &outside);
    let pids = st.agent_pids();

    let out = st.ok(&["terminate", "kept", "--keep-disks"]);
    let dir = out
        .lines()
        .find_map(|l| l.strip_prefix("server disks kept for a post-mortem under "))
        .unwrap_or_else(|| panic!("no kept-disks line in: {out}"));
    let dir = PathBuf::from(dir);
    assert_eq!(dir, st.dir().join("kept-disks/kept/1"), "{out}");
    for p in pids {
        assert!(common::wait_gone(p, std::time::Duration::from_secs(10)));
    }
    for (id, root) in &roots {
        assert!(!root.exists(), "{id} is still in servers/");
        let kept = dir.join(id).join("root");
        assert_eq!(read(&kept.join(MARKER)), "old data", "{id}");
        assert!(kept.join("agent/agent.log").is_file(), "{id}");
        let link = std::fs::read_link(kept.join("mnt/services/to-dir")).unwrap();
        assert_eq!(link, outside, "links are kept as links");
    }
    assert_outside_untouched(&st, &outside);

    // A relaunch starts fresh; the next terminate removes its disks and leaves the kept ones.
    st.ok(&["launch", file.to_str().unwrap()]);
    assert_fresh(&st, "kept");
    let out = st.ok(&["terminate", "kept"]);
    assert!(!out.contains("kept for a post-mortem"), "{out}");
    assert!(!st.dir().join("servers/kept").exists());
    assert_eq!(
        read(&dir.join(&roots[0].0).join("root").join(MARKER)),
        "old data"
    );
    assert!(!st.dir().join("kept-disks/kept/2").exists());
    // Kept disks hold links out: remove them as terminate does, without following any.
    for (_, root) in &roots {
        let locked = dir.join(root.parent().unwrap().file_name().unwrap());
        let locked = locked.join("root/mnt/services/locked");
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert_outside_untouched(&st, &outside);
}

/// Pids of live processes started for a server root under `state`.
fn processes_of_state(state: &Path) -> Vec<u32> {
    let marker = format!("STRATUS_SERVER_ROOT={}", state.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|v| v.starts_with(marker.as_bytes()))
            })
        })
        .filter(|pid| alive(*pid))
        .collect()
}

#[test]
fn a_launch_beyond_capacity_is_refused_before_any_server_starts() {
    let st = Stratus::new();
    std::fs::create_dir_all(st.dir().join("provider")).unwrap();
    std::fs::write(st.dir().join("provider/max-servers"), "3\n").unwrap();

    // Four servers (app min 2) do not fit in three.
    let big = st.write_file("big.toml", &hello_deployment("big", 2));
    let out = st.run(&["launch", big.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("deployment big needs 4 servers, the local provider has room for 3 (max-servers 3, 0 in use)"),
        "{err}"
    );
    assert!(
        !st.dir().join("servers").exists(),
        "a server directory was made"
    );
    assert!(processes_of_state(st.dir()).is_empty(), "an agent started");
    let status = st.status();
    assert_eq!(status["deployments"], serde_json::json!([]), "{status}");

    // Three fit exactly; then nothing more does.
    let small = st.write_file("small.toml", &hello_deployment("small", 1));
    st.ok(&["launch", small.to_str().unwrap()]);
    assert_eq!(st.deployment("small")["state"], "RUNNING");
    let other = st.write_file("other.toml", &hello_deployment("other", 1));
    let out = st.run(&["launch", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "needs 3 servers, the local provider has room for 0 (max-servers 3, 3 in use)"
        ),
        "{err}"
    );
    assert!(!st.dir().join("servers/other").exists());
    assert!(processes_of_state(st.dir()).len() >= 3);
    terminate(&st, "small");
    assert!(processes_of_state(st.dir()).is_empty());
}

#[test]
fn a_tier_of_a_hundred_million_servers_is_an_error_in_the_file() {
    let st = Stratus::new();
    let text =
        hello_deployment("huge", 2).replace("min = 2\nmax = 4", "min = 100000000\nmax = 100000000");
    let line = 1 + text.lines().position(|l| l == "min = 100000000").unwrap();
    let file = st.write_file("huge.toml", &text);
    let out = st.run(&["launch", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let at =
        format!("huge.toml:{line}:7: min (100000000) is above the limit of 10000 servers per tier");
    assert!(err.contains(&at), "{at} missing from: {err}");
    assert!(err.contains("nothing was launched"), "{err}");
    assert!(!st.dir().join("stratus.db").exists());
    assert!(!st.dir().join("servers").exists());
}

/// Runs `stratus terminate DEP --keep-disks` with a control plane that exits once `step`
/// completed, checks it stopped there (STOPPING), then starts a control plane afresh and waits
/// for it to carry the terminate through to TERMINATED; returns that control plane.
fn crash_in_terminate_and_resume(st: &Stratus, dep: &str, step: &str) -> std::process::Child {
    let _ = st
        .cmd()
        .env("STRATUS_FAULT_EXIT_AFTER", step)
        .args(["terminate", dep, "--keep-disks", "--no-wait"])
        .output()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !read(&st.dir().join("logs/control.out")).contains("exiting at") {
        assert!(std::time::Instant::now() < deadline, "no fault at {step}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if let Some(pid) = st.control_pid() {
        assert!(common::wait_gone(pid, std::time::Duration::from_secs(30)));
    }
    assert_eq!(st.deployment(dep)["state"], "STOPPING");

    // A control plane started afresh resumes the terminate with the choice it was given.
    let serve = st
        .cmd()
        .args(["serve", "--exit-when-idle"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while st.deployment(dep)["state"] != "TERMINATED" {
        assert!(
            std::time::Instant::now() < deadline,
            "terminate did not resume"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    serve
}

/// A control plane killed while servers end (one has ended, the others are on their way,
/// already TERMINATED in the store) resumes: the servers half-way through end again, every
/// disk is kept, and the events say where.
#[test]
fn a_terminate_killed_while_servers_end_ends_every_server_when_resumed() {
    let st = Stratus::new();
    let file = st.write_file("hello.toml", &hello_deployment("re", 2));
    st.ok(&["launch", file.to_str().unwrap()]);
    let roots = fill_roots(&st, "re", &outside(&st));
    let pids = st.agent_pids();
    st.ok(&["shutdown"]);

    let mut serve = crash_in_terminate_and_resume(&st, "re", "server/app-1/end");
    for p in pids {
        assert!(common::wait_gone(p, std::time::Duration::from_secs(10)));
    }
    let kept = st.dir().join("kept-disks/re/1");
    for (id, root) in &roots {
        assert!(!root.exists(), "{id} is still in servers/");
        assert_eq!(read(&kept.join(id).join("root").join(MARKER)), "old data");
    }
    let left: Vec<_> = std::fs::read_dir(st.dir().join("servers/re"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "server disks left: {left:?}");
    let events = st.ok(&["events", "--deployment", "re"]);
    assert!(
        events.contains(&format!("server disks kept under {}", kept.display())),
        "{events}"
    );
    st.ok(&["shutdown"]);
    let _ = serve.wait();
}

#[test]
fn a_terminate_resumed_after_a_crash_keeps_the_disks_it_was_asked_to_keep() {
    let st = Stratus::new();
    let file = st.write_file("hello.toml", &hello_deployment("rk", 1));
    st.ok(&["launch", file.to_str().unwrap()]);
    let roots = fill_roots(&st, "rk", &outside(&st));
    let pids = st.agent_pids();
    let d = st.deployment("rk");
    st.ok(&["shutdown"]);

    // The control plane dies right after the app server's `stop`, in the middle of terminate.
    let mut serve = crash_in_terminate_and_resume(&st, "rk", "reconcile/2/app/app-1/stop");
    for p in pids {
        assert!(common::wait_gone(p, std::time::Duration::from_secs(10)));
    }
    let kept = st.dir().join("kept-disks/rk/1");
    for (id, root) in &roots {
        assert!(!root.exists(), "{id} is still in servers/");
        assert_eq!(read(&kept.join(id).join("root").join(MARKER)), "old data");
    }
    // The hooks completed before the crash did not run again; the others ran once.
    let hooks = |tier: &str| {
        let server = &common::servers(&d, tier)[0];
        read(&kept_service_dir(&st, "rk", &kept, server).join("hooks.log"))
    };
    let app = hooks("app");
    assert_eq!(
        app.lines().collect::<Vec<_>>(),
        ["install-service", "configure", "stop", "start", "stop"],
        "{app}"
    );
    let lb = hooks("lb");
    assert!(
        lb.ends_with("start\nstart-proxy\nremove-nodes\nstop\n"),
        "{lb}"
    );
    let db = hooks("db");
    assert_eq!(db.matches("revoke-database-access").count(), 1, "{db}");
    assert!(db.ends_with("stop\n"), "{db}");
    assert!(!st.dir().join("servers/rk").exists());
    st.ok(&["shutdown"]);
    let _ = serve.wait();
}

/// Lines of the logs under `logs/` (a hook's log holds its last call) that report loading the
/// data source into `shop`, and finding it already loaded.
fn shop_loads(st: &Stratus) -> (usize, usize) {
    let (mut loaded, mut already) = (0, 0);
    for f in common::every_file(&st.dir().join("logs")) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap_or_default()).into_owned();
        for l in text.lines().filter(|l| l.contains("into `shop`")) {
            if l.contains("data source already loaded") {
                already += 1;
            } else if l.contains("loaded ") && !l.contains("loading ") {
                loaded += 1;
            }
        }
    }
    (loaded, already)
}

#[test]
fn three_tier_relaunched_after_terminate_loads_its_data_source_again() {
    let st = Stratus::new();
    let file = stratus_plugin_artifacts::repo_root().join("examples/three-tier/deployment.toml");
    st.ok(&["launch", file.to_str().unwrap()]);
    assert_eq!(shop_loads(&st), (1, 0));
    terminate(&st, "shop");
    assert!(!st.dir().join("servers/shop").exists());

    st.ok(&["launch", file.to_str().unwrap()]);
    assert_eq!(st.deployment("shop")["state"], "RUNNING");
    // Before terminate removed the disks, this said "data source already loaded into `shop`".
    assert_eq!(
        shop_loads(&st),
        (1, 0),
        "the relaunch inherited the old database"
    );
    terminate(&st, "shop");
}

/// A process of a server that outlived terminate (here one the test started with the server's
/// root marker, outside its cgroup) keeps that server's disk, and terminate says so; the next
/// launch of the server stops that process and starts from a fresh disk all the same.
#[test]
fn a_disk_whose_server_still_has_a_process_is_left_named_and_cleared_at_relaunch() {
    use std::os::unix::process::CommandExt;
    let st = Stratus::new();
    let file = st.write_file("hello.toml", &hello_deployment("busy", 1));
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = st.deployment("busy");
    let app = &common::servers(&d, "app")[0];
    let root = server_root(&st, "busy", app);
    std::fs::write(root.join(MARKER), "old data").unwrap();
    // Its own process group, as a server's processes have: the launch signals that group.
    let mut straggler = std::process::Command::new("sleep")
        .arg("60")
        .env("STRATUS_SERVER_ROOT", &root)
        .current_dir(&root)
        .process_group(0)
        .spawn()
        .unwrap();

    let out = st.run(&["terminate", "busy"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let still_there = root.join(MARKER).exists();
    let lb = &common::servers(&d, "lb")[0];
    let lb_gone = !server_root(&st, "busy", lb).exists();

    let relaunch = st.run(&["launch", file.to_str().unwrap()]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let stopped = loop {
        match straggler.try_wait().unwrap() {
            Some(_) => break true,
            None if std::time::Instant::now() > deadline => break false,
            None => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    };
    let _ = straggler.kill();
    let _ = straggler.wait();

    assert!(out.status.success(), "{out:?}");
    assert!(
        err.contains("warning: ending the disk of app-1:")
            && err.contains(&format!("[{}]", straggler.id()))
            && err.contains("its disk is left in place"),
        "{err}"
    );
    assert!(still_there, "the busy disk was removed");
    assert!(lb_gone, "the other disks go");
    assert!(relaunch.status.success(), "{relaunch:?}");
    assert!(
        stopped,
        "the relaunch left the old server's process running"
    );
    assert_eq!(st.deployment("busy")["state"], "RUNNING");
    assert_fresh(&st, "busy");
    terminate(&st, "busy");
    assert!(!st.dir().join("servers/busy").exists());
}

/// Live processes whose command line names a server directory under `state` (agents, and the
/// programs they start, which name their files there).
fn processes_naming(state: &Path) -> Vec<u32> {
    common::marks::marked(&state.join("servers").to_string_lossy())
}

#[test]
fn a_terminate_right_after_launch_leaves_no_server_it_was_starting() {
    let st = Stratus::new();
    let file = st.write_file("early.toml", &hello_deployment("early", 6));
    st.ok(&["launch", "--no-wait", file.to_str().unwrap()]);
    // While the launch is still bringing servers up.
    st.ok(&["terminate", "early"]);
    assert_eq!(st.deployment("early")["state"], "TERMINATED");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !processes_naming(st.dir()).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        processes_naming(st.dir()),
        Vec::<u32>::new(),
        "a server outlived terminate"
    );
    let servers = st.dir().join("servers/early");
    let left: Vec<_> = std::fs::read_dir(&servers)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "server disks left: {left:?}");
}

/// A server's only service directory inside its disk kept under `kept`.
fn kept_service_dir(st: &Stratus, dep: &str, kept: &Path, server: &Value) -> PathBuf {
    assert!(
        !server_root(st, dep, server).exists(),
        "{server} is still in servers/"
    );
    let service = server["services"][0]["id"].as_str().unwrap();
    let id = server["id"].as_str().unwrap();
    kept.join(id)
        .join("root")
        .join("mnt/services")
        .join(service)
}

/// Index of the first line of `log` that names `server` and contains `text`.
fn line_of(log: &[&str], server: &str, text: &str) -> usize {
    let who = format!("server={server} ");
    log.iter()
        .position(|l| l.contains(&who) && l.contains(text))
        .unwrap_or_else(|| panic!("no `{text}` for {server} in:\n{}", log.join("\n")))
}

fn mtime(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

/// Terminate is the launch backwards across the whole deployment: the load balancer drops
/// every node before any app server stops, every app server stops before the database does,
/// and the database revokes every app server's grant first. What the plugins wrote shows each
/// hook ran; the control plane's log (one file, in order) and the plugins' file times show the
/// order.
#[test]
fn terminate_drops_nodes_then_stops_apps_then_revokes_and_stops_the_database() {
    let st = Stratus::new();
    let file = st.write_file("hello.toml", &hello_deployment("order", 2));
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = st.deployment("order");
    let (lb, app, db) = (
        common::servers(&d, "lb"),
        common::servers(&d, "app"),
        common::servers(&d, "db"),
    );
    let (_, kept) = common::terminate_keeping_disks(&st, "order");
    let dir = |s: &Value| kept_service_dir(&st, "order", &kept, s);

    let lb_dir = dir(&lb[0]);
    let lb_hooks = read(&lb_dir.join("hooks.log"));
    assert!(
        lb_hooks.ends_with("start-proxy\nremove-nodes\nstop\n"),
        "{lb_hooks}"
    );
    let nodes = read(&lb_dir.join("nodes.txt"));
    assert!(common::nodes_in(&nodes).is_empty(), "nodes left: {nodes}");
    for s in &app {
        let hooks = read(&dir(s).join("hooks.log"));
        assert!(hooks.ends_with("start\nstop\n"), "{}: {hooks}", s["id"]);
    }
    let db_dir = dir(&db[0]);
    let grants = read(&db_dir.join("grants.log"));
    assert!(grants.lines().any(|l| l.starts_with("revoke ")), "{grants}");
    assert!(
        common::granted_in(&grants).is_empty(),
        "still granted: {grants}"
    );
    let revoked_lines = grants.lines().filter(|l| l.starts_with("revoke "));
    let revoked: String = revoked_lines.collect::<Vec<_>>().join("\n");
    for a in common::addresses(&app) {
        assert!(revoked.contains(&a), "{a} not revoked: {grants}");
    }
    let db_hooks = read(&db_dir.join("hooks.log"));
    assert!(
        db_hooks.ends_with("revoke-database-access\nstop\n"),
        "{db_hooks}"
    );

    // The control plane's record of the terminate's change set, in the order things happened.
    let log = read(&st.dir().join("logs/configuration-worker.log"));
    let from = log
        .find("(reconcile/2/")
        .expect("terminate is change set 2");
    let log: Vec<&str> = log[log[..from].rfind('\n').map_or(0, |i| i + 1)..]
        .lines()
        .collect();
    let lb_id = lb[0]["id"].as_str().unwrap();
    let db_id = db[0]["id"].as_str().unwrap();
    let dropped = line_of(&log, lb_id, "hook remove-nodes done");
    let revoked = line_of(&log, db_id, "hook revoke-database-access done");
    let db_stops = line_of(&log, db_id, "calling hook stop");
    for s in &app {
        let id = s["id"].as_str().unwrap();
        let stops = line_of(&log, id, "calling hook stop");
        let stopped = line_of(&log, id, "hook stop done");
        assert!(
            dropped < stops,
            "{id} stopped before the nodes were dropped"
        );
        assert!(stopped < db_stops, "the database stopped before {id}");
    }
    assert!(revoked < db_stops, "the database stopped before revoking");
    // The plugins' own writes agree: the last write of each file is the hook named above.
    let app_last = app.iter().map(|s| mtime(&dir(s).join("hooks.log")));
    let db_stop = mtime(&db_dir.join("hooks.log"));
    for app_stop in app_last {
        assert!(mtime(&lb_dir.join("nodes.txt")) <= app_stop);
        assert!(app_stop <= db_stop);
    }
    assert!(mtime(&db_dir.join("grants.log")) <= db_stop);
}

/// Hooks that fail during terminate do not keep a server alive: here the load balancer's and
/// an app server's `hooks.log` are links out of their service directories (which the sandbox
/// does not follow), so their `remove-nodes` and `stop` fail. Every server ends all the same,
/// nothing outside is written, and the failures are reported together in one warning.
#[test]
fn hooks_failing_in_terminate_are_reported_together_and_every_server_ends() {
    let st = Stratus::new();
    let file = st.write_file("hello.toml", &hello_deployment("failing", 2));
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = st.deployment("failing");
    let outside = outside(&st);
    for s in [
        &common::servers(&d, "lb")[0],
        &common::servers(&d, "app")[0],
    ] {
        let service = s["services"][0]["id"].as_str().unwrap();
        let dir = server_root(&st, "failing", s)
            .join("mnt/services")
            .join(service);
        std::fs::remove_file(dir.join("hooks.log")).unwrap();
        std::os::unix::fs::symlink(outside.join("precious"), dir.join("hooks.log")).unwrap();
    }

    let pids = terminate(&st, "failing");
    assert_eq!(pids.len(), 4);
    assert!(!st.dir().join("servers/failing").exists());
    assert_outside_untouched(&st, &outside);
    let events = st.ok(&["events", "--deployment", "failing"]);
    let warning = events
        .lines()
        .find(|l| l.contains("terminate ended every server but met"))
        .unwrap_or_else(|| panic!("no closing warning in:\n{events}"));
    for needle in [
        "met 3 problem(s)",
        "reconcile/2/lb/lb-1/remove-nodes",
        "stopping lb on lb-1",
        "stopping app on app-1",
    ] {
        assert!(warning.contains(needle), "{needle} missing from: {warning}");
    }
    assert!(!warning.contains("app-2"), "{warning}");
    common::assert_no_secret_leaked(&st, |p| {
        p.extension().is_some_and(|e| e == "log" || e == "out")
    });
}

/// A terminate asked for while a scale-up brings servers up supersedes its change set: the
/// scale's servers (recorded or still starting) end with the others, and the terminate's own
/// change set takes every tier to 0.
#[test]
fn a_terminate_in_the_middle_of_a_scale_up_ends_the_new_servers_too() {
    let st = Stratus::new();
    let file = st.write_file("mid.toml", &hello_deployment("mid", 1));
    st.ok(&["launch", file.to_str().unwrap()]);
    st.ok(&["scale", "mid", "app", "4", "--no-wait"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !st
        .ok(&["events", "--deployment", "mid"])
        .contains("scaling event: tier app 1 -> 4")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the scale never began"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    terminate(&st, "mid");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !processes_naming(st.dir()).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(processes_naming(st.dir()), Vec::<u32>::new());
    // The sweep of servers never recorded leaves `servers/mid` itself, empty.
    let left: Vec<_> = std::fs::read_dir(st.dir().join("servers/mid"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "server disks left: {left:?}");
    let events = st.ok(&["events", "--deployment", "mid"]);
    for tier in ["lb 1 -> 0", "db 1 -> 0"] {
        assert!(
            events.contains(&format!("scaling event: tier {tier}")),
            "{events}"
        );
    }
    assert!(
        events
            .lines()
            .any(|l| l.contains("scaling event: tier app ") && l.ends_with(" -> 0")),
        "{events}"
    );
}
