//! Auto-recovery through the real binary: a server whose processes are all killed is
//! replaced (new id, new address), both sides of its dependencies are told (the load
//! balancer's nodes and the database's grants follow exactly the live servers), and events
//! say what happened. With `recovery = "off"` the deployment stays DEGRADED, naming the lost
//! server, and its services show UNKNOWN.

mod common;

use common::{Stratus, hello_deployment, read, server_root, servers, terminate, wait_gone};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn service_file(st: &Stratus, server: &Value, file: &str) -> String {
    let id = server["services"][0]["id"].as_str().unwrap();
    read(
        &server_root(st, "hello", server)
            .join("mnt/services")
            .join(id)
            .join(file),
    )
}

fn addresses(list: &[Value]) -> BTreeSet<String> {
    list.iter()
        .map(|s| s["address"].as_str().unwrap().to_string())
        .collect()
}

/// The addresses the database has granted now: grants.log replayed in order.
fn granted(st: &Stratus, db: &Value) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for line in service_file(st, db, "grants.log").lines() {
        let list = line.rsplit_once("addresses=").map_or("", |(_, a)| a);
        let addrs = list.split(',').filter(|a| !a.is_empty()).map(String::from);
        match line.split_whitespace().next() {
            Some("grant") => set.extend(addrs),
            Some("revoke") => addrs.for_each(|a| {
                set.remove(&a);
            }),
            _ => {}
        }
    }
    set
}

fn balanced(st: &Stratus, lb: &Value) -> BTreeSet<String> {
    service_file(st, lb, "nodes.txt")
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|a| a.rsplit_once(':').unwrap().0.to_string())
        .collect()
}

/// Kills every process of a server at once, as a crashed machine would end them.
fn kill_server(server: &Value) -> u32 {
    let pid = server["pid"].as_u64().unwrap() as u32;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(wait_gone(pid, Duration::from_secs(10)));
    pid
}

/// Polls the deployment until `done` holds, for at most `limit`.
fn wait_for(st: &Stratus, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let d = st.deployment("hello");
        if done(&d) || Instant::now() > deadline {
            return d;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_killed_app_server_is_replaced_and_its_dependents_follow() {
    let st = Stratus::new();
    let file = st.write_file("hello.toml", &hello_deployment("hello", 2));
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = st.deployment("hello");
    let app = servers(&d, "app");
    let old_address = app[0]["address"].as_str().unwrap().to_string();
    kill_server(&app[0]);

    let d = wait_for(&st, Duration::from_secs(60), |d| {
        d["state"] == "RUNNING" && servers(d, "app").iter().all(|s| s["id"] != "app-1")
    });
    assert_eq!(d["state"], "RUNNING", "{d}");
    let app = servers(&d, "app");
    let ids: Vec<&str> = app.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["app-2", "app-3"], "{d}");
    assert!(
        app.iter().all(|s| s["services"][0]["state"] == "RUNNING"),
        "{d}"
    );
    let live = addresses(&app);
    assert!(!live.contains(&old_address), "{live:?}");
    assert_eq!(balanced(&st, &servers(&d, "lb")[0]), live);
    assert_eq!(granted(&st, &servers(&d, "db")[0]), live);
    let replacement = service_file(&st, &app[1], "hooks.log");
    assert_eq!(
        replacement.lines().collect::<Vec<_>>(),
        ["install-service", "configure", "stop", "start"]
    );

    let events = st.ok(&["events", "--deployment", "hello"]);
    assert!(
        events.contains("deployment DEGRADED: app-1 lost at"),
        "{events}"
    );
    assert!(
        events.contains("scaling event: tier app 1 -> 2 (replacing app-1)"),
        "{events}"
    );
    assert!(
        events.contains("replaced by app-3, RUNNING after"),
        "{events}"
    );
    terminate(&st, "hello");
}

#[test]
fn with_recovery_off_a_lost_server_leaves_the_deployment_degraded_and_unknown() {
    let st = Stratus::new();
    let text = hello_deployment("hello", 2).replace(
        "[tiers.app]\n",
        "[tiers.app]\nrecovery = \"off\"\nrecovery-grace = \"1s\"\n",
    );
    let file = st.write_file("hello.toml", &text);
    st.ok(&["launch", file.to_str().unwrap()]);
    let app = servers(&st.deployment("hello"), "app");
    kill_server(&app[0]);

    let d = wait_for(&st, Duration::from_secs(20), |d| {
        d["reason"]
            .as_str()
            .is_some_and(|r| r.contains("recovery off"))
    });
    assert_eq!(d["state"], "DEGRADED", "{d}");
    let reason = d["reason"].as_str().unwrap();
    assert!(reason.starts_with("app-1 lost at"), "{reason}");
    assert!(
        reason.contains("not replaced: its tier has recovery off"),
        "{reason}"
    );
    let app = servers(&d, "app");
    assert_eq!(app.len(), 2, "nothing replaced it: {d}");
    assert_eq!(app[0]["agent"], "LOST");
    assert_eq!(app[0]["services"][0]["state"], "UNKNOWN");
    assert_eq!(app[1]["services"][0]["state"], "RUNNING");
    let text = st.ok(&["status", "hello"]);
    assert!(text.contains("deployment hello: DEGRADED"), "{text}");
    // Well past the grace, still nothing was launched in its place.
    std::thread::sleep(Duration::from_secs(2));
    let d = st.deployment("hello");
    assert_eq!(servers(&d, "app").len(), 2, "{d}");
    assert_eq!(d["state"], "DEGRADED");
    terminate(&st, "hello");
}
