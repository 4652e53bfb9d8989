//! Retryable hook errors, through the real binary: a hook that asks to be retried twice is
//! called again after the backoff and the launch completes, with status showing the wait in
//! between and an event per attempt; one that never stops asking fails after the service's cap,
//! naming its message and the attempts; a control plane killed between attempts continues the
//! count and runs no completed call again; launching a failed deployment again runs its failed
//! hook again instead of replaying the failure.

use crate::common;

use common::{Stratus, hello_deployment, read, terminate, wait_gone};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The hello deployment with one app server running the hostile package in retry mode `mode`,
/// with the service's `retry` table.
fn retrying_app(name: &str, mode: &str, retry: &str) -> String {
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let hostile = stratus_plugin_artifacts::package_dir("hostile");
    let text = hello_deployment(name, 1);
    let (head, app) = text.split_once("[services.app]").unwrap();
    let app = app
        .replacen(
            &format!("package = \"{}\"", hello.display()),
            &format!("package = \"{}\"", hostile.display()),
            1,
        )
        .replace(
            "settings = { greeting = \"application\" }",
            &format!("settings = {{ attack = \"{mode}\" }}\nretry = {retry}"),
        );
    let text = format!("{head}[services.app]{app}");
    assert!(text.contains(mode) && text.contains("retry = {"), "{text}");
    text
}

/// The calls the hostile plugin really ran on app-1, one line each.
fn calls(st: &Stratus, dep: &str) -> usize {
    let services = st
        .dir()
        .join("servers")
        .join(dep)
        .join("app-1/root/mnt/services");
    let dir: PathBuf = std::fs::read_dir(&services)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    read(&dir.join("retry-calls")).lines().count()
}

fn events(st: &Stratus, dep: &str) -> Vec<String> {
    st.ok(&["events", "--deployment", dep])
        .lines()
        .map(str::to_string)
        .collect()
}

/// Milliseconds of the day of an event line (`2026-12-01T12:01:03.123Z ...`).
fn event_ms(line: &str) -> u64 {
    let t = &line[11..23];
    let n = |r: std::ops::Range<usize>| t[r].parse::<u64>().unwrap();
    ((n(0..2) * 60 + n(3..5)) * 60 + n(6..8)) * 1000 + n(9..12)
}

/// Milliseconds of the day of an `HH:MM:SS` time.
fn clock_ms(hms: &str) -> u64 {
    let n = |r: std::ops::Range<usize>| hms[r].parse::<u64>().unwrap();
    ((n(0..2) * 60 + n(3..5)) * 60 + n(6..8)) * 1000
}

/// The one event line containing `text`.
fn one<'a>(events: &'a [String], text: &str) -> &'a String {
    let found: Vec<&String> = events.iter().filter(|e| e.contains(text)).collect();
    assert_eq!(found.len(), 1, "{text:?} in:\n{}", events.join("\n"));
    found[0]
}

/// The next attempt's time in an "asked to retry" event.
fn next_at(line: &str) -> &str {
    line.rsplit_once(" at ").unwrap().1
}

/// The app server's waits in a status snapshot.
fn waits(status: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for t in status["tiers"].as_array().into_iter().flatten() {
        for s in t["servers"].as_array().into_iter().flatten() {
            out.extend(s["waiting"].as_array().into_iter().flatten().cloned());
        }
    }
    out
}

