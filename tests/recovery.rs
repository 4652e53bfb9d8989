//! Auto-recovery through the real binary: a server whose processes are all killed is
//! replaced (new id, new address), both sides of its dependencies are told (the load
//! balancer's nodes and the database's grants follow exactly the live servers), and events
//! say what happened. With `recovery = "off"` the deployment stays DEGRADED, naming the lost
//! server, and its services show UNKNOWN. A server killed while a launch waits on the database
//! (an app server, or the database itself) is replaced and the launch completes; with recovery
//! off the launch fails naming the lost server instead of hanging. A new server killed during a
//! scale-up is replaced too; several servers lost at once, a lost load balancer, a server that
//! died while no control plane ran, and a scale-down with a lost server are covered as well.

use crate::common;

use common::{
    Stratus, addresses, hello_deployment, read, server_root, servers, terminate, wait_gone,
};
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

/// The addresses the database has granted now: grants.log replayed in order.
fn granted(st: &Stratus, db: &Value) -> BTreeSet<String> {
    common::granted_in(&service_file(st, db, "grants.log"))
}

fn balanced(st: &Stratus, lb: &Value) -> BTreeSet<String> {
    common::nodes_in(&service_file(st, lb, "nodes.txt"))
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

/// hello with the database service replaced by the test plugin in `retry-twice` mode: its
/// `configure` asks to be retried twice, `wait` apart, so the launch waits on the database
/// while the app servers are up and installed. `app_tier` lines go into the app tier's table.
fn slow_database_launch(name: &str, wait: &str, app_tier: &str) -> String {
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let hostile = stratus_plugin_artifacts::package_dir("hostile");
    let text =
        hello_deployment(name, 2).replace("[tiers.app]\n", &format!("[tiers.app]\n{app_tier}"));
    let (head, rest) = text.split_once("[services.db]").unwrap();
    let (db, tail) = rest.split_once("[services.app]").unwrap();
    let db = db
        .replacen(
            &format!("package = \"{}\"", hello.display()),
            &format!("package = \"{}\"", hostile.display()),
            1,
        )
        .replace(
            "settings = { greeting = \"database\" }",
            &format!(
                "settings = {{ attack = \"retry-twice\" }}\n\
                 retry = {{ attempts = 5, initial = \"{wait}\", max = \"{wait}\" }}"
            ),
        );
    let text = format!("{head}[services.db]{db}[services.app]{tail}");
    assert!(
        text.contains("retry-twice") && text.contains(app_tier),
        "{text}"
    );
    text
}

/// Launches without following and returns once the database's configure waits for its
/// next attempt, with the deployment as it was then.
fn launch_until_database_waits(st: &Stratus, name: &str, text: &str) -> Value {
    let file = st.write_file(&format!("{name}.toml"), text);
    st.ok(&["launch", "--no-wait", file.to_str().unwrap()]);
    let d = wait_for_named(st, name, Duration::from_secs(60), |d| {
        servers(d, "db")
            .first()
            .is_some_and(|db| db["waiting"].as_array().is_some_and(|w| !w.is_empty()))
    });
    assert_eq!(d["state"], "LAUNCHING", "{d}");
    let db = &servers(&d, "db")[0];
    assert!(!db["waiting"].as_array().unwrap().is_empty(), "{d}");
    assert_eq!(servers(&d, "app").len(), 2, "{d}");
    d
}

/// [`wait_for`] on deployment `name`.
fn wait_for_named(
    st: &Stratus,
    name: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let d = st.deployment(name);
        if done(&d) || Instant::now() > deadline {
            return d;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_server_killed_in_the_middle_of_a_launch_is_replaced_and_the_launch_completes() {
    let st = Stratus::new();
    let text = slow_database_launch("hello", "3s", "recovery-grace = \"1s\"\n");
    let d = launch_until_database_waits(&st, "hello", &text);
    kill_server(&servers(&d, "app")[0]);

    let started = Instant::now();
    let d = wait_for(&st, Duration::from_secs(90), |d| d["state"] != "LAUNCHING");
    let events = st.ok(&["events", "--deployment", "hello"]);
    assert_eq!(d["state"], "RUNNING", "{d}\n{events}");
    eprintln!(
        "launch RUNNING {:.1} s after the kill",
        started.elapsed().as_secs_f64()
    );
    let app = servers(&d, "app");
    let ids: Vec<&str> = app.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["app-2", "app-3"], "{d}");
    for s in &app {
        assert_eq!(s["agent"], "RUNNING", "{s}");
        assert_eq!(s["services"][0]["state"], "RUNNING", "{s}");
    }
    assert_eq!(balanced(&st, &servers(&d, "lb")[0]), addresses(&app));
    // The replacement ran the whole pipeline once; the survivor too, once.
    for s in &app {
        assert_eq!(
            service_file(&st, s, "hooks.log")
                .lines()
                .collect::<Vec<_>>(),
            ["install-service", "configure", "stop", "start"],
            "{}",
            s["id"]
        );
    }
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
fn with_recovery_off_a_server_lost_during_a_launch_fails_it_after_the_grace_naming_it() {
    let st = Stratus::new();
    let text = slow_database_launch(
        "hello",
        "2s",
        "recovery = \"off\"\nrecovery-grace = \"1s\"\n",
    );
    let d = launch_until_database_waits(&st, "hello", &text);
    let killed_at = Instant::now();
    kill_server(&servers(&d, "app")[0]);

    let d = wait_for(&st, Duration::from_secs(60), |d| d["state"] != "LAUNCHING");
    let events = st.ok(&["events", "--deployment", "hello"]);
    assert_eq!(
        d["state"], "FAILED",
        "the launch never hangs: {d}\n{events}"
    );
    eprintln!(
        "launch FAILED {:.1} s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
    let reason = d["reason"].as_str().unwrap();
    assert!(reason.contains("server app-1 lost at"), "{reason}");
    assert!(reason.contains("recovery off"), "{reason}");
    assert!(
        events.contains("deployment FAILED: ") && events.contains("app-1 lost at"),
        "{events}"
    );
    // Nothing was launched in its place.
    let app = servers(&d, "app");
    let ids: Vec<&str> = app.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["app-1", "app-2"], "{d}");
    terminate(&st, "hello");
}

#[test]
fn a_database_killed_while_the_launch_waits_on_it_is_replaced_and_the_launch_completes() {
    let st = Stratus::new();
    let text = slow_database_launch("hello", "1s", "");
    let d = launch_until_database_waits(&st, "hello", &text);
    kill_server(&servers(&d, "db")[0]);

    let d = wait_for(&st, Duration::from_secs(90), |d| d["state"] != "LAUNCHING");
    let events = st.ok(&["events", "--deployment", "hello"]);
    assert_eq!(d["state"], "RUNNING", "{d}\n{events}");
    let db = servers(&d, "db");
    let ids: Vec<&str> = db.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["db-2"], "{d}");
    // The replacement's configure asked twice again, then succeeded.
    assert_eq!(service_file(&st, &db[0], "retry-calls").lines().count(), 3);
    // The app servers were configured once: after the replacement was up.
    for s in servers(&d, "app") {
        assert_eq!(s["services"][0]["state"], "RUNNING", "{s}");
        assert_eq!(
            service_file(&st, &s, "hooks.log")
                .lines()
                .collect::<Vec<_>>(),
            ["install-service", "configure", "stop", "start"],
            "{}",
            s["id"]
        );
    }
    assert!(
        events.contains("replaced by db-2, RUNNING after"),
        "{events}"
    );
    terminate(&st, "hello");
}

#[test]
fn a_server_that_died_while_no_control_plane_ran_is_replaced_when_one_starts() {
    let st = Stratus::new();
    let file = st.write_file("hello.toml", &hello_deployment("hello", 2));
    st.ok(&["launch", file.to_str().unwrap()]);
    let app = servers(&st.deployment("hello"), "app");
    // Its connection closes while nobody watches: no control plane sees it go.
    st.ok(&["shutdown"]);
    kill_server(&app[0]);
    // The next command brings a control plane back (a scale to the same count changes
    // nothing by itself); the dead server's agent never dials in.
    st.ok(&["scale", "--no-wait", "hello", "app", "2"]);

    let d = wait_for(&st, Duration::from_secs(60), |d| {
        d["state"] == "RUNNING" && servers(d, "app").iter().all(|s| s["id"] != "app-1")
    });
    let events = st.ok(&["events", "--deployment", "hello"]);
    assert_eq!(d["state"], "RUNNING", "{d}\n{events}");
    let app = servers(&d, "app");
    let ids: Vec<&str> = app.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["app-2", "app-3"], "{d}");
    assert_eq!(balanced(&st, &servers(&d, "lb")[0]), addresses(&app));
    assert_eq!(granted(&st, &servers(&d, "db")[0]), addresses(&app));
    assert!(
        events.contains("replaced by app-3, RUNNING after"),
        "{events}"
    );
    terminate(&st, "hello");
}

#[test]
fn every_app_server_killed_at_once_is_replaced_and_the_dependents_know_only_the_new_ones() {
    let st = Stratus::new();
    let file = st.write_file("hello.toml", &hello_deployment("hello", 2));
    st.ok(&["launch", file.to_str().unwrap()]);
    let before = servers(&st.deployment("hello"), "app");
    for s in &before {
        kill_server(s);
    }

    let d = wait_for(&st, Duration::from_secs(60), |d| {
        d["state"] == "RUNNING"
            && servers(d, "app")
                .iter()
                .all(|s| s["id"] != "app-1" && s["id"] != "app-2")
    });
    let events = st.ok(&["events", "--deployment", "hello"]);
    assert_eq!(d["state"], "RUNNING", "{d}\n{events}");
    let app = servers(&d, "app");
    let ids: Vec<&str> = app.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["app-3", "app-4"], "{d}");
    let live = addresses(&app);
    // Each replacement starts before the server it replaces ends, so it never takes that
    // server's address; the two losses may be replaced in two passes, and then the second
    // replacement may take the address the first pass freed.
    assert_ne!(live, addresses(&before), "{live:?}");
    assert_eq!(balanced(&st, &servers(&d, "lb")[0]), live);
    assert_eq!(granted(&st, &servers(&d, "db")[0]), live);
    for old in ["app-1", "app-2"] {
        assert!(
            events.contains(&format!("{old} lost at"))
                && events
                    .lines()
                    .any(|l| l.contains(&format!("{old} lost at"))
                        && l.contains(", replaced by app-")),
            "{events}"
        );
    }
    terminate(&st, "hello");
}

