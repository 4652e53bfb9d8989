//! Metrics in real launches: agents report their services' CPU and memory every
//! `metrics-interval`, and status shows each server's latest sample. The greeter's bounded
//! CPU burner, switched on in one app server, shows there as about one busy core while the
//! other app server stays low, and drops again once switched off; the memory shown is at
//! least the greeter's own resident set. An agent killed and started again (it adopts its
//! greeter) is asked for its metrics again, and measures the adopted greeter.
//!
//! The database is the hello plugin's (files only): the greeter reads it only when asked for a
//! page, and these tests never ask, so no MariaDB is needed.

use crate::common;

use common::burner::{self, Switch, greeter};
use common::relaunch::{launch_of, relaunch};
use common::{Stratus, servers, terminate, vm_rss, wait_for};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// A database tier and an app tier of two greeters, reporting every 500 ms.
fn deployment(st: &Stratus, name: &str) -> PathBuf {
    deployment_with(st, name, "")
}

/// [`deployment`] with `app_extra` lines in the app tier.
fn deployment_with(st: &Stratus, name: &str, app_extra: &str) -> PathBuf {
    burner::deployment(st, name, &format!("min = 2\nmax = 2\n{app_extra}"))
}

/// Server `id` of `tier` in a deployment's status JSON.
fn server(d: &Value, tier: &str, id: &str) -> Value {
    servers(d, tier)
        .into_iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no server {id} in {d}"))
}

fn cpu(d: &Value, id: &str) -> Option<f64> {
    server(d, "app", id)["cpu_percent"].as_f64()
}

fn sampled_at(d: &Value, id: &str) -> u64 {
    server(d, "app", id)["sampled_at_ms"].as_u64().unwrap_or(0)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_burning_greeter_shows_as_a_busy_core_while_the_other_stays_low() {
    let _alone = common::cores::measuring();
    let st = Stratus::new();
    let file = deployment(&st, "busy");
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = st.deployment("busy");
    assert_eq!(d["state"], "RUNNING", "{d}");
    // Every server row carries the fields, null until its first sample.
    assert!(server(&d, "db", "db-1").get("cpu_percent").is_some(), "{d}");

    let d = wait_for(&st, "busy", Duration::from_secs(20), |d| {
        cpu(d, "app-1").is_some() && cpu(d, "app-2").is_some()
    });
    assert!(cpu(&d, "app-2").is_some(), "no metrics reached status: {d}");
    let (pid, config) = greeter(&st, "busy", "app-1");
    let rss = vm_rss(pid);
    let since = now_ms();
    let d = wait_for(&st, "busy", Duration::from_secs(10), |d| {
        sampled_at(d, "app-1") > since
    });
    let s1 = server(&d, "app", "app-1");
    let memory = s1["memory_bytes"].as_u64().unwrap();
    assert!(
        memory >= rss,
        "the server's memory ({memory}) is below its greeter's resident set ({rss}): {s1}"
    );
    let percent = s1["memory_percent"].as_f64().unwrap();
    assert!(percent > 0.0 && percent < 100.0, "{s1}");
    assert!(cpu(&d, "app-1").unwrap() < 30.0, "idle greeter busy? {s1}");

    let switch = Switch::beside(&config);
    switch.on();
    let d = wait_for(&st, "busy", Duration::from_secs(30), |d| {
        cpu(d, "app-1").is_some_and(|c| c > 60.0)
    });
    let (busy, calm) = (cpu(&d, "app-1").unwrap(), cpu(&d, "app-2").unwrap());
    eprintln!(
        "burning: app-1 {busy:.1} % CPU, app-2 {calm:.1} %; greeter VmRSS {rss}, server memory {memory}"
    );
    assert!(busy > 60.0, "the burning server shows {busy} % CPU: {d}");
    assert!(calm < 30.0, "the other app server shows {calm} % CPU: {d}");
    assert!(busy < 150.0, "the burner uses one thread only: {busy} %");
    let text = st.ok(&["status", "busy"]);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("cpu ") && l.contains(" MiB"))
        .unwrap_or_else(|| panic!("no metrics line in status: {text}"));
    assert!(line.contains(" %  mem "), "{line}");

    drop(switch);
    let d = wait_for(&st, "busy", Duration::from_secs(30), |d| {
        cpu(d, "app-1").is_some_and(|c| c < 30.0)
    });
    assert!(
        cpu(&d, "app-1").unwrap() < 30.0,
        "the CPU did not drop once switched off: {d}"
    );

    terminate(&st, "busy");
    let d = st.deployment("busy");
    for s in servers(&d, "app") {
        assert!(
            s["cpu_percent"].is_null(),
            "a terminated server shows metrics: {s}"
        );
    }
}

#[test]
fn an_agent_started_again_is_asked_again_and_measures_its_adopted_greeter() {
    let _alone = common::cores::measuring();
    let st = Stratus::new();
    // The agent is started again by hand: recovery must not replace its server meanwhile.
    let file = deployment_with(&st, "again", "recovery = \"off\"");
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = wait_for(&st, "again", Duration::from_secs(20), |d| {
        cpu(d, "app-1").is_some()
    });
    assert!(cpu(&d, "app-1").is_some(), "no metrics: {d}");
    let old = server(&d, "app", "app-1")["pid"].as_u64().unwrap() as u32;
    let (greeter_pid, config) = greeter(&st, "again", "app-1");
    let launch = launch_of(old);
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &old.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(common::wait_gone(old, Duration::from_secs(5)));
    let d = wait_for(&st, "again", Duration::from_secs(10), |d| {
        server(d, "app", "app-1")["agent"] == "LOST"
    });
    assert!(
        cpu(&d, "app-1").is_none(),
        "a LOST server shows no metrics: {d}"
    );

    let restarted_at = now_ms();
    let _agent = relaunch(&launch);
    let switch = Switch::beside(&config);
    switch.on();
    let d = wait_for(&st, "again", Duration::from_secs(30), |d| {
        sampled_at(d, "app-1") > restarted_at && cpu(d, "app-1").is_some_and(|c| c > 60.0)
    });
    let s = server(&d, "app", "app-1");
    assert_ne!(s["pid"], old, "a new agent: {s}");
    assert!(
        sampled_at(&d, "app-1") > restarted_at && cpu(&d, "app-1").unwrap() > 60.0,
        "the new agent does not report its adopted greeter burning: {d}"
    );
    assert_eq!(
        greeter(&st, "again", "app-1").0,
        greeter_pid,
        "the greeter was adopted, not started again"
    );
    drop(switch);
    terminate(&st, "again");
}