#[test]
fn a_hook_that_asks_twice_is_retried_after_its_backoff_and_status_shows_the_wait() {
    let st = Stratus::new();
    let text = retrying_app(
        "twice",
        "retry-twice",
        "{ attempts = 5, initial = \"1s\", max = \"2s\" }",
    );
    let file = st.write_file("twice.toml", &text);
    st.ok(&["launch", "--no-wait", file.to_str().unwrap()]);

    // Poll status until the launch ends, keeping what it showed while the hook waited.
    let (mut seen, mut texts) = (Vec::new(), Vec::new());
    let start = Instant::now();
    let state = loop {
        assert!(start.elapsed() < Duration::from_secs(90), "launch hangs");
        let d = st.deployment("twice");
        let w = waits(&d);
        if w.iter().any(|w| w["state"] == "WAITING") {
            texts.push(st.ok(&["status", "twice"]));
        }
        seen.extend(w);
        if d["state"] != "LAUNCHING" {
            break d["state"].clone();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(state, "RUNNING", "{}", events(&st, "twice").join("\n"));
    assert_eq!(
        calls(&st, "twice"),
        3,
        "two asked to be retried, the third succeeded"
    );

    for (attempt, call) in [(2, 1), (3, 2)] {
        let w = seen
            .iter()
            .find(|w| w["next_attempt"] == attempt)
            .unwrap_or_else(|| panic!("status never showed attempt {attempt} waiting: {seen:?}"));
        assert_eq!(w["step"], "service/app/app-1/configure", "{w}");
        assert_eq!(w["hook"], "configure");
        assert_eq!(w["attempts"], 5);
        assert_eq!(w["message"], format!("dependency not up yet (call {call})"));
        assert_eq!(w["next_attempt_at"].as_str().unwrap().len(), 8, "{w}");
    }
    assert!(
        texts.iter().any(
            |t| t.contains("configure WAITING (dependency not up yet (call ")
                && t.contains("of 5 at ")
        ),
        "{texts:?}"
    );
    assert!(
        waits(&st.deployment("twice")).is_empty(),
        "nothing waits once RUNNING"
    );

    // An event per attempt, and each new attempt is called no earlier than announced, after
    // the doubling wait (1 s, then 2 s).
    let ev = events(&st, "twice");
    for (attempt, call, wait_ms) in [(2, 1, 1000), (3, 2, 2000)] {
        let asked = one(
            &ev,
            &format!(
                "configure on app-1 asked to retry (dependency not up yet (call {call})): \
                 attempt {attempt} of 5 at "
            ),
        );
        let called = one(
            &ev,
            &format!("calling hook configure (service/app/app-1/configure/attempt-{attempt})"),
        );
        assert!(
            event_ms(called) >= clock_ms(next_at(asked)),
            "{asked}\n{called}"
        );
        assert!(
            event_ms(called) >= event_ms(asked) + wait_ms - 50,
            "{asked}\n{called}"
        );
    }
    one(&ev, "calling hook configure (service/app/app-1/configure)");
    terminate(&st, "twice");
}

#[test]
fn a_hook_that_never_stops_asking_fails_after_the_cap_naming_its_message() {
    let st = Stratus::new();
    let text = retrying_app(
        "always",
        "retry-always",
        "{ attempts = 3, initial = \"100ms\", max = \"200ms\" }",
    );
    let file = st.write_file("always.toml", &text);
    let started = Instant::now();
    let out = st.run(&["launch", file.to_str().unwrap()]);
    assert!(!out.status.success(), "the launch must fail");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    let d = st.deployment("always");
    assert_eq!(d["state"], "FAILED", "{d}");
    let reason = d["reason"].as_str().unwrap();
    assert!(
        reason.contains("hook configure failed (hook-error)")
            && reason.contains(
                "dependency never comes up (call 3) (still asking to be retried after 3 attempts)"
            ),
        "{reason}"
    );
    assert_eq!(calls(&st, "always"), 3, "exactly the cap of calls");
    assert!(waits(&d).is_empty(), "a failed step waits no more: {d}");
    let ev = events(&st, "always");
    one(&ev, "attempt 2 of 3 at ");
    one(&ev, "attempt 3 of 3 at ");
    assert!(!ev.iter().any(|e| e.contains("attempt 4")), "{ev:?}");
    terminate(&st, "always");
}

/// Launches with the control plane set to exit at `var=step` and waits until it has.
fn crash_at(st: &Stratus, file: &str, var: &str, step: &str) {
    let _ = st
        .cmd()
        .env(var, step)
        .args(["launch", "--no-wait", file])
        .output()
        .unwrap();
    if let Some(pid) = st.control_pid() {
        assert!(
            wait_gone(pid, Duration::from_secs(60)),
            "control plane did not stop at {var}={step}"
        );
    }
    let log = read(&st.dir().join("logs/control.out"));
    assert!(
        log.contains(&format!("fault injection: exiting at {var} {step}")),
        "{log}"
    );
    assert_eq!(st.deployment("resume")["state"], "LAUNCHING");
}

#[test]
fn a_control_plane_killed_between_attempts_continues_the_count() {
    let st = Stratus::new();
    let text = retrying_app(
        "resume",
        "retry-twice",
        "{ attempts = 4, initial = \"200ms\", max = \"1s\" }",
    );
    let file = st.write_file("resume.toml", &text);
    let file = file.to_str().unwrap();
    // Killed once after attempt 1 answered but before its wait was journaled, and once after
    // attempt 2's wait was journaled.
    let first = "service/app/app-1/configure/retry-1";
    crash_at(&st, file, "STRATUS_FAULT_EXIT_BEFORE", first);
    let second = "service/app/app-1/configure/retry-2";
    crash_at(&st, file, "STRATUS_FAULT_EXIT_AFTER", second);
    st.ok(&["launch", file]);
    assert_eq!(st.deployment("resume")["state"], "RUNNING");

    // The agent answered the repeated first call from its cache: the plugin ran three times.
    assert_eq!(calls(&st, "resume"), 3);
    let ev = events(&st, "resume");
    // Attempt 1 was asked twice (the second time answered from the agent's cache); attempts 2
    // and 3 once each, and the count never went back.
    let first_calls = ev
        .iter()
        .filter(|e| e.contains("calling hook configure (service/app/app-1/configure)"))
        .count();
    assert_eq!(first_calls, 2, "{}", ev.join("\n"));
    one(
        &ev,
        "calling hook configure (service/app/app-1/configure/attempt-2)",
    );
    one(
        &ev,
        "calling hook configure (service/app/app-1/configure/attempt-3)",
    );
    one(&ev, "attempt 2 of 4 at ");
    one(&ev, "attempt 3 of 4 at ");
    assert!(
        !ev.iter().any(|e| e.contains("attempt-4")),
        "{}",
        ev.join("\n")
    );
    terminate(&st, "resume");
}

#[test]
fn a_trap_is_not_retried_even_with_a_retry_policy() {
    let st = Stratus::new();
    let text = retrying_app(
        "trap",
        "panic",
        "{ attempts = 5, initial = \"100ms\", max = \"100ms\" }",
    );
    let file = st.write_file("trap.toml", &text);
    let out = st.run(&["launch", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let d = st.deployment("trap");
    assert_eq!(d["state"], "FAILED", "{d}");
    let reason = d["reason"].as_str().unwrap();
    assert!(reason.contains("hook configure failed (trap)"), "{reason}");
    assert!(!reason.contains("attempt"), "{reason}");
    let ev = events(&st, "trap");
    assert!(!ev.iter().any(|e| e.contains("asked to retry")), "{ev:?}");
    one(&ev, "calling hook configure (service/app/app-1/configure)");
    assert!(
        !ev.iter().any(|e| e.contains("configure/attempt-")),
        "{ev:?}"
    );
    terminate(&st, "trap");
}

#[test]
fn launching_a_failed_deployment_again_runs_the_failed_hook_again() {
    let st = Stratus::new();
    let text = retrying_app(
        "again",
        "retry-fail-once",
        "{ attempts = 1, initial = \"100ms\", max = \"100ms\" }",
    );
    let file = st.write_file("again.toml", &text);
    let out = st.run(&["launch", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let d = st.deployment("again");
    assert_eq!(d["state"], "FAILED", "{d}");
    assert!(
        d["reason"].as_str().unwrap().contains("failing once"),
        "{d}"
    );
    assert_eq!(calls(&st, "again"), 1);
    // Same file, same inputs: the hook runs again (its cause was outside the file) and the
    // launch completes, rather than the agent answering with the remembered failure.
    st.ok(&["launch", file.to_str().unwrap()]);
    assert_eq!(st.deployment("again")["state"], "RUNNING");
    assert_eq!(calls(&st, "again"), 2);
    terminate(&st, "again");
}

#[test]
fn following_a_launch_whose_control_plane_dies_says_so_instead_of_waiting() {
    let st = Stratus::new();
    let text = retrying_app(
        "orphan",
        "retry-always",
        "{ attempts = 50, initial = \"1s\", max = \"1s\" }",
    );
    let file = st.write_file("orphan.toml", &text);
    let mut child = st
        .cmd()
        .args(["launch", file.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the hook is being retried, then end the control plane under the follower.
    let deadline = Instant::now() + Duration::from_secs(60);
    // `events` may run before the control plane has created the journal: not yet, then.
    let asked = || {
        let out = st.run(&["events", "--deployment", "orphan"]);
        String::from_utf8_lossy(&out.stdout).contains("asked to retry")
    };
    while !asked() {
        assert!(
            Instant::now() < deadline,
            "the hook never asked to be retried"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let control = st.control_pid().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &control.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the follower still waits"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("control plane of"), "{err}");
    assert!(
        err.contains("stopped while orphan was in progress"),
        "{err}"
    );
    // A new control plane takes over (terminate starts one) and ends everything.
    let pids = st.agent_pids();
    st.ok(&["terminate", "orphan"]);
    for p in pids {
        assert!(wait_gone(p, Duration::from_secs(10)));
    }
}
