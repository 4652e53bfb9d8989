//! Filesystem attacks in real launches: links planted where the agent writes, links and direct
//! reads towards the agent-private area, a plugin rewriting its own package, a plugin filling
//! its disk, a hostile CM adapter, and hostile packages. Each test checks the refusal or
//! containment and that the deployment and its agent stay healthy.

use crate::common;

use common::{
    Stratus, assert_no_secret_leaked, one_service, package_copy, read, server_root, servers,
    terminate,
};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A file outside every server root, mode 0600: what the attacks aim at.
fn outside_file(st: &Stratus) -> PathBuf {
    let dir = st.dir().join("outside");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("secret");
    std::fs::write(&file, "keep me").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    file
}

fn assert_untouched(file: &Path) {
    let meta = std::fs::symlink_metadata(file).unwrap();
    assert!(meta.file_type().is_file(), "{} replaced", file.display());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "mode of {} changed",
        file.display()
    );
    assert_eq!(read(file), "keep me", "{} was written", file.display());
}

/// The service directory of the only server of tier `h`.
fn service_dir(st: &Stratus, dep: &str) -> (Value, PathBuf) {
    let d = st.deployment(dep);
    let server = servers(&d, "h")[0].clone();
    let id = server["services"][0]["id"].as_str().unwrap().to_string();
    let dir = server_root(st, dep, &server).join("mnt/services").join(id);
    (server, dir)
}

fn assert_running(st: &Stratus, dep: &str) {
    let d = st.deployment(dep);
    assert_eq!(d["state"], "RUNNING", "{d}");
    for t in d["tiers"].as_array().unwrap() {
        for s in t["servers"].as_array().unwrap() {
            assert_eq!(s["agent"], "RUNNING", "{s}");
        }
    }
}

/// Every line of a hostile log: each attempt refused, none leaked.
fn assert_all_refused(log: &str, attempts: usize) {
    let refused = log.lines().filter(|l| l.contains(": refused (")).count();
    assert!(!log.contains("LEAKED"), "{log}");
    assert_eq!(refused, attempts, "{log}");
}

#[test]
fn a_link_planted_as_the_data_source_is_replaced_not_written_through() {
    let st = Stratus::new();
    let target = outside_file(&st);
    let sql = st.write_file("data.sql", "CREATE TABLE t (id INT);\n");
    let package = stratus_plugin_artifacts::package_dir("hostile");
    let settings = format!(
        "attack = \"fs-symlink-datasource\", target = \"{}\", link = \"data.sql\"",
        target.display()
    );
    let ds = format!(
        "data-source = {{ image = \"{}\", database = \"h\" }}\n",
        sql.display()
    );
    let file = one_service(&st, "hds", &package, &settings, &ds);
    st.ok(&["launch", file.to_str().unwrap()]);

    assert_running(&st, "hds");
    assert_untouched(&target);
    let (_, dir) = service_dir(&st, "hds");
    let fetched = dir.join("data.sql");
    assert!(
        std::fs::symlink_metadata(&fetched)
            .unwrap()
            .file_type()
            .is_file()
    );
    assert_eq!(read(&fetched), "CREATE TABLE t (id INT);\n");
    assert!(read(&dir.join("hostile.log")).contains("datasource is a regular file: true"));
    terminate(&st, "hds");
}

#[test]
fn links_and_paths_towards_the_agent_private_area_lead_nowhere() {
    let st = Stratus::new();
    let package = stratus_plugin_artifacts::package_dir("hostile");
    let file = one_service(&st, "hseal", &package, "attack = \"fs-symlink-sealed\"", "");
    st.ok(&["launch", file.to_str().unwrap()]);

    assert_running(&st, "hseal");
    let (server, dir) = service_dir(&st, "hseal");
    assert_all_refused(&read(&dir.join("hostile.log")), 5);
    let root = server_root(&st, "hseal", &server);
    let rel = dir.strip_prefix(&root).unwrap();
    let sealed = root.join("agent/sealed").join(rel).join("plugin.toml");
    assert_eq!(
        read(&sealed),
        read(&package.join("plugin.toml")),
        "sealed copy intact"
    );
    assert_no_secret_leaked(&st, |_| true);
    terminate(&st, "hseal");
}

