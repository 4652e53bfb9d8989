//! Plugins in Python and JavaScript through the real binary. `examples/polyglot` launches a
//! Python tier and a JavaScript tier, each behind its own HAProxy, both reading MariaDB: every
//! answer through a load balancer comes from that tier's servers and carries the data source's
//! rows, both servers of each tier answer, their health checks report OK, no secret reaches a
//! log, and terminate leaves no greeter behind. The SDKs' test plugins show that what a hook
//! raises or throws (a retryable HookError, any other exception, a template naming an unknown
//! variable) reaches the operator as a hook error with its message.
//!
//! Needs componentize-py 0.25.1 and componentize-js 0.23.0 on PATH (scripts/install-deps.sh)
//! for `stratus plugin build`.
//! The components are 13-19 MB and compile slowly in a debug build, so each test compiles
//! each of its components once.

use crate::common;

use common::cli::text;
use common::{Stratus, assert_no_secret_leaked, servers, wait_for, wait_gone};
use serde_json::Value;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The data source's rows (examples/polyglot/datasource.sql) every answer must carry.
const ROWS: [&str; 2] = [
    "Greetings from MariaDB",
    "Rendered by Python and JavaScript alike",
];

fn repo() -> PathBuf {
    stratus_plugin_artifacts::repo_root()
}

/// Builds `package` with `stratus plugin build` once per test binary, however many tests ask;
/// a test waits only for the packages it uses, so two tests build theirs side by side.
fn built(package: &str) {
    static BUILT: Mutex<BTreeMap<String, Arc<OnceLock<()>>>> = Mutex::new(BTreeMap::new());
    let once = BUILT
        .lock()
        .unwrap()
        .entry(package.to_string())
        .or_default()
        .clone();
    once.get_or_init(|| {
        let out = Command::new(env!("CARGO_BIN_EXE_stratus"))
            .args(["plugin", "build"])
            .arg(repo().join(package))
            .output()
            .expect("run stratus plugin build");
        assert!(out.status.success(), "building {package}: {}", text(&out));
    });
}

/// Builds the example's two app tiers, each shipping the greeter this crate builds into
/// plugins/app/bin/.
fn built_example() {
    let greeter = stratus_plugin_artifacts::package_dir("app").join("bin/greeter");
    for tier in ["web", "api"] {
        let bin = repo().join("examples/polyglot").join(tier).join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(&greeter, bin.join("greeter")).expect("copy the greeter");
        built(&format!("examples/polyglot/{tier}"));
    }
}

/// The body of `GET /` on `endpoint`, after checking the status line.
fn get(endpoint: &str) -> Value {
    let response = common::http::get_root(endpoint);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
}

