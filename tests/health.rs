//! Health on a schedule through the real binary and real agents: the hello plugin's
//! `health-check` is OK while its `hello.conf` exists. Once the test removes it, the service is
//! CRITICAL, restarted (stop, start: hooks.log shows them) after `unhealthy-after` checks with
//! backoff, and, since a restart does not bring the file back, its server is replaced after
//! `restarts` restarts. Status shows the last result and message; events are written only when
//! the result changes.

use crate::common;

use common::{Stratus, one_service, read, server_root, servers, terminate};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const HEALTH: &str =
    "health = { interval = \"1s\", timeout = \"1s\", unhealthy-after = 2, restarts = 2 }";

fn service_dir(st: &Stratus, server: &Value) -> PathBuf {
    let id = server["services"][0]["id"].as_str().unwrap();
    server_root(st, "health", server)
        .join("mnt/services")
        .join(id)
}

/// Polls the deployment until `done` holds, for at most `limit`.
fn wait_for(st: &Stratus, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let d = st.deployment("health");
        if done(&d) || Instant::now() > deadline {
            return d;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn health_of(server: &Value) -> Value {
    server["services"][0]["health"].clone()
}

/// The lifecycle hooks after the launch's own, as `(stop, start)` pairs seen.
fn restarts_in(hooks: &str) -> usize {
    let lines: Vec<&str> = hooks.lines().collect();
    let after = lines.get(4..).unwrap_or_default();
    after.chunks(2).filter(|p| *p == ["stop", "start"]).count()
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

#[test]
fn a_critical_service_is_restarted_then_its_server_is_replaced() {
    let st = Stratus::new();
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let file = one_service(&st, "health", &hello, "", HEALTH);
    st.ok(&["launch", file.to_str().unwrap()]);

    let d = wait_for(&st, Duration::from_secs(20), |d| {
        health_of(&servers(d, "h")[0])["status"] == "OK"
    });
    let first = servers(&d, "h")[0].clone();
    assert_eq!(first["id"], "h-1", "{d}");
    let health = health_of(&first);
    assert_eq!(health["status"], "OK", "{d}");
    assert_eq!(health["message"], "hello.conf present", "{d}");
    assert_eq!(health["restarts"], 0, "{d}");
    let dir = service_dir(&st, &first);
    let text = st.ok(&["status", "health"]);
    assert!(text.contains("health h OK: hello.conf present"), "{text}");
    // The launch's pipeline ran once: a second pass over the same fleet, with no agent lost,
    // is not run, so the agent was told its checks once.
    let agent_log = read(&server_root(&st, "health", &first).join("agent/agent.log"));
    assert_eq!(
        count(&agent_log, "health checks scheduled"),
        1,
        "{agent_log}"
    );

    std::fs::remove_file(dir.join("hello.conf")).unwrap();
    let d = wait_for(&st, Duration::from_secs(20), |d| {
        health_of(&servers(d, "h")[0])["status"] == "CRITICAL"
    });
    let health = health_of(&servers(&d, "h")[0]);
    assert_eq!(health["status"], "CRITICAL", "{d}");
    assert_eq!(health["message"], "hello.conf missing", "{d}");

    // Two restarts (the second after a backoff), each after two CRITICAL checks in a row;
    // hooks.log is read before the server is replaced and its disk removed.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut hooks = String::new();
    while Instant::now() < deadline {
        hooks = std::fs::read_to_string(dir.join("hooks.log")).unwrap_or(hooks);
        if restarts_in(&hooks) >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        hooks.lines().collect::<Vec<_>>(),
        [
            "install-service",
            "configure",
            "stop",
            "start",
            "stop",
            "start",
            "stop",
            "start"
        ],
        "two restarts, each stop then start"
    );
    let checks = read(&dir.join("health.log")).lines().count();
    assert!(
        checks >= 5,
        "only {checks} checks before the second restart"
    );

    // The restarts did not bring hello.conf back: the server is replaced.
    let d = wait_for(&st, Duration::from_secs(60), |d| {
        let h = servers(d, "h");
        d["state"] == "RUNNING"
            && h.len() == 1
            && h[0]["id"] == "h-2"
            && health_of(&h[0])["status"] == "OK"
    });
    let h = servers(&d, "h");
    assert_eq!(h.len(), 1, "{d}");
    assert_eq!(h[0]["id"], "h-2", "{d}");
    assert_eq!(d["state"], "RUNNING", "{d}");
    assert_eq!(health_of(&h[0])["status"], "OK", "{d}");
    assert_eq!(
        read(&service_dir(&st, &h[0]).join("hooks.log"))
            .lines()
            .collect::<Vec<_>>(),
        ["install-service", "configure", "stop", "start"]
    );

    let events = st.ok(&["events", "--deployment", "health"]);
    // Each change once, however many results repeated it.
    assert_eq!(
        count(&events, "health of h on h-1: OK: hello.conf present"),
        1,
        "{events}"
    );
    assert_eq!(
        count(&events, "health of h on h-1: CRITICAL: hello.conf missing"),
        1,
        "{events}"
    );
    assert_eq!(count(&events, "restarting h on h-1"), 2, "{events}");
    assert_eq!(
        count(&events, "h on h-1 restarted (stop, start)"),
        2,
        "{events}"
    );
    assert!(
        events.contains("server h-1 will be replaced: h CRITICAL 2 times in a row after 2 restart(s): hello.conf missing"),
        "{events}"
    );
    assert!(
        events.contains("h-1 replaced by h-2 for its health, RUNNING"),
        "{events}"
    );
    assert_eq!(
        count(&events, "health of h on h-2: OK: hello.conf present"),
        1,
        "{events}"
    );
    terminate(&st, "health");
}

#[test]
fn a_bad_health_table_is_refused_where_it_is() {
    let st = Stratus::new();
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let file = one_service(
        &st,
        "health",
        &hello,
        "",
        "health = { interval = \"1s\", timeout = \"5s\" }",
    );
    let out = st.run(&["launch", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":12:39: health timeout (5000 ms) is over the health interval (1000 ms)"),
        "{err}"
    );
    assert!(st.status()["deployments"].as_array().unwrap().is_empty());
}

/// The deployment `hostile`: one server running the hostile plugin three times, whose checks
/// leak the passwords, never answer, and answer CRITICAL with 60 KB. Restarts are put off
/// (`unhealthy-after` high) so the checks alone are seen.
fn hostile_deployment(st: &Stratus) -> PathBuf {
    let hostile = stratus_plugin_artifacts::package_dir("hostile");
    let mut text = "[deployment]\nname = \"hostile\"\n\n[tiers.h]\nmin = 1\nmax = 1\n\
                    services = [\"leak\", \"spin\", \"huge\"]\n"
        .to_string();
    for mode in ["leak", "spin", "huge"] {
        text.push_str(&format!(
            "\n[services.{mode}]\npackage = \"{}\"\ncredentials = [\"admin\"]\n\
             settings = {{ health = \"{mode}\" }}\n\
             health = {{ interval = \"1s\", timeout = \"500ms\", unhealthy-after = 100 }}\n",
            hostile.display()
        ));
    }
    st.write_file("hostile.toml", &text)
}

#[test]
fn hostile_health_checks_are_redacted_bounded_and_timed_out() {
    let st = Stratus::new();
    let file = hostile_deployment(&st);
    st.ok(&["launch", file.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = |d: &Value, name: &str| -> Value {
        let server = &servers(d, "h")[0];
        let services = server["services"].as_array().unwrap();
        let s = services.iter().find(|s| s["name"] == name).unwrap();
        s["health"].clone()
    };
    // Until each shows what it does: on a loaded machine a check of `leak` or `huge` may
    // itself run past the 500 ms once, and show as not answering meanwhile.
    let settled = |d: &Value| {
        health(d, "leak")["status"] == "OK"
            && health(d, "spin")["status"] == "CRITICAL"
            && health(d, "huge")["message"]
                .as_str()
                .is_some_and(|m| m.contains("(cut,"))
    };
    let mut d = st.deployment("hostile");
    while Instant::now() < deadline && !settled(&d) {
        std::thread::sleep(Duration::from_millis(100));
        d = st.deployment("hostile");
    }
    let leak = health(&d, "leak");
    assert_eq!(leak["status"], "OK", "{d}");
    assert_eq!(leak["message"], "fine; passwords: ****", "{d}");
    let spin = health(&d, "spin");
    assert_eq!(spin["status"], "CRITICAL", "{d}");
    assert_eq!(
        spin["message"], "health-check did not answer within 500 ms",
        "{d}"
    );
    let huge = health(&d, "huge");
    assert_eq!(huge["status"], "CRITICAL", "{d}");
    let message = huge["message"].as_str().unwrap();
    assert!(
        message.len() < 1200 && message.ends_with("…(cut, 60000 bytes)"),
        "{message}"
    );
    // The server still answers: a check that never ends holds no request up.
    st.ok(&["status", "hostile"]);
    common::assert_no_secret_leaked(&st, |_| true);
    let events = st.ok(&["events", "--deployment", "hostile"]);
    assert_eq!(
        count(&events, "health of spin on h-1: CRITICAL"),
        1,
        "{events}"
    );
    assert!(!events.contains("restarting"), "{events}");
    terminate(&st, "hostile");
}

#[test]
fn an_ok_after_a_restart_forgets_it_and_keeps_the_server() {
    let st = Stratus::new();
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let file = one_service(&st, "health", &hello, "", HEALTH);
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = wait_for(&st, Duration::from_secs(20), |d| {
        health_of(&servers(d, "h")[0])["status"] == "OK"
    });
    let dir = service_dir(&st, &servers(&d, "h")[0]);
    let conf = dir.join("hello.conf");
    let text = read(&conf);
    std::fs::remove_file(&conf).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && restarts_in(&read(&dir.join("hooks.log"))) < 1 {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(restarts_in(&read(&dir.join("hooks.log"))), 1);
    // What a working restart would have done: the file is back before the next streak.
    std::fs::write(&conf, text).unwrap();
    let d = wait_for(&st, Duration::from_secs(20), |d| {
        health_of(&servers(d, "h")[0])["status"] == "OK"
    });
    let health = health_of(&servers(&d, "h")[0]);
    assert_eq!(health["status"], "OK", "{d}");
    assert_eq!(health["restarts"], 1, "{d}");
    assert_eq!(health["restarts_since_ok"], 0, "{d}");
    // Healthy from now on: no further restart, the same server.
    std::thread::sleep(Duration::from_secs(3));
    let d = st.deployment("health");
    assert_eq!(servers(&d, "h")[0]["id"], "h-1", "{d}");
    assert_eq!(restarts_in(&read(&dir.join("hooks.log"))), 1);
    let events = st.ok(&["events", "--deployment", "health"]);
    assert_eq!(
        count(&events, "health of h on h-1: OK: hello.conf present"),
        2,
        "{events}"
    );
    assert!(!events.contains("will be replaced"), "{events}");
    terminate(&st, "health");
}

#[test]
fn a_service_on_a_lost_server_is_unknown() {
    let st = Stratus::new();
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let text = format!(
        "[deployment]\nname = \"health\"\n\n[tiers.h]\nmin = 1\nmax = 1\nservices = [\"h\"]\n\
         recovery = \"off\"\n\n[services.h]\npackage = \"{}\"\n{HEALTH}\n",
        hello.display()
    );
    let file = st.write_file("health.toml", &text);
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = wait_for(&st, Duration::from_secs(20), |d| {
        health_of(&servers(d, "h")[0])["status"] == "OK"
    });
    let pid = servers(&d, "h")[0]["pid"].as_u64().unwrap() as u32;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(common::wait_gone(pid, Duration::from_secs(10)));
    let d = wait_for(&st, Duration::from_secs(20), |d| {
        servers(d, "h")[0]["agent"] == "LOST"
    });
    let health = health_of(&servers(&d, "h")[0]);
    assert_eq!(health["status"], "UNKNOWN", "{d}");
    assert_eq!(health["message"], "server h-1 is lost", "{d}");
    let text = st.ok(&["status", "health"]);
    assert!(
        text.contains("health h UNKNOWN: server h-1 is lost"),
        "{text}"
    );
    terminate(&st, "health");
}

/// Every live process whose command line mentions `needle`.
fn processes_with(needle: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) && common::alive(pid) {
            out.push((pid, cmd));
        }
    }
    out
}

/// The three-tier example (HAProxy, greeters, MariaDB) with absolute paths and checks every
/// 2 s.
fn three_tier(st: &Stratus) -> PathBuf {
    let root = stratus_plugin_artifacts::repo_root();
    let dir = root.join("examples/three-tier");
    let text = std::fs::read_to_string(dir.join("deployment.toml")).unwrap();
    let health = "health = { interval = \"2s\", timeout = \"2s\", unhealthy-after = 2 }";
    let text = text
        .replace(
            "\"../../plugins/",
            &format!("\"{}/plugins/", root.display()),
        )
        .replace(
            "\"datasource.sql\"",
            &format!("\"{}\"", dir.join("datasource.sql").display()),
        )
        .replace("ports = {", &format!("{health}\nports = {{"));
    st.write_file("shop.toml", &text)
}

#[test]
fn real_services_are_healthy_and_a_killed_greeter_is_back_without_a_service_restart() {
    let st = Stratus::new();
    let file = three_tier(&st);
    st.ok(&["launch", file.to_str().unwrap()]);
    let all_ok = |d: &Value| {
        ["db", "app", "lb"].iter().all(|t| {
            servers(d, t)
                .iter()
                .all(|s| s["services"][0]["health"]["status"] == "OK")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut d = st.deployment("shop");
    while !all_ok(&d) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        d = st.deployment("shop");
    }
    assert!(all_ok(&d), "{d}");
    let message = |d: &Value, tier: &str| -> String {
        servers(d, tier)[0]["services"][0]["health"]["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(message(&d, "app").contains("accepts on port 8080"), "{d}");
    assert!(message(&d, "lb").contains("accepts on port 8000"), "{d}");

    // The greeter of app-1 crashes: its supervisor starts it again (tests/supervision.rs), so
    // health sees it OK again with no restart of the service.
    let app1 = st.dir().join("servers/shop/app-1/");
    let greeters = processes_with(&app1.to_string_lossy())
        .into_iter()
        .filter(|(_, c)| c.contains("greeter"))
        .collect::<Vec<_>>();
    assert_eq!(greeters.len(), 1, "{greeters:?}");
    let (pid, _) = greeters[0];
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let restarted = |d: &Value| {
        let s = &servers(d, "app")[0];
        s["id"] == "app-1"
            && s["services"][0]["processes"][0]["restarts"] == 1
            && s["services"][0]["health"]["status"] == "OK"
            && s["services"][0]["health"]["checked_at_ms"].as_i64()
                > s["services"][0]["processes"][0]["last_exit_at_ms"].as_i64()
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut d = st.deployment("shop");
    while !restarted(&d) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        d = st.deployment("shop");
    }
    assert!(restarted(&d), "{d}");
    assert_eq!(
        servers(&d, "app")[0]["services"][0]["health"]["restarts"],
        0,
        "{d}"
    );
    let greeters: Vec<_> = processes_with(&app1.to_string_lossy())
        .into_iter()
        .filter(|(_, c)| c.contains("greeter"))
        .collect();
    assert_eq!(greeters.len(), 1, "one greeter again: {greeters:?}");
    assert_ne!(greeters[0].0, pid);
    terminate(&st, "shop");
}

#[test]
fn a_service_removed_by_apply_is_no_longer_checked() {
    let st = Stratus::new();
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let file_with = |services: &[&str]| {
        let list = services
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut text = format!(
            "[deployment]\nname = \"health\"\n\n[tiers.h]\nmin = 1\nmax = 1\nservices = [{list}]\n"
        );
        for s in services {
            text.push_str(&format!(
                "\n[services.{s}]\npackage = \"{}\"\n{HEALTH}\n",
                hello.display()
            ));
        }
        st.write_file("health.toml", &text)
    };
    let file = file_with(&["h", "gone"]);
    st.ok(&["launch", file.to_str().unwrap()]);
    let both_ok = |d: &Value| {
        let s = &servers(d, "h")[0];
        s["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["health"]["status"] == "OK")
    };
    let d = wait_for(&st, Duration::from_secs(20), both_ok);
    assert!(both_ok(&d), "{d}");
    let server = servers(&d, "h")[0].clone();
    let gone_id = server["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "gone")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let gone_log = server_root(&st, "health", &server)
        .join("mnt/services")
        .join(&gone_id)
        .join("health.log");

    let file = file_with(&["h"]);
    st.ok(&["apply", file.to_str().unwrap()]);
    // The next result of the removed service makes the control plane stop its checks: wait
    // (30 s at most, a loaded machine may be slow to get there) until the log stands still
    // for 3 s, then make sure it stays still.
    let lines = || read(&gone_log).lines().count();
    let (deadline, mut before, mut since) = (
        Instant::now() + Duration::from_secs(30),
        lines(),
        Instant::now(),
    );
    while Instant::now() < deadline && since.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(250));
        if lines() != before {
            (before, since) = (lines(), Instant::now());
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        read(&gone_log).lines().count(),
        before,
        "the removed service is still checked"
    );
    let d = st.deployment("health");
    assert_eq!(d["state"], "RUNNING", "{d}");
    assert_eq!(health_of(&servers(&d, "h")[0])["status"], "OK", "{d}");
    terminate(&st, "health");
}
