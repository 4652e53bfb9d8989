//! Scaling rules in real launches: the greeter's bounded CPU burner is switched on in the only
//! app server, the tier scales up once the breach has held and the event shows the vote; it
//! is switched off, and the tier scales back down once the cooldown window has held, never
//! below min. A custom `scaler` component (the threshold rule written as a guest) decides the
//! same, with the same votes.

use crate::common;

use common::burner::{self, Switch};
use common::{Stratus, servers, terminate, wait_for};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// An app tier of 1..3 greeters that scale on CPU with short periods; `rule` adds a custom
/// rule (the threshold-scaler package) to the same thresholds.
fn deployment(st: &Stratus, name: &str, rule: bool) -> PathBuf {
    let rule = if rule {
        let scaler = stratus_plugin_artifacts::package_dir("threshold-scaler");
        format!("rule = \"{}\"\n", scaler.display())
    } else {
        String::new()
    };
    let app_tier = format!(
        "min = 1\nmax = 3\n\n[tiers.app.scaling]\ncpu-high = 40\ncpu-low = 10\n\
         breach = \"2s\"\ncooldown = \"3s\"\nsettle = \"2s\"\nincrement = 1\n{rule}"
    );
    burner::deployment(st, name, &app_tier)
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

/// Burns, scales up, stops burning, scales down; returns the decisions' messages.
fn burn_and_settle(name: &str, rule: bool) -> Vec<String> {
    let _alone = common::cores::measuring();
    let st = Stratus::new();
    let file = deployment(&st, name, rule);
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = st.deployment(name);
    assert_eq!(d["state"], "RUNNING", "{d}");
    assert_eq!(servers(&d, "app").len(), 1, "{d}");
    let burn = Switch::of(&st, name, "app-1");

    // Idle: nothing votes up, and min holds the tier at one server.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(running_apps(&st.deployment(name)), 1);
    assert!(
        decisions(&st, name).is_empty(),
        "{:?}",
        decisions(&st, name)
    );

    burn.on();
    let d = wait_for(&st, name, Duration::from_secs(60), |d| {
        d["state"] == "RUNNING" && running_apps(d) == 2
    });
    burn.off();
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

#[test]
fn a_looping_custom_rule_is_paused_and_holds_up_no_other_tier() {
    let _alone = common::cores::measuring();
    let st = Stratus::new();
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let hostile = stratus_plugin_artifacts::package_dir("hostile-scaler");
    // A second tier whose rule spins until its time limit, every time it is asked.
    let app_tier = format!(
        "min = 1\nmax = 3\n\n[tiers.app.scaling]\ncpu-high = 40\ncpu-low = 10\n\
         breach = \"2s\"\ncooldown = \"3s\"\nsettle = \"2s\"\n\n\
         [tiers.loop]\nmin = 1\nmax = 2\nservices = [\"idle\"]\n\n\
         [tiers.loop.scaling]\nrule = \"{}\"\nsettle = \"0s\"\n\n\
         [services.idle]\npackage = \"{}\"\n",
        hostile.display(),
        hello.display()
    );
    let file = burner::deployment(&st, "spin", &app_tier);
    st.ok(&["launch", file.to_str().unwrap()]);
    let burn = Switch::of(&st, "spin", "app-1");
    burn.on();
    let d = wait_for(&st, "spin", Duration::from_secs(60), |d| {
        running_apps(d) == 2
    });
    burn.off();
    assert_eq!(running_apps(&d), 2, "the app tier did not scale up: {d}");
    let events = st.ok(&["events", "--deployment", "spin"]);
    let failures: Vec<&str> = events
        .lines()
        .filter(|l| l.contains("scaling rule failed"))
        .collect();
    assert!(
        failures
            .first()
            .is_some_and(|l| l.contains("(1 in a row; next try in 10s)")),
        "{events}"
    );
    // Paused after each failure: a handful of tries, not one per pass.
    assert!(failures.len() <= 3, "{failures:?}");
    assert_eq!(servers(&d, "loop").len(), 1, "the looping rule scaled: {d}");
    terminate(&st, "spin");
}
