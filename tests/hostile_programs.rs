//! Attacks through the programs a plugin is granted, in real launches (the agent runs as root
//! here). Every granted program runs as the server's program uid (`0x7000_0000` + its address
//! lease, `stratus_provider::program_uid`; `STRATUS_PROGRAM_USER` makes it one shared user): a
//! granted `/bin/cat` cannot read the agent's credential or `/etc/shadow`, `id` through `run`
//! and `spawn` shows the program user, a spawned shell cannot move itself into a root cgroup,
//! and the shipped haproxy grant's `lua-load` escape runs as the program user, cannot read
//! either file or leave its cgroup, and leaves nothing after terminate. Each test checks that
//! the deployment and its agent stay healthy.

use crate::common;

use common::marks::{Reap, marked};
use common::{Stratus, read, server_root, servers, terminate};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The program uid of the only server of deployment `dep` (tier `h`), from its address.
fn program_uid(st: &Stratus, dep: &str) -> u32 {
    let server = servers(&st.deployment(dep), "h")[0].clone();
    let address = server["address"].as_str().unwrap().parse().unwrap();
    stratus_provider::program_uid(address).unwrap()
}

/// What `id` prints for a per-server program uid (no name, its gid, no other group).
fn program_user_id(uid: u32) -> String {
    format!("uid={uid} gid={uid} groups={uid}")
}

/// The hostile package copied to `<state>/<name>`, granted `programs`.
fn hostile_package(st: &Stratus, name: &str, programs: &str) -> PathBuf {
    common::package_copy(st, name, "hostile", |_| {
        format!(
            "[plugin]\nname = \"hostile\"\nversion = \"0.1.0\"\nworld = \"service\"\n\n\
             [capabilities]\nmemory-mb = 64\ntimeout-ms = 20000\n\
             dirs = [ {{ dir = \"service\", access = \"read-write\" }} ]\nprograms = [{programs}]\n"
        )
    })
}

/// Launches one hostile service running `attack` (with `marker`), which must reach RUNNING;
/// returns the server's root and the service directory.
fn launch(
    st: &Stratus,
    dep: &str,
    programs: &str,
    attack: &str,
    marker: &str,
) -> (PathBuf, PathBuf) {
    launch_as(st, None, dep, programs, attack, marker)
}