#[test]
fn a_killed_load_balancer_is_replaced_and_balances_every_app_server() {
    let st = Stratus::new();
    let file = st.write_file("hello.toml", &hello_deployment("hello", 2));
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = st.deployment("hello");
    let old_endpoint = d["endpoints"][0].as_str().unwrap().to_string();
    kill_server(&servers(&d, "lb")[0]);

    let d = wait_for(&st, Duration::from_secs(60), |d| {
        d["state"] == "RUNNING" && servers(d, "lb").iter().all(|s| s["id"] != "lb-1")
    });
    let events = st.ok(&["events", "--deployment", "hello"]);
    assert_eq!(d["state"], "RUNNING", "{d}\n{events}");
    let lb = servers(&d, "lb");
    assert_eq!(lb.len(), 1, "{d}");
    assert_eq!(lb[0]["id"], "lb-2");
    let app = servers(&d, "app");
    assert_eq!(balanced(&st, &lb[0]), addresses(&app));
    assert_eq!(
        service_file(&st, &lb[0], "hooks.log")
            .lines()
            .collect::<Vec<_>>(),
        [
            "install-service",
            "configure",
            "stop",
            "start",
            "start-proxy"
        ]
    );
    // The app servers ran nothing again, and the endpoint moved to the new address.
    for s in &app {
        assert_eq!(service_file(&st, s, "hooks.log").lines().count(), 4);
    }
    let endpoint = d["endpoints"][0].as_str().unwrap();
    assert_ne!(endpoint, old_endpoint, "{d}");
    assert!(
        endpoint.contains(lb[0]["address"].as_str().unwrap()),
        "{endpoint} {d}"
    );
    terminate(&st, "hello");
}