/// Names of the servers of `tier`.
fn names(d: &Value, tier: &str) -> BTreeSet<String> {
    servers(d, tier)
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// Pids of the greeters running under the state directory (their config path is inside it).
fn greeters(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&needle) && cmd.contains("greeter.toml") && common::alive(pid) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn polyglot_example_serves_rows_from_mariadb_through_each_tiers_load_balancer() {
    let _busy = common::cores::compiling();
    built_example();
    let st = Stratus::new();
    let file = repo().join("examples/polyglot/deployment.toml");
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = st.deployment("polyglot");
    assert_eq!(d["state"], "RUNNING", "{d}");

    for (lb, tier, port) in [("web-lb", "web", 8000), ("api-lb", "api", 8001)] {
        let address = servers(&d, lb)[0]["address"].as_str().unwrap().to_string();
        let endpoint = format!("{address}:{port}");
        let expected = names(&d, tier);
        assert_eq!(expected.len(), 2, "{d}");
        let mut seen = BTreeSet::new();
        for _ in 0..6 {
            let body = get(&endpoint);
            let server = body["server"].as_str().unwrap_or_default().to_string();
            assert!(
                expected.contains(&server),
                "{lb} answered from {server}: {body}"
            );
            let rows: Vec<&str> = body["greetings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g["message"].as_str().unwrap())
                .collect();
            assert_eq!(rows, ROWS, "{body}");
            seen.insert(server);
        }
        assert_eq!(
            seen, expected,
            "requests through {lb} reach both {tier} servers"
        );
    }

    // The Python and the JavaScript health-check hooks report on their greeters.
    let healthy = |d: &Value| {
        ["web", "api"].iter().all(|tier| {
            servers(d, tier)
                .iter()
                .all(|s| s["services"][0]["health"]["status"] == "OK")
        })
    };
    let d = wait_for(&st, "polyglot", Duration::from_secs(40), healthy);
    let health = servers(&d, "api")[0]["services"][0]["health"]["message"].clone();
    assert!(
        health.as_str().unwrap().contains("accepts on port 8081"),
        "{health}"
    );

    // The rendered greeter.toml holds the database password; only the service directories
    // (the plugins' own files) may.
    assert_no_secret_leaked(&st, |p| !p.to_string_lossy().contains("/mnt/services/"));

    let running = greeters(st.dir());
    assert_eq!(running.len(), 4, "two greeters per app tier: {running:?}");
    common::terminate(&st, "polyglot");
    for pid in running {
        assert!(
            wait_gone(pid, Duration::from_secs(15)),
            "greeter {pid} still running after terminate"
        );
    }
}

/// A fresh service directory `<work>/a-<how>` holding the package's templates.
fn service_dir(work: &Path, package: &Path, how: &str) -> PathBuf {
    let dir = work.join(format!("a-{how}"));
    std::fs::create_dir_all(dir.join("cfg")).unwrap();
    for name in ["ok.conf", "bad.conf"] {
        std::fs::copy(package.join("cfg").join(name), dir.join("cfg").join(name)).unwrap();
    }
    dir
}

/// Runs `configure` of `package` by `stratus plugin call` on `dir` with the setting `fail` =
/// `how`.
fn configure(st: &Stratus, dir: &Path, package: &Path, how: &str) -> (bool, String) {
    let ctx = serde_json::json!({
        "deployment": "t", "tier": "web",
        "server": { "id": "web-1", "name": "t-web-1", "address": "127.0.0.1" },
        "service_id": "1", "service_name": "faulty",
        "service_dir": dir.to_str().unwrap(),
        "settings": [["fail", how]],
    });
    let ctx_file = dir.with_extension("json");
    std::fs::write(&ctx_file, ctx.to_string()).unwrap();
    let out = st.run(&[
        "plugin",
        "call",
        package.to_str().unwrap(),
        "configure",
        "--context",
        ctx_file.to_str().unwrap(),
    ]);
    (out.status.success(), text(&out))
}

/// Each failure of `cases` (setting, message) surfaces as the hook's error. Without one the
/// hook renders `ok.conf` over a planted link (replacing the link, not writing through it or
/// through one at its temporary name) and reads `enstratus.cfg`, which is gone afterwards.
fn hook_errors_surface(package: &str, cases: &[(&str, &str)]) {
    built(package);
    let st = Stratus::new();
    let work = tempfile::tempdir().unwrap();
    let package = repo().join(package);

    let dir = service_dir(work.path(), &package, "none");
    for (link, victim) in [
        ("ok.conf", "victim"),
        (".ok.conf.stratus-tmp", "victim-tmp"),
    ] {
        std::fs::write(dir.join(victim), "untouched").unwrap();
        std::os::unix::fs::symlink(dir.join(victim), dir.join(link)).unwrap();
    }
    let (ok, out) = configure(&st, &dir, &package, "none");
    assert!(ok, "{out}");
    assert!(
        out.contains("enstratus.cfg began with [enstratus]"),
        "{out}"
    );
    assert!(!dir.join("enstratus.cfg").exists(), "{out}");
    let rendered = dir.join("ok.conf");
    assert!(std::fs::symlink_metadata(&rendered).unwrap().is_file());
    let rendered = common::read(&rendered);
    assert!(
        rendered.contains("server = t-web-1\ngreeting = hi\n"),
        "{rendered}"
    );
    for victim in ["victim", "victim-tmp"] {
        assert_eq!(common::read(&dir.join(victim)), "untouched", "{victim}");
    }

    let escape = (
        "escape",
        "hook failed: `../outside.conf` is not a path relative to the service directory",
    );
    for (how, message) in cases.iter().chain([&escape]) {
        let dir = service_dir(work.path(), &package, how);
        let (ok, out) = configure(&st, &dir, &package, how);
        assert!(!ok, "fail = {how} fails the call: {out}");
        assert!(
            out.contains(message),
            "fail = {how}: expected `{message}` in:\n{out}"
        );
    }
}

#[test]
fn python_hook_errors_surface_with_their_messages() {
    let _busy = common::cores::compiling();
    hook_errors_surface(
        "plugins/sdk-python/tests/faulty",
        &[
            (
                "retryable",
                "hook failed (retryable): the database is not up yet",
            ),
            (
                "value-error",
                "hook failed: ValueError: invalid literal for int() with base 10: \
                 'not a number' (at app.py:",
            ),
            (
                "unknown-variable",
                "hook failed: rendering cfg/bad.conf: line 3: unknown template variable \
                 `port.http.privat`",
            ),
            ("exit", "hook failed: SystemExit: 3 (at app.py:"),
        ],
    );
}

#[test]
fn javascript_hook_errors_surface_with_their_messages() {
    let _busy = common::cores::compiling();
    hook_errors_surface(
        "plugins/sdk-js/tests/faulty",
        &[
            (
                "retryable",
                "hook failed (retryable): the database is not up yet",
            ),
            (
                "type-error",
                "hook failed: TypeError: can't access property \"greeting\" of null (at plugin.js:",
            ),
            (
                "unknown-variable",
                "hook failed: rendering cfg/bad.conf: line 3: unknown template variable \
                 `port.http.privat`",
            ),
            ("plain-object", "hook failed (retryable): a plain object"),
        ],
    );
}

/// The Python SDK's own logic (wrapping, context helpers, path checks, writing and erasing
/// files past planted links) under a native CPython 3.11+, over generated bindings.
#[test]
fn python_sdk_logic_under_native_cpython() {
    let bindings = tempfile::tempdir().unwrap();
    let out = Command::new("componentize-py")
        .arg("-d")
        .arg(repo().join("wit"))
        .args(["-w", "service", "bindings"])
        .arg(bindings.path())
        .output()
        .expect("run componentize-py (scripts/install-deps.sh)");
    assert!(out.status.success(), "{}", text(&out));
    let sdk = repo().join("plugins/sdk-python");
    let path = std::env::join_paths([bindings.path(), sdk.as_path()]).unwrap();
    let out = Command::new("python3")
        .args(["-m", "unittest", "-v", "test_sdk"])
        .current_dir(sdk.join("tests"))
        .env("PYTHONPATH", path)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3");
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("Ran 9 tests") && t.contains("OK"), "{t}");
}