/// Kills the agent `pid` (it leads its own group and supervises nothing here) and starts it
/// again with the same command line, environment and directory, as a reboot would; waits until
/// it is connected again. The returned guard ends the new agent if it is still running.
fn restart_agent(st: &Stratus, dep: &str, pid: u32) -> Restarted {
    let split = |f: &str| -> Vec<String> {
        let bytes = std::fs::read(format!("/proc/{pid}/{f}")).unwrap();
        bytes
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    };
    let (args, env) = (split("cmdline"), split("environ"));
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    // The new agent is in once its log says so: the server's state alone could still be the
    // old connection's on a loaded machine.
    let log =
        common::server_root(st, dep, &servers(&st.deployment(dep), "h")[0]).join("agent/agent.log");
    let accepted = || common::read(&log).matches("handshake accepted").count();
    let before = accepted();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success() && common::wait_gone(pid, std::time::Duration::from_secs(10)));
    let child = Restarted(
        std::process::Command::new(&args[0])
            .args(&args[1..])
            .env_clear()
            .envs(env.iter().filter_map(|kv| kv.split_once('=')))
            .current_dir(cwd)
            .stdin(std::process::Stdio::null())
            // Appended to its log, as the provider starts agents.
            .stdout(appended(&log))
            .stderr(appended(&log))
            .spawn()
            .unwrap(),
    );
    let start = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let d = st.deployment(dep);
        if servers(&d, "h")[0]["agent"] == "RUNNING" && accepted() > before {
            return child;
        }
        assert!(
            start.elapsed().as_secs() < 30,
            "agent did not reconnect: {d}"
        );
    }
}

fn appended(log: &Path) -> std::fs::File {
    std::fs::File::options().append(true).open(log).unwrap()
}

/// An agent this test started; killed (by its own pid) and reaped when dropped.
struct Restarted(std::process::Child);

impl Restarted {
    /// Whether it exited within 10 s.
    fn exits(&mut self) -> bool {
        (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            self.0.try_wait().unwrap().is_some()
        })
    }
}

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_plugin_rewriting_its_own_package_changes_nothing_the_agent_loads() {
    let st = Stratus::new();
    let package = stratus_plugin_artifacts::package_dir("hostile");
    let file = one_service(
        &st,
        "hman",
        &package,
        "attack = \"fs-rewrite-manifest\"",
        "",
    );
    // The agent is restarted by hand below: recovery must not replace the server meanwhile.
    let text = read(&file).replace("[tiers.h]\n", "[tiers.h]\nrecovery = \"off\"\n");
    std::fs::write(&file, text).unwrap();
    st.ok(&["launch", file.to_str().unwrap()]);

    assert_running(&st, "hman");
    let (server, dir) = service_dir(&st, "hman");
    assert!(
        read(&dir.join("plugin.toml")).contains("/bin/sh"),
        "the attack ran"
    );
    let root = server_root(&st, "hman", &server);
    let sealed = root
        .join("agent/sealed")
        .join(dir.strip_prefix(&root).unwrap());
    assert_eq!(
        read(&sealed.join("plugin.toml")),
        read(&package.join("plugin.toml"))
    );
    assert_eq!(
        std::fs::read(sealed.join("plugin.wasm")).unwrap(),
        std::fs::read(package.join("plugin.wasm")).unwrap()
    );
    // After a restart the agent loads the plugin afresh for terminate's `stop`: from the
    // sealed copy, so it loads and runs (the rewritten copy is not even a component).
    let mut agent = restart_agent(&st, "hman", server["pid"].as_u64().unwrap() as u32);
    let out = st.ok(&["terminate", "hman"]);
    let exited = agent.exits();
    assert!(
        !out.contains("loading plugin") && !out.contains("not a valid"),
        "{out}"
    );
    assert_eq!(st.deployment("hman")["state"], "TERMINATED");
    let events = st.ok(&["events"]);
    // Once at launch, once at terminate by the restarted agent.
    assert_eq!(events.matches("hook stop done").count(), 2, "{events}");
    assert!(exited, "the restarted agent shut down when asked");
}