/// [`launch`] with `STRATUS_PROGRAM_USER` set to `user` for the control plane and its agents.
fn launch_as(
    st: &Stratus,
    user: Option<&str>,
    dep: &str,
    programs: &str,
    attack: &str,
    marker: &str,
) -> (PathBuf, PathBuf) {
    let pkg = hostile_package(st, dep, programs);
    let settings = format!("attack = \"{attack}\", marker = \"{marker}\"");
    let file = common::one_service(st, dep, &pkg, &settings, "");
    let mut cmd = st.cmd();
    if let Some(u) = user {
        cmd.env("STRATUS_PROGRAM_USER", u);
    }
    let out = cmd
        .args(["launch", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let d = st.deployment(dep);
    assert_eq!(d["state"], "RUNNING", "{d}");
    let server: Value = servers(&d, "h")[0].clone();
    let id = server["services"][0]["id"].as_str().unwrap().to_string();
    let root = server_root(st, dep, &server);
    let dir = root.join("mnt/services").join(id);
    (root, dir)
}

fn assert_healthy(st: &Stratus, dep: &str) {
    let d = st.deployment(dep);
    assert_eq!(d["state"], "RUNNING", "{d}");
    for s in servers(&d, "h") {
        assert_eq!(s["agent"], "RUNNING", "{s}");
    }
}

/// A marker no other process on the machine carries.
fn marker(test: &str) -> String {
    common::marks::marker("stratus-prog", test)
}

/// Waits up to ten seconds for a marked process.
fn wait_marked(marker: &str) -> Vec<u32> {
    common::marks::wait_marked(marker, 1, Duration::from_secs(10))
}

/// The real uid and the cgroups of `pid`.
fn uid_and_cgroups(pid: u32) -> (String, String) {
    let status = read(Path::new(&format!("/proc/{pid}/status")));
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .unwrap_or_default();
    (uid, read(Path::new(&format!("/proc/{pid}/cgroup"))))
}

/// Every hierarchy line of a process's `/proc/<pid>/cgroup` that matters for containment
/// (pids and the unified one) names a cgroup of deployment `dep`, not the root.
fn assert_contained(cgroups: &str, dep: &str) {
    for line in cgroups
        .lines()
        .filter(|l| l.contains(":pids:") || l.starts_with("0::"))
    {
        let path = line.rsplit(':').next().unwrap_or("");
        assert!(
            path.contains(&format!("stratus-{dep}-")),
            "the process left its cgroup: {line}"
        );
    }
}

#[test]
fn a_granted_cat_cannot_read_the_agents_credential_or_shadow() {
    let st = Stratus::new();
    let (root, dir) = launch(&st, "pcat", "\"/bin/cat\"", "proc-cat-credential", "-");
    let credential = root.join("agent/bootstrap.json");
    let replaced = root.join("agent/credential");
    assert!(
        replaced.exists(),
        "the launch credential was replaced before hooks ran"
    );
    let log = read(&dir.join("hostile.log"));
    let targets = [&credential, &replaced].map(|p| p.display().to_string());
    for target in targets.into_iter().chain(["/etc/shadow".into()]) {
        assert!(
            log.contains(&format!(
                "{target}: refused: /bin/cat: {target}: Permission denied"
            )),
            "{target} not refused: {log}"
        );
    }
    assert!(!log.contains(read(&credential).trim()), "{log}");
    assert!(!log.contains(read(&replaced).trim()), "{log}");
    // The private area and the credential are closed to everyone but the agent.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&root.join("agent")), 0o700);
    assert_eq!(mode(&credential), 0o600);
    assert_eq!(mode(&replaced), 0o600);
    assert_healthy(&st, "pcat");
    terminate(&st, "pcat");
}

#[test]
fn run_and_spawn_run_as_the_program_user_in_a_directory_it_was_handed() {
    let st = Stratus::new();
    let (_, dir) = launch(
        &st,
        "pwho",
        "\"/usr/bin/id\", \"/bin/sh\"",
        "proc-whoami",
        "-",
    );
    let log = read(&dir.join("hostile.log"));
    let uid = program_uid(&st, "pwho");
    let id = program_user_id(uid);
    assert!(log.contains(&format!("run: {id}")), "{log}");
    assert!(log.contains(&format!("spawn: {id}")), "{log}");
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(&dir).unwrap();
    assert_eq!(
        (owner.uid(), owner.gid()),
        (uid, uid),
        "service dir not handed over"
    );
    assert_healthy(&st, "pwho");
    terminate(&st, "pwho");
}

/// The operator picks the program user (`STRATUS_PROGRAM_USER`, inherited by the agents).
#[test]
fn the_operator_chooses_the_program_user() {
    let st = Stratus::new();
    let programs = "\"/usr/bin/id\", \"/bin/sh\"";
    let (_, dir) = launch_as(
        &st,
        Some("64000:64001"),
        "pown",
        programs,
        "proc-whoami",
        "-",
    );
    let log = read(&dir.join("hostile.log"));
    let id = "uid=64000 gid=64001 groups=64001";
    assert!(log.contains(&format!("run: {id}")), "{log}");
    assert!(log.contains(&format!("spawn: {id}")), "{log}");
    assert_healthy(&st, "pown");
    terminate(&st, "pown");
}

#[test]
fn a_spawned_shell_cannot_move_into_a_root_cgroup_and_terminate_ends_its_daemon() {
    let st = Stratus::new();
    let mark = marker("escape");
    let _reap = Reap(mark.clone());
    let (_, dir) = launch(&st, "pesc", "\"/bin/sh\"", "proc-cgroup-escape", &mark);
    let log = read(&dir.join("escape.log"));
    assert!(log.contains("refused /sys/fs/cgroup/"), "{log}");
    assert!(!log.contains("ESCAPED"), "{log}");
    let daemons = wait_marked(&mark);
    assert!(!daemons.is_empty(), "the daemon did not start");
    let expected = program_uid(&st, "pesc").to_string();
    for pid in &daemons {
        let (uid, cgroups) = uid_and_cgroups(*pid);
        assert_eq!(uid, expected, "daemon {pid} runs as {uid}");
        assert_contained(&cgroups, "pesc");
    }
    assert_healthy(&st, "pesc");
    terminate(&st, "pesc");
    assert_eq!(
        marked(&mark),
        Vec::<u32>::new(),
        "the daemon survived terminate"
    );
}

/// Finding 1 of the outside test, replayed: the shipped haproxy plugin's grant, a config that
/// `lua-load`s the plugin's script, and `haproxy -c`.
#[test]
fn haproxy_lua_load_runs_as_the_program_user_and_leaves_nothing_after_terminate() {
    let lua = std::process::Command::new("/usr/sbin/haproxy")
        .arg("-vv")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("Built with Lua"))
        .unwrap_or(false);
    if !lua {
        eprintln!("skipped: no haproxy built with Lua here");
        return;
    }
    let st = Stratus::new();
    let mark = marker("lua");
    let _reap = Reap(mark.clone());
    let (root, dir) = launch(
        &st,
        "plua",
        "\"/usr/sbin/haproxy\"",
        "proc-haproxy-lua",
        &mark,
    );
    let log = read(&dir.join("lua.log"));
    let expected = program_uid(&st, "plua");
    assert!(
        log.contains(&program_user_id(expected)),
        "the Lua ran as: {log}"
    );
    let credential = root.join("agent/bootstrap.json");
    assert!(
        log.contains(&format!("cat: {}: Permission denied", credential.display())),
        "{log}"
    );
    assert!(log.contains("cat: /etc/shadow: Permission denied"), "{log}");
    assert!(!log.contains(read(&credential).trim()), "{log}");
    assert!(!log.contains("root:"), "shadow leaked: {log}");
    assert!(!log.contains("ESCAPED"), "{log}");
    let daemons = wait_marked(&mark);
    assert!(!daemons.is_empty(), "the Lua's daemon did not start");
    for pid in &daemons {
        let (uid, cgroups) = uid_and_cgroups(*pid);
        assert_eq!(uid, expected.to_string());
        assert_contained(&cgroups, "plua");
    }
    assert_healthy(&st, "plua");
    terminate(&st, "plua");
    assert_eq!(
        marked(&mark),
        Vec::<u32>::new(),
        "the Lua's daemon survived terminate"
    );
}
