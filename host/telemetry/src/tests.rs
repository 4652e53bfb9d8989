//! `render` read back by an independent Prometheus text parser, with the line grammar
//! checked strictly (that parser skips lines it cannot read).

use crate::{HookOutcome, autoscale_decision, change_set_applied, hook_call, install, render};
use prometheus_parse::{Scrape, Value};
use std::time::Duration;
use stratus_model::state::{AgentState, DeploymentState};
use stratus_store::{ServerRow, Store};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("stratus.db")).unwrap();
    (dir, store)
}

/// Every line is a `# HELP`/`# TYPE`/`# UNIT` comment, the closing `# EOF`, or a sample
/// `name{label="value",...} number`.
fn check_lines(text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "the text ends with # EOF");
    for line in &lines[..lines.len() - 1] {
        if let Some(comment) = line.strip_prefix("# ") {
            let kind = comment.split(' ').next().unwrap();
            assert!(["HELP", "TYPE", "UNIT"].contains(&kind), "comment {line:?}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf",
            "value in {line:?}"
        );
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(name.starts_with("stratus_"), "{line:?}");
        let name_ok = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        assert!(name_ok, "metric name in {line:?}");
        if name_end < series.len() {
            let labels = series[name_end..].strip_prefix('{').unwrap();
            let labels = labels.strip_suffix('}').expect("labels close");
            for pair in labels.split(',') {
                let (k, v) = pair.split_once('=').expect("label=value");
                assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                let quoted = v.len() >= 2 && v.starts_with('"') && v.ends_with('"');
                assert!(quoted && !v[1..v.len() - 1].contains('"'), "{line:?}");
            }
        }
    }
}

fn scrape(store: &Store) -> (String, Scrape) {
    let text = render(store).unwrap();
    check_lines(&text);
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    (text, parsed)
}

/// The value of the one sample of `metric` whose labels include `labels`.
fn value(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = s
        .samples
        .iter()
        .filter(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(v)))
        .collect();
    assert_eq!(found.len(), 1, "one {metric} {labels:?}");
    match &found[0].value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{metric} is {other:?}"),
    }
}

/// The `_count` of a histogram, checked against its cumulative buckets.
fn histogram_count(text: &str, s: &Scrape, metric: &str, label: (&str, &str)) -> f64 {
    let count = value(s, &format!("{metric}_count"), &[label]);
    let inf = format!("{metric}_bucket{{le=\"+Inf\",{}=\"{}\"}}", label.0, label.1);
    let inf_alt = format!("{metric}_bucket{{{}=\"{}\",le=\"+Inf\"}}", label.0, label.1);
    let line = text
        .lines()
        .find(|l| l.starts_with(&inf) || l.starts_with(&inf_alt))
        .unwrap_or_else(|| panic!("no +Inf bucket of {metric} {label:?} in\n{text}"));
    let bucket: f64 = line.rsplit_once(' ').unwrap().1.parse().unwrap();
    assert_eq!(bucket, count, "the +Inf bucket holds every observation");
    count
}

#[test]
fn an_empty_store_shows_every_state_at_zero() {
    let (_dir, store) = store();
    let (text, s) = scrape(&store);
    for state in [
        "PENDING",
        "LAUNCHING",
        "RUNNING",
        "DEGRADED",
        "FAILED",
        "TERMINATED",
    ] {
        assert_eq!(value(&s, "stratus_deployments", &[("state", state)]), 0.0);
    }
    for state in ["STARTING", "RUNNING", "LOST", "ENDING", "TERMINATED"] {
        assert_eq!(value(&s, "stratus_servers", &[("agent_state", state)]), 0.0);
    }
    for kind in ["change_set", "autoscale_up", "autoscale_down"] {
        assert!(value(&s, "stratus_scaling_events_total", &[("kind", kind)]) >= 0.0);
    }
    assert!(text.contains("# TYPE stratus_recoveries counter"), "{text}");
}