#[test]
fn with_recovery_off_a_scale_down_removes_the_lost_server_first() {
    let st = Stratus::new();
    let text = hello_deployment("hello", 2).replace(
        "[tiers.app]\n",
        "[tiers.app]\nrecovery = \"off\"\nrecovery-grace = \"1s\"\n",
    );
    let file = st.write_file("hello.toml", &text);
    st.ok(&["launch", file.to_str().unwrap()]);
    kill_server(&servers(&st.deployment("hello"), "app")[0]);
    let d = wait_for(&st, Duration::from_secs(20), |d| d["state"] == "DEGRADED");
    assert_eq!(d["state"], "DEGRADED", "{d}");

    st.ok(&["scale", "hello", "app", "1", "--min", "1"]);
    let d = wait_for(&st, Duration::from_secs(30), |d| {
        d["state"] == "RUNNING" && servers(d, "app").len() == 1
    });
    let events = st.ok(&["events", "--deployment", "hello"]);
    assert_eq!(d["state"], "RUNNING", "{d}\n{events}");
    let app = servers(&d, "app");
    assert_eq!(app[0]["id"], "app-2", "the live server stays: {d}");
    assert_eq!(app[0]["agent"], "RUNNING", "{d}");
    assert_eq!(balanced(&st, &servers(&d, "lb")[0]), addresses(&app));
    assert_eq!(granted(&st, &servers(&d, "db")[0]), addresses(&app));
    terminate(&st, "hello");
}