#[test]
fn filling_the_disk_fails_the_hook_naming_the_limit_and_the_agent_stays_up() {
    // Succeeding, or failing with a retryable error after filling: the limit is the reason.
    for (name, then) in [("hdisk", "ok"), ("hdiskretry", "retry")] {
        let st = Stratus::new();
        let package = package_copy(&st, "small-disk", "hostile", |t| {
            t.replace("[capabilities]\n", "[capabilities]\ndisk-mb = 4\n")
        });
        let file = one_service(
            &st,
            name,
            &package,
            &format!("attack = \"fs-fill-disk\", mb = \"8\", then = \"{then}\""),
            "",
        );
        let out = st.run(&["launch", file.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains("disk-mb limit of 4 MiB"), "{err}");
        assert!(!err.contains("try me again"), "{err}");

        let d = st.deployment(name);
        assert_eq!(d["state"], "FAILED", "{d}");
        assert_eq!(servers(&d, "h")[0]["agent"], "RUNNING", "{d}");
        terminate(&st, name);
    }
}

#[test]
fn a_hostile_cm_adapter_cannot_reach_the_agents_files() {
    let st = Stratus::new();
    let target = outside_file(&st);
    let adapter = stratus_plugin_artifacts::package_dir("hostile-cm");
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let text = format!(
        "[deployment]\nname = \"hcm\"\n\n[tiers.web]\nmin = 1\nmax = 1\nservices = [\"web\"]\n\
         launch = {{ cm = {{ adapter = \"hostile-cm\", package = \"{}\", settings = {{ target = \"{}\" }} }} }}\n\n\
         [services.web]\npackage = \"{}\"\nports = {{ http = 8080 }}\n",
        adapter.display(),
        target.display(),
        hello.display()
    );
    let file = st.write_file("hcm.toml", &text);
    st.ok(&["launch", file.to_str().unwrap()]);

    assert_running(&st, "hcm");
    let d = st.deployment("hcm");
    let root = server_root(&st, "hcm", &servers(&d, "web")[0]);
    let work = root.join("var/lib/stratus/cm/hostile-cm");
    let log = read(&work.join("hostile.log"));
    assert!(log.contains("prepare done"), "{log}");
    assert_all_refused(&log, 4);
    // The agent's erase removed the planted link, not what it pointed at.
    assert!(std::fs::symlink_metadata(work.join("validation.pem")).is_err());
    assert_untouched(&target);
    // The granted config dir works; the sealed copy is the uploaded package.
    assert_eq!(
        read(&root.join("etc/stratus/hostile-cm.txt")),
        "configured\n"
    );
    assert!(
        read(&work.join("package/plugin.toml")).contains("6.6.6"),
        "the attack ran"
    );
    let sealed = root.join("agent/sealed/var/lib/stratus/cm/hostile-cm/package/plugin.toml");
    assert_eq!(read(&sealed), read(&adapter.join("plugin.toml")));
    assert_no_secret_leaked(&st, |_| true);
    terminate(&st, "hcm");
}

#[test]
fn a_package_holding_a_link_is_refused_at_launch_naming_the_entry() {
    let st = Stratus::new();
    let package = package_copy(&st, "linked", "hostile", |t| t);
    std::os::unix::fs::symlink("/etc/shadow", package.join("loot")).unwrap();
    let file = one_service(&st, "hlink", &package, "attack = \"none\"", "");
    let out = st.run(&["launch", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("loot") && err.contains("link"), "{err}");
    for f in common::every_file(&st.dir().join("servers")) {
        assert_ne!(f.file_name().unwrap(), "loot", "{} delivered", f.display());
    }
}

#[test]
fn a_server_root_grant_is_refused_naming_its_replacement() {
    let st = Stratus::new();
    let package = package_copy(&st, "rooted", "hostile", |t| {
        t.replace(
            "{ dir = \"service\", access = \"read-write\" }",
            "{ dir = \"service\", access = \"read-write\" }, { dir = \"server-root\", access = \"read-write\" }",
        )
    });
    let file = one_service(&st, "hroot", &package, "attack = \"none\"", "");
    let out = st.run(&["launch", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("server-root") && err.contains("server-config"),
        "{err}"
    );
}

#[test]
fn a_component_over_the_size_cap_is_refused_before_it_is_read() {
    let st = Stratus::new();
    let package = package_copy(&st, "huge", "hostile", |t| t);
    // Sparse: 300 MB long, nothing on disk; reading it whole would take 300 MB of memory.
    let wasm = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(package.join("plugin.wasm"))
        .unwrap();
    wasm.set_len(300_000_000).unwrap();
    for args in [
        vec!["plugin", "call", package.to_str().unwrap(), "configure"],
        vec!["plugin", "inspect", package.to_str().unwrap()],
    ] {
        let out = st.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(
            err.contains("300000000 bytes, over the limit of 256000000 bytes"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn the_operator_narrows_disk_mb_and_cannot_widen_it() {
    let st = Stratus::new();
    let package = stratus_plugin_artifacts::package_dir("hostile");
    let settings = "attack = \"fs-fill-disk\", mb = \"8\"";
    let wide = one_service(
        &st,
        "hwide",
        &package,
        settings,
        "capabilities = { disk-mb = 4096 }\n",
    );
    let out = st.run(&["launch", wide.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("disk-mb 4096 > 1024"),
        "{err}"
    );

    let narrow = one_service(
        &st,
        "hnarrow",
        &package,
        settings,
        "capabilities = { disk-mb = 4 }\n",
    );
    let out = st.run(&["launch", narrow.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("disk-mb limit of 4 MiB"), "{err}");
    assert_eq!(
        servers(&st.deployment("hnarrow"), "h")[0]["agent"],
        "RUNNING"
    );
    terminate(&st, "hnarrow");
}

#[test]
fn launching_again_after_a_package_changed_installs_and_loads_the_new_package() {
    let st = Stratus::new();
    let target = outside_file(&st);
    // The manifest lacks the program the hook runs: the launch fails on the denial.
    let package = package_copy(&st, "changing", "hostile", |t| {
        t.replace("programs = [\"/usr/bin/echo\"]", "programs = []")
    });
    let file = one_service(&st, "hchange", &package, "attack = \"shell-meta\"", "");
    let out = st.run(&["launch", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("program /usr/bin/echo is not in"), "{err}");

    // Meanwhile a program of the service (it may write its own copy of its package) left a
    // link where the component would be: the copy gets no component, and the reinstall
    // removes the link without writing through it.
    let (_, dir) = service_dir(&st, "hchange");
    assert!(
        !dir.join("plugin.wasm").exists(),
        "the plugin's copy got the component"
    );
    std::os::unix::fs::symlink(&target, dir.join("plugin.wasm")).unwrap();

    // The author grants it; the same file launched again uploads, installs and loads the new
    // package (not the sealed copy of the old one), and the failed hook runs again.
    let src = stratus_plugin_artifacts::package_dir("hostile");
    std::fs::copy(src.join("plugin.toml"), package.join("plugin.toml")).unwrap();
    st.ok(&["launch", file.to_str().unwrap()]);
    assert_running(&st, "hchange");
    assert!(read(&dir.join("echo.out")).contains("hello; rm -rf"));
    assert!(
        std::fs::symlink_metadata(dir.join("plugin.wasm")).is_err(),
        "the planted link is still there"
    );
    assert_untouched(&target);
    terminate(&st, "hchange");
}
