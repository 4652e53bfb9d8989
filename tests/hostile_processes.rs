//! Process attacks in real launches: a plugin that daemonizes a hundred children, one that
//! spawns far more tasks than its `processes` allow, and one that hands loader and interpreter
//! variables to the programs it runs. Each test checks the refusal or containment and that the
//! deployment and its agent stay healthy (status answers, terminate succeeds).

use crate::common;

use common::marks::{Reap, marked};
use common::{Stratus, read, servers, terminate};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The hostile package copied to `<state>/<name>` with its own `[capabilities]`.
fn hostile_package(st: &Stratus, name: &str, capabilities: &str) -> PathBuf {
    common::package_copy(st, name, "hostile", |_| {
        format!(
            "[plugin]\nname = \"hostile\"\nversion = \"0.1.0\"\nworld = \"service\"\n\n\
             [capabilities]\nmemory-mb = 64\ntimeout-ms = 10000\n\
             dirs = [ {{ dir = \"service\", access = \"read-write\" }} ]\n{capabilities}\n"
        )
    })
}

/// A marker no other process on the machine carries.
fn marker(test: &str) -> String {
    common::marks::marker("stratus-mark", test)
}

/// Waits until at least `n` marked processes run, and returns them.
fn wait_marked(marker: &str, n: usize) -> Vec<u32> {
    common::marks::wait_marked(marker, n, Duration::from_secs(20))
}

/// Cgroup directories of deployment `dep` in any hierarchy (the provider names them
/// `stratus-<deployment>-<server>-<hash>`).
fn cgroups_of(dep: &str) -> Vec<PathBuf> {
    let prefix = format!("stratus-{dep}-");
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    roots.extend(
        std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("cgroup.procs").exists()),
    );
    roots
        .iter()
        .flat_map(|r| std::fs::read_dir(r).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .collect()
}

fn cgroups_available() -> bool {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.procs").exists()
        || Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists();
    if !v2 {
        eprintln!("skipped: no cgroup v2 hierarchy on this host");
    }
    v2
}

fn assert_agent_running(st: &Stratus, dep: &str) {
    let d = st.deployment(dep);
    for s in servers(&d, "h") {
        assert_eq!(s["agent"], "RUNNING", "{s}");
    }
}

#[test]
fn a_daemonizing_plugin_leaves_no_process_and_no_cgroup_after_terminate() {
    let st = Stratus::new();
    let mark = marker("daemon");
    let _reap = Reap(mark.clone());
    // 1 + 1 + 100 shells + 100 sleeps fit under 512.
    let pkg = hostile_package(&st, "pkg", "programs = [\"/bin/sh\"]\nprocesses = 512");
    let settings = format!("attack = \"proc-daemonize\", marker = \"{mark}\"");
    let file = common::one_service(&st, "hpdaemon", &pkg, &settings, "");
    st.ok(&["launch", file.to_str().unwrap()]);
    assert_eq!(st.deployment("hpdaemon")["state"], "RUNNING");

    // The daemon itself and its hundred children carry the marker.
    let found = wait_marked(&mark, 101);
    assert!(found.len() >= 101, "only {} marked processes", found.len());
    let contained = cgroups_available();
    if contained {
        let cg = read(Path::new(&format!("/proc/{}/cgroup", found[0])));
        assert!(
            cg.contains("/stratus-hpdaemon-h-1-") && cg.contains("/svc-h/p-daemon"),
            "daemon not in its service's cgroup: {cg}"
        );
        assert!(!cgroups_of("hpdaemon").is_empty());
    }
    assert_agent_running(&st, "hpdaemon");

    terminate(&st, "hpdaemon");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !marked(&mark).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = marked(&mark);
    assert!(
        left.is_empty(),
        "{} marked processes survived terminate: {left:?}",
        left.len()
    );
    if contained {
        let dirs = cgroups_of("hpdaemon");
        assert!(dirs.is_empty(), "cgroups left after terminate: {dirs:?}");
    }
}