#[test]
fn a_new_server_killed_in_the_middle_of_a_scale_up_is_replaced_and_the_scale_completes() {
    let st = Stratus::new();
    // App servers of the test plugin, whose configure asks twice to be retried, 2 s apart.
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let hostile = stratus_plugin_artifacts::package_dir("hostile");
    let text = hello_deployment("hello", 1);
    let (head, app) = text.split_once("[services.app]").unwrap();
    let app = app
        .replacen(
            &format!("package = \"{}\"", hello.display()),
            &format!("package = \"{}\"", hostile.display()),
            1,
        )
        .replace(
            "settings = { greeting = \"application\" }",
            "settings = { attack = \"retry-twice\" }\n\
             retry = { attempts = 5, initial = \"2s\", max = \"2s\" }",
        );
    let file = st.write_file("hello.toml", &format!("{head}[services.app]{app}"));
    st.ok(&["launch", file.to_str().unwrap()]);
    st.ok(&["scale", "--no-wait", "hello", "app", "2"]);
    let d = wait_for(&st, Duration::from_secs(30), |d| {
        servers(d, "app")
            .iter()
            .any(|s| s["id"] == "app-2" && s["waiting"].as_array().is_some_and(|w| !w.is_empty()))
    });
    assert_eq!(d["state"], "SCALING", "{d}");
    let new = servers(&d, "app")
        .into_iter()
        .find(|s| s["id"] == "app-2")
        .unwrap();
    kill_server(&new);

    let d = wait_for(&st, Duration::from_secs(90), |d| {
        d["state"] == "RUNNING" && servers(d, "app").iter().all(|s| s["id"] != "app-2")
    });
    let events = st.ok(&["events", "--deployment", "hello"]);
    assert_eq!(d["state"], "RUNNING", "{d}\n{events}");
    let app = servers(&d, "app");
    let ids: Vec<&str> = app.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["app-1", "app-3"], "{d}");
    assert_eq!(balanced(&st, &servers(&d, "lb")[0]), addresses(&app));
    assert_eq!(granted(&st, &servers(&d, "db")[0]), addresses(&app));
    // The replacement asked twice and then succeeded; the first server ran nothing again.
    assert_eq!(service_file(&st, &app[1], "retry-calls").lines().count(), 3);
    assert_eq!(service_file(&st, &app[0], "retry-calls").lines().count(), 3);
    assert!(
        events.contains("replaced by app-3, RUNNING after"),
        "{events}"
    );
    terminate(&st, "hello");
}

#[test]
fn a_frozen_server_is_noticed_by_its_missed_pings_and_replaced() {
    let st = Stratus::new();
    let text = hello_deployment("hello", 2)
        .replace("[tiers.app]\n", "[tiers.app]\nrecovery-grace = \"1s\"\n");
    let file = st.write_file("hello.toml", &text);
    st.ok(&["launch", file.to_str().unwrap()]);
    let app = servers(&st.deployment("hello"), "app");
    let pid = app[0]["pid"].as_u64().unwrap() as u32;
    // Frozen, not dead: the connection stays open, the process stays, nothing answers.
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", "--", &format!("-{pid}")])
        .status()
        .unwrap();
    assert!(stopped.success());
    let d = wait_for(&st, Duration::from_secs(60), |d| {
        d["state"] == "RUNNING" && servers(d, "app").iter().all(|s| s["id"] != "app-1")
    });
    let app = servers(&d, "app");
    let ids: Vec<&str> = app.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["app-2", "app-3"], "{d}");
    let events = st.ok(&["events", "--deployment", "hello"]);
    assert!(events.contains("did not answer a ping within"), "{events}");
    // Ending the replaced server ended its frozen processes too.
    assert!(
        wait_gone(pid, Duration::from_secs(10)),
        "frozen agent {pid} left"
    );
    terminate(&st, "hello");
}
