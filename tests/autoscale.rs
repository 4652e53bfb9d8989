//! Scaling rules in real launches: the greeter's bounded CPU burner is switched on in the only
//! app server, the tier scales up once the breach has held and the event shows the vote; it
//! is switched off, and the tier scales back down once the cooldown window has held, never
//! below min. A custom `scaler` component (the threshold rule written as a guest) decides the
//! same, with the same votes.
//!
//! The database is the hello plugin's (files only): the greeter reads it only when asked for
//! a page, and these tests never ask, so no MariaDB is needed to burn CPU.

mod common;

use common::{Stratus, servers, terminate};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A database tier and an app tier of 1..3 greeters that scale on CPU with short periods;
/// `rule` adds a custom rule (the threshold-scaler package) to the same thresholds.
fn deployment(st: &Stratus, name: &str, rule: bool) -> PathBuf {
    let root = stratus_plugin_artifacts::repo_root();
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let app = stratus_plugin_artifacts::package_dir("app");
    let rule = if rule {
        let scaler = stratus_plugin_artifacts::package_dir("threshold-scaler");
        format!("rule = \"{}\"\n", scaler.display())
    } else {
        String::new()
    };
    let text = format!(
        r#"[deployment]
name = "{name}"
metrics-interval = "500ms"

[tiers.db]
min = 1
max = 1
services = ["db"]

[tiers.app]
min = 1
max = 3
services = ["app"]

[tiers.app.scaling]
cpu-high = 40
cpu-low = 10
breach = "2s"
cooldown = "3s"
settle = "2s"
increment = 1
{rule}
[services.db]
package = "{hello}"
data-source = {{ image = "{sql}", database = "hello" }}
ports = {{ mysql = 3306 }}
credentials = ["admin"]

[services.app]
package = "{app}"
ports = {{ http = 8080 }}
depends-on = [{{ data-source = "db" }}]
"#,
        hello = hello.display(),
        app = app.display(),
        sql = root.join("examples/hello/datasource.sql").display(),
    );
    st.write_file(&format!("{name}.toml"), &text)
}

/// The burner switch of a server: a file named `burn` next to its greeter's configuration.
fn burn_switch(st: &Stratus, dep: &str, server: &Value) -> PathBuf {
    let root = common::server_root(st, dep, server);
    let config = common::every_file(&root)
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "greeter.toml"))
        .unwrap_or_else(|| panic!("no greeter.toml under {}", root.display()));
    config.with_file_name("burn")
}

/// Polls `dep` until `done` holds, for up to `limit`; returns the last view.
fn wait_for(st: &Stratus, dep: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    let mut d = st.deployment(dep);
    while !done(&d) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        d = st.deployment(dep);
    }
    d
}

fn running_apps(d: &Value) -> usize {
    servers(d, "app")
        .iter()
        .filter(|s| s["agent"] == "RUNNING")
        .count()
}

/// The scaling decisions among the deployment's events, oldest first.
fn decisions(st: &Stratus, dep: &str) -> Vec<String> {
    st.ok(&["events", "--deployment", dep])
        .lines()
        .filter(|l| l.contains("scale app "))
        .map(|l| {
            l.split_once("scale app ")
                .map(|(_, m)| format!("scale app {m}"))
                .unwrap()
        })
        .collect()
}

fn switch(path: &Path, on: bool) {
    if on {
        std::fs::write(path, b"").unwrap();
    } else {
        let _ = std::fs::remove_file(path);
    }
}

/// Burns, scales up, stops burning, scales down; returns the decisions' messages.
fn burn_and_settle(name: &str, rule: bool) -> Vec<String> {
    let st = Stratus::new();
    let file = deployment(&st, name, rule);
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = st.deployment(name);
    assert_eq!(d["state"], "RUNNING", "{d}");
    let apps = servers(&d, "app");
    assert_eq!(apps.len(), 1, "{d}");
    let burn = burn_switch(&st, name, &apps[0]);

    // Idle: nothing votes up, and min holds the tier at one server.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(running_apps(&st.deployment(name)), 1);
    assert!(
        decisions(&st, name).is_empty(),
        "{:?}",
        decisions(&st, name)
    );

    switch(&burn, true);
    let d = wait_for(&st, name, Duration::from_secs(60), |d| {
        d["state"] == "RUNNING" && running_apps(d) == 2
    });
    switch(&burn, false);
    assert_eq!(running_apps(&d), 2, "the tier did not scale up: {d}");
    let up = decisions(&st, name);
    assert!(!up.is_empty(), "no decision event");
    let cpu = servers(&d, "app")[0]["cpu_percent"].as_f64();

    // Switched off, both servers idle: one decision down after the cooldown, to min.
    let d = wait_for(&st, name, Duration::from_secs(60), |d| {
        d["state"] == "RUNNING" && servers(d, "app").len() == 1
    });
    assert_eq!(
        servers(&d, "app").len(),
        1,
        "the tier did not scale down: {d}"
    );
    std::thread::sleep(Duration::from_secs(6));
    let d = st.deployment(name);
    assert_eq!(servers(&d, "app").len(), 1, "scaled below min: {d}");
    let all = decisions(&st, name);
    terminate(&st, name);
    eprintln!("{name}: cpu at scale-up {cpu:?}, decisions {all:?}");
    all
}

#[test]
fn the_threshold_rule_scales_up_on_a_breach_and_down_after_the_cooldown_within_bounds() {
    let all = burn_and_settle("burn", false);
    assert_eq!(
        all,
        [
            "scale app 1→2: 1 of 1 servers above 40 % CPU for 2s",
            "scale app 2→1: 2 of 2 servers below 10 % CPU for 3s",
        ],
        "exactly one decision each way, each showing its vote"
    );
}

#[test]
fn a_custom_scaler_component_decides_the_same_as_the_threshold_rule() {
    let all = burn_and_settle("custom", true);
    let rule = stratus_plugin_artifacts::package_dir("threshold-scaler");
    assert_eq!(
        all,
        [
            format!(
                "scale app 1→2: 1 of 1 servers voted up by rule {}",
                rule.display()
            ),
            format!(
                "scale app 2→1: 2 of 2 servers voted down by rule {}",
                rule.display()
            ),
        ],
    );
}
