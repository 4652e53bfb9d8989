//! `GET /metrics` on a real control plane: launch the hello example with the CLI, read the
//! Prometheus text at the HTTP address in `control.json` (no token), check its grammar line by
//! line, and that its gauges match the fleet and its counters move with a scale-up.

use crate::common;

use common::{Stratus, hello_deployment, secrets, servers, terminate};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A deployment name no series may show (names are never labels).
const DEP: &str = "promhello";

/// One sample: its name, its labels and its value.
type Sample = (String, BTreeMap<String, String>, f64);

/// The samples of OpenMetrics text, insisting that every line is a `# HELP`, `# TYPE` or
/// `# UNIT` comment, a sample `name{label="value",...} value`, or the closing `# EOF`.
fn parse(text: &str) -> Vec<Sample> {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.last(),
        Some(&"# EOF"),
        "the text ends with # EOF:\n{text}"
    );
    let mut samples = Vec::new();
    for line in &lines[..lines.len() - 1] {
        if let Some(comment) = line.strip_prefix("# ") {
            let word = comment.split(' ').next().unwrap_or_default();
            assert!(["HELP", "TYPE", "UNIT"].contains(&word), "comment {line:?}");
            continue;
        }
        samples.push(sample(line));
    }
    samples
}

fn sample(line: &str) -> Sample {
    let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
    let value: f64 = value
        .parse()
        .unwrap_or_else(|_| panic!("value in {line:?}"));
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}').expect("labels close")),
        None => (series, ""),
    };
    let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    assert!(
        word(name) && name.starts_with("stratus_"),
        "name in {line:?}"
    );
    let mut map = BTreeMap::new();
    for pair in labels.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line:?}"));
        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
        let v = v.unwrap_or_else(|| panic!("quoted label in {line:?}"));
        assert!(
            word(k) && !v.contains(['"', '\\', '\n']),
            "label in {line:?}"
        );
        map.insert(k.to_string(), v.to_string());
    }
    (name.to_string(), map, value)
}

/// The sum of the samples named `name` whose labels include `labels`.
fn total(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k) == Some(&v.to_string()))
        })
        .map(|(_, _, v)| v)
        .sum()
}

/// The HTTP API's address, as the control plane recorded it.
fn http_address(st: &Stratus) -> String {
    let text = std::fs::read_to_string(st.dir().join("control.json")).expect("control.json");
    let info: serde_json::Value = serde_json::from_str(&text).expect("control.json is JSON");
    info["http"]
        .as_str()
        .unwrap_or_else(|| panic!("no http in {info}"))
        .to_string()
}

/// `GET path` without a token: the status line, the headers and the body.
fn get(addr: &str, path: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the HTTP API");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("an HTTP answer");
    let (head, body) = response.split_once("\r\n\r\n").expect("headers end");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (
        status.to_string(),
        headers.to_ascii_lowercase(),
        body.to_string(),
    )
}

/// Scrapes `/metrics`, checking the answer is OpenMetrics text that names no deployment.
fn scrape(st: &Stratus) -> Vec<Sample> {
    let (status, headers, body) = get(&http_address(st), "/metrics");
    assert!(status.contains(" 200 "), "{status}\n{body}");
    assert!(
        headers.contains("content-type: application/openmetrics-text"),
        "{headers}"
    );
    assert!(
        !body.contains(DEP),
        "a deployment name in the metrics:\n{body}"
    );
    for secret in secrets(st) {
        assert!(!body.contains(&secret), "a secret in the metrics");
    }
    parse(&body)
}

#[test]
fn metrics_parse_and_move_with_a_launch_and_a_scale_up() {
    let st = Stratus::new();
    let file = st.write_file("hello.toml", &hello_deployment(DEP, 1));
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = st.deployment(DEP);
    let fleet = ["lb", "app", "db"]
        .map(|t| servers(&d, t).len())
        .iter()
        .sum::<usize>();

    let s = scrape(&st);
    assert_eq!(
        total(&s, "stratus_deployments", &[("state", "RUNNING")]),
        1.0
    );
    assert_eq!(
        total(&s, "stratus_deployments", &[]),
        1.0,
        "one deployment in all"
    );
    let running = total(&s, "stratus_servers", &[("agent_state", "RUNNING")]);
    assert_eq!(running, fleet as f64, "every server's agent RUNNING");
    let calls = |s: &[Sample], hook, outcome| {
        total(
            s,
            "stratus_hook_calls_total",
            &[("hook", hook), ("outcome", outcome)],
        )
    };
    // Each server installed its service; the database granted the app; the proxy started.
    assert!(calls(&s, "install-service", "ok") >= fleet as f64, "{s:?}");
    assert!(calls(&s, "grant-database-access", "ok") >= 1.0);
    assert!(calls(&s, "start-proxy", "ok") >= 1.0);
    let all_calls = total(&s, "stratus_hook_calls_total", &[]);
    let timed = total(&s, "stratus_hook_call_duration_seconds_count", &[]);
    assert_eq!(all_calls, timed, "every hook call has its duration");
    let journal = |s: &[Sample], write| {
        let name = "stratus_journal_write_duration_seconds_count";
        total(s, name, &[("write", write)])
    };
    assert!(journal(&s, "step_begin") > 0.0 && journal(&s, "step_end") > 0.0);
    assert!(journal(&s, "event") > 0.0);
    let change_sets =
        |s: &[Sample]| total(s, "stratus_scaling_events_total", &[("kind", "change_set")]);

    st.ok(&["scale", DEP, "app", "2"]);
    let after = scrape(&st);
    assert_eq!(
        total(&after, "stratus_deployments", &[("state", "RUNNING")]),
        1.0
    );
    let running = total(&after, "stratus_servers", &[("agent_state", "RUNNING")]);
    assert_eq!(running, fleet as f64 + 1.0, "the new server counted");
    assert!(calls(&after, "install-service", "ok") > calls(&s, "install-service", "ok"));
    assert!(
        change_sets(&after) > change_sets(&s),
        "the scale-up's change set"
    );
    assert!(journal(&after, "step_begin") > journal(&s, "step_begin"));

    terminate(&st, DEP);
}

#[test]
fn a_replaced_server_counts_as_a_recovery() {
    let st = Stratus::new();
    let file = st.write_file("hello.toml", &hello_deployment(DEP, 1));
    st.ok(&["launch", file.to_str().unwrap()]);
    let before = scrape(&st);
    let recoveries = |s: &[Sample]| total(s, "stratus_recoveries_total", &[]);
    assert_eq!(recoveries(&before), 0.0, "nothing replaced yet");

    // Every process of the app server at once, as a crashed machine would end them.
    let app = servers(&st.deployment(DEP), "app");
    let old = app[0]["id"].as_str().unwrap().to_string();
    let pid = app[0]["pid"].as_u64().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .status()
        .unwrap();
    assert!(killed.success());
    let d = common::wait_for(&st, DEP, Duration::from_secs(60), |d| {
        d["state"] == "RUNNING" && servers(d, "app").iter().all(|s| s["id"] != old.as_str())
    });
    assert_eq!(d["state"], "RUNNING", "{d}");

    let after = scrape(&st);
    assert_eq!(recoveries(&after), 1.0, "one server replaced");
    let sets = |s: &[Sample]| total(s, "stratus_scaling_events_total", &[("kind", "change_set")]);
    assert!(sets(&after) > sets(&before), "the replacement's change set");
    assert_eq!(
        total(&after, "stratus_deployments", &[("state", "RUNNING")]),
        1.0
    );
    terminate(&st, DEP);
}