#[test]
fn gauges_count_the_store_and_name_no_deployment() {
    let (_dir, store) = store();
    // A hostile name: quotes and a newline would break the text if it were a label.
    let names = ["web\"} 1\nstratus_x 2", "db", "gone"];
    let states = [
        DeploymentState::Running,
        DeploymentState::Running,
        DeploymentState::Failed {
            reason: "secret-ish reason".into(),
        },
    ];
    for (name, state) in names.iter().zip(&states) {
        store.put_deployment(name, "/d.toml", "", state).unwrap();
    }
    for (i, agent) in [AgentState::Running, AgentState::Running, AgentState::Lost]
        .into_iter()
        .enumerate()
    {
        let server = ServerRow {
            deployment: names[i % 2].to_string(),
            id: format!("s{i}"),
            tier: "app".into(),
            name: format!("s{i}"),
            address: "127.0.0.1".into(),
            provider: "local".into(),
            handle: None,
            agent_state: agent,
            credential_digest: "d".into(),
        };
        store.upsert_server(&server).unwrap();
    }
    let (text, s) = scrape(&store);
    assert_eq!(
        value(&s, "stratus_deployments", &[("state", "RUNNING")]),
        2.0
    );
    assert_eq!(
        value(&s, "stratus_deployments", &[("state", "FAILED")]),
        1.0
    );
    assert_eq!(
        value(&s, "stratus_deployments", &[("state", "PENDING")]),
        0.0
    );
    let servers = |state| value(&s, "stratus_servers", &[("agent_state", state)]);
    assert_eq!((servers("RUNNING"), servers("LOST")), (2.0, 1.0));
    for leak in ["web", "db", "gone", "secret-ish", "stratus_x"] {
        assert!(!text.contains(leak), "{leak} in\n{text}");
    }
}

#[test]
fn hook_calls_count_by_hook_and_outcome_with_their_durations() {
    let (_dir, store) = store();
    // A hook name only this test uses: other tests move the shared counters at the same time.
    let hook = "test-only-hook";
    hook_call(hook, HookOutcome::ok, Duration::from_millis(3));
    hook_call(hook, HookOutcome::ok, Duration::from_secs(2));
    hook_call(hook, HookOutcome::retryable, Duration::from_millis(30));
    hook_call(hook, HookOutcome::failed, Duration::from_secs(900));
    let (text, s) = scrape(&store);
    let calls = |outcome| {
        value(
            &s,
            "stratus_hook_calls_total",
            &[("hook", hook), ("outcome", outcome)],
        )
    };
    assert_eq!(calls("ok"), 2.0);
    assert_eq!(calls("retryable"), 1.0);
    assert_eq!(calls("failed"), 1.0);
    let metric = "stratus_hook_call_duration_seconds";
    assert_eq!(histogram_count(&text, &s, metric, ("hook", hook)), 4.0);
    let sum = value(&s, &format!("{metric}_sum"), &[("hook", hook)]);
    assert!((sum - 902.033).abs() < 1e-6, "sum {sum}");
    // 3 ms falls in the first bucket (5 ms); 900 s only in +Inf.
    let first = format!("{metric}_bucket{{le=\"0.005\",hook=\"{hook}\"}} 1");
    assert!(text.contains(&first), "{first} in\n{text}");
}

#[test]
fn scaling_events_and_journal_writes_move() {
    let (_dir, store) = store();
    install();
    let (text, s) = scrape(&store);
    let scaling = |s: &Scrape, kind| value(s, "stratus_scaling_events_total", &[("kind", kind)]);
    let writes = |text: &str, s: &Scrape| {
        let metric = "stratus_journal_write_duration_seconds";
        histogram_count(text, s, metric, ("write", "step_begin"))
    };
    let (up, sets, begun) = (
        scaling(&s, "autoscale_up"),
        scaling(&s, "change_set"),
        writes(&text, &s),
    );
    autoscale_decision(true);
    change_set_applied();
    store.step_begin("d", "k", "digest").unwrap();
    let (text, s) = scrape(&store);
    assert!(scaling(&s, "autoscale_up") > up);
    assert!(scaling(&s, "change_set") > sets);
    assert!(writes(&text, &s) > begun);
}

#[test]
fn a_state_the_model_does_not_know_is_an_error_not_a_guess() {
    let (_dir, store) = store();
    store.put_deployment("d", "/d.toml", "", &"BOGUS").unwrap();
    let e = render(&store).expect_err("an unreadable state");
    assert!(matches!(e, crate::TelemetryError::Store(_)), "{e:?}");
    assert!(
        e.to_string().starts_with("reading the store for metrics"),
        "{e}"
    );
}
