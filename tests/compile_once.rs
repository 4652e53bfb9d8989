//! Compile once, ahead of time: a launch compiles each distinct component once, when the
//! control plane uploads it, into the code cache its agents share, and every agent loads the
//! verified compiled code without compiling (its `agent.log` says so). A control plane killed
//! after a compile step resumes without compiling that component again; a relaunch finds the
//! compiled code in the cache; an agent finds a tampered entry refused and compiles itself,
//! saying why.

use crate::common;

use common::{
    Stratus, hello_deployment, one_service, package_copy, read, server_root, servers, terminate,
    wait_gone,
};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// What an agent's log says when it loaded a plugin's compiled code from the cache.
const LOADED_FROM_CACHE: &str = "plugin loaded: compiled code from the code cache (hit)";

/// The deployment's events as `stratus events` prints them.
fn events(st: &Stratus, dep: &str) -> String {
    st.ok(&["events", "--deployment", dep])
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

/// Every server of the deployment's status, all tiers.
fn all_servers(d: &Value) -> Vec<Value> {
    ["db", "app", "lb"]
        .iter()
        .flat_map(|t| servers(d, t))
        .collect()
}

fn agent_log(st: &Stratus, dep: &str, server: &Value) -> String {
    read(&server_root(st, dep, server).join("agent/agent.log"))
}

/// The compiled-code entries in the control plane's cache.
fn cache_entries(st: &Stratus) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(st.dir().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    v.sort();
    v
}

#[test]
fn hello_compiles_each_component_once_and_every_agent_loads_it_from_the_cache() {
    let st = Stratus::new();
    let file = st.write_file("hello.toml", &hello_deployment("once", 3));
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = st.deployment("once");
    assert_eq!(d["state"], "RUNNING", "{d}");

    // app and db share the hello package: one compile for both, one for the load balancer.
    let ev = events(&st, "once");
    assert_eq!(count(&ev, "compiling app, db (rust, "), 1, "{ev}");
    assert_eq!(count(&ev, "compiling lb (rust, "), 1, "{ev}");
    assert_eq!(count(&ev, "compiled app, db (rust, "), 1, "{ev}");
    assert_eq!(count(&ev, "compiled lb (rust, "), 1, "{ev}");
    assert_eq!(count(&ev, "compiling "), 2, "{ev}");
    assert_eq!(cache_entries(&st).len(), 2, "{:?}", cache_entries(&st));

    let all = all_servers(&d);
    assert_eq!(all.len(), 5);
    for s in &all {
        let log = agent_log(&st, "once", s);
        assert!(log.contains(LOADED_FROM_CACHE), "{}: {log}", s["id"]);
        assert!(!log.contains("compiled here"), "{}: {log}", s["id"]);
    }
    terminate(&st, "once");

    // A relaunch (a new journal) finds both components compiled.
    st.ok(&["launch", file.to_str().unwrap()]);
    let ev = events(&st, "once");
    assert_eq!(
        count(&ev, "compiled code already in the code cache"),
        2,
        "{ev}"
    );
    assert_eq!(
        count(&ev, "compiled lb (rust, "),
        1,
        "only the first launch compiled: {ev}"
    );
    assert_eq!(cache_entries(&st).len(), 2);
    terminate(&st, "once");
}

#[test]
fn a_control_plane_killed_after_a_compile_resumes_without_compiling_it_again() {
    let st = Stratus::new();
    let file = st.write_file("hello.toml", &hello_deployment("resumed", 1));
    let file = file.to_str().unwrap();
    let _ = st
        .cmd()
        .env("STRATUS_FAULT_EXIT_AFTER", "cloud-files/compile/")
        .args(["launch", "--no-wait", file])
        .output()
        .unwrap();
    if let Some(pid) = st.control_pid() {
        assert!(
            wait_gone(pid, Duration::from_secs(120)),
            "no exit at the fault"
        );
    }
    let out = read(&st.dir().join("logs/control.out"));
    let done = out
        .lines()
        .find_map(|l| l.strip_prefix("fault injection: exiting at STRATUS_FAULT_EXIT_AFTER "))
        .unwrap_or_else(|| panic!("no fault exit in {out}"))
        .to_string();
    assert_eq!(st.deployment("resumed")["state"], "LAUNCHING");

    st.ok(&["launch", file]);
    assert_eq!(st.deployment("resumed")["state"], "RUNNING");
    let ev = events(&st, "resumed");
    // Each component was compiled to the end at most once, and is in the cache: the other
    // compile runs beside the one the fault follows, so it may have finished (its step not yet
    // journaled) before the kill, and is then found in the cache on resume.
    for name in ["app, db", "lb"] {
        let compiled = count(&ev, &format!("compiled {name} (rust, "));
        let cached = ev
            .lines()
            .filter(|l| l.contains(&format!(" {name} (rust, ")))
            .filter(|l| l.ends_with("compiled code already in the code cache"))
            .count();
        assert!(compiled <= 1, "{name} compiled twice: {ev}");
        assert!(compiled + cached >= 1, "{name} never compiled: {ev}");
    }
    let first = match done.as_str() {
        "cloud-files/compile/resumed-service-lb" => "compiling lb (",
        _ => "compiling app, db (",
    };
    assert_eq!(count(&ev, first), 1, "{done} again: {ev}");
    for s in &all_servers(&st.deployment("resumed")) {
        let log = agent_log(&st, "resumed", s);
        assert!(log.contains(LOADED_FROM_CACHE), "{log}");
    }
    terminate(&st, "resumed");
}

#[test]
fn an_agent_refuses_a_tampered_cache_entry_compiles_itself_and_says_so() {
    let st = Stratus::new();
    let file = st.write_file("hello.toml", &hello_deployment("tamper", 1));
    st.ok(&["launch", file.to_str().unwrap()]);
    // Flip one byte of every compiled entry: a new server's agent must not run it.
    for entry in cache_entries(&st) {
        let mut code = std::fs::read(&entry).unwrap();
        let mid = code.len() / 2;
        code[mid] ^= 0xff;
        std::fs::write(&entry, code).unwrap();
    }
    st.ok(&["scale", "tamper", "app", "2"]);
    let d = st.deployment("tamper");
    assert_eq!(d["state"], "RUNNING", "{d}");
    let app = servers(&d, "app");
    let newest = app.iter().find(|s| s["id"] == "app-2").expect("app-2");
    let log = agent_log(&st, "tamper", newest);
    assert!(log.contains("failed verification"), "{log}");
    assert!(log.contains("HMAC mismatch"), "{log}");
    assert!(!log.contains(LOADED_FROM_CACHE), "{log}");
    terminate(&st, "tamper");
}

/// A component that starts like one (so validation, which reads 8 bytes, lets it through) but
/// does not compile fails the launch at its compile step, before any server starts.
#[test]
fn a_component_that_does_not_compile_fails_the_launch_before_any_server_starts() {
    let st = Stratus::new();
    let pkg = package_copy(&st, "broken", "hello", |m| m);
    let mut bytes = b"\0asm\x0d\x00\x01\x00".to_vec();
    bytes.extend_from_slice(&[0xff; 64]);
    std::fs::write(pkg.join("plugin.wasm"), bytes).unwrap();
    let file = one_service(&st, "broken", &pkg, "greeting = \"x\"", "");
    let out = st.run(&["launch", file.to_str().unwrap()]);
    let err =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("step cloud-files/compile/broken-service-h: compiling h: "),
        "{err}"
    );
    let d = st.deployment("broken");
    assert_eq!(d["state"], "FAILED", "{d}");
    assert!(servers(&d, "h").is_empty(), "{d}");
    assert!(!st.dir().join("servers/broken").exists());
}