#[test]
fn a_fork_bomb_stops_at_the_process_limit_and_the_agent_stays_healthy() {
    if !cgroups_available() {
        return;
    }
    let st = Stratus::new();
    let mark = marker("bomb");
    let _reap = Reap(mark.clone());
    let pkg = hostile_package(&st, "pkg", "programs = [\"/bin/sh\"]\nprocesses = 64");
    let settings = format!("attack = \"proc-fork-bomb\", marker = \"{mark}\", count = \"200\"");
    // The operator narrows the manifest's 64 to 16.
    let file = common::one_service(
        &st,
        "hpbomb",
        &pkg,
        &settings,
        "capabilities = { processes = 16 }\n",
    );
    let out = st.run(&["launch", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("process limit reached") && err.contains("of its 16 tasks"),
        "{err}"
    );
    assert!(err.contains("of 200; refused"), "{err}");
    assert!(!err.contains("LEAKED"), "{err}");
    let running = marked(&mark);
    assert!(
        !running.is_empty() && running.len() <= 16,
        "{} marked tasks under a limit of 16",
        running.len()
    );
    // The agent answers and the service is reported failed, not lost.
    let d = st.deployment("hpbomb");
    assert_eq!(d["state"], "FAILED", "{d}");
    assert_agent_running(&st, "hpbomb");

    terminate(&st, "hpbomb");
    assert!(
        marked(&mark).is_empty(),
        "bomb processes survived terminate"
    );
    assert!(
        cgroups_of("hpbomb").is_empty(),
        "{:?}",
        cgroups_of("hpbomb")
    );
}

#[test]
fn loader_and_interpreter_variables_and_a_planted_path_never_reach_a_program() {
    let st = Stratus::new();
    let pkg = hostile_package(
        &st,
        "pkg",
        "programs = [\"/bin/sh\"]\nprogram-env = [\"PATH\", \"LANG\"]",
    );
    let file = common::one_service(&st, "hpenv", &pkg, "attack = \"proc-ld-preload\"", "");
    let out = st.run(&["launch", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("capability denied: environment variable LD_PRELOAD makes programs load code"),
        "{err}"
    );
    let d = st.deployment("hpenv");
    let server = servers(&d, "h")[0].clone();
    let id = server["services"][0]["id"].as_str().unwrap().to_string();
    let dir = common::server_root(&st, "hpenv", &server)
        .join("mnt/services")
        .join(id);
    let log = read(&dir.join("hostile.log"));
    for needle in [
        "run: capability denied: environment variable LD_PRELOAD makes programs load code",
        "spawn: capability denied: environment variable LD_PRELOAD",
        "run: capability denied: environment variable PYTHONPATH makes programs load code",
        "spawn: capability denied: environment variable PYTHONPATH",
        "run: capability denied: environment variable PATH entry",
        "lies inside a directory the plugin can write",
    ] {
        assert!(log.contains(needle), "{needle} missing from: {log}");
    }
    assert_eq!(log.lines().count(), 3, "{log}");
    assert!(!log.contains("LEAKED"), "{log}");
    assert_agent_running(&st, "hpenv");
    terminate(&st, "hpenv");
}

#[test]
fn a_manifest_listing_a_loader_variable_is_refused_at_launch() {
    let st = Stratus::new();
    let pkg = hostile_package(
        &st,
        "pkg",
        "programs = [\"/bin/sh\"]\nprogram-env = [\"PATH\", \"LD_PRELOAD\"]",
    );
    let file = common::one_service(&st, "hpman", &pkg, "attack = \"none\"", "");
    let out = st.run(&["launch", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let manifest = pkg.join("plugin.toml");
    assert!(
        err.contains("LD_PRELOAD") && err.contains(&manifest.display().to_string()),
        "{err}"
    );
    // Nothing was launched.
    assert!(common::alive(std::process::id()));
    assert!(cgroups_of("hpman").is_empty());
}

#[test]
fn a_deployment_file_cannot_widen_program_env_or_processes() {
    let st = Stratus::new();
    let pkg = hostile_package(
        &st,
        "pkg",
        "programs = [\"/bin/sh\"]\nprogram-env = [\"PATH\"]\nprocesses = 32",
    );
    let wide = "capabilities = { program-env = [\"PATH\", \"LD_PRELOAD\"], processes = 33 }\n";
    let file = common::one_service(&st, "hpwide", &pkg, "attack = \"none\"", wide);
    let out = st.run(&["launch", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for needle in [
        "program-env LD_PRELOAD is not granted",
        "processes 33 > 32",
        "hpwide.toml:",
    ] {
        assert!(err.contains(needle), "{needle} missing from: {err}");
    }
    assert!(cgroups_of("hpwide").is_empty());
}
