//! `stratus apply` through the real binary on hello: a changed app setting re-runs
//! `configure`, `stop` and `start` on exactly the app servers and nothing else; changed
//! bounds rescale; `--dry-run` shows and changes nothing; a changed package is refused
//! naming it, and nothing happens.

use crate::common;

use common::{Stratus, hello_deployment, read, server_root, servers, terminate};
use serde_json::Value;
use std::collections::BTreeMap;

/// Every server's hooks.log, by server id.
fn hook_logs(st: &Stratus) -> BTreeMap<String, String> {
    let d = st.deployment("hello");
    let mut out = BTreeMap::new();
    for tier in ["db", "app", "lb"] {
        for s in servers(&d, tier) {
            out.insert(s["id"].as_str().unwrap().to_string(), hooks(st, &s));
        }
    }
    out
}

fn hooks(st: &Stratus, server: &Value) -> String {
    let id = server["services"][0]["id"].as_str().unwrap();
    read(
        &server_root(st, "hello", server)
            .join("mnt/services")
            .join(id)
            .join("hooks.log"),
    )
}

fn refused(st: &Stratus, file: &str) -> String {
    let out = st.run(&["apply", file]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn apply_reruns_exactly_what_changed() {
    let st = Stratus::new();
    let text = hello_deployment("hello", 2);
    let file = st.write_file("hello.toml", &text);
    let file = file.to_str().unwrap();
    st.ok(&["launch", file]);
    let before = hook_logs(&st);

    // Dry run: the change is shown, nothing runs.
    let changed = text.replace("greeting = \"application\"", "greeting = \"bonjour\"");
    std::fs::write(file, &changed).unwrap();
    let out = st.ok(&["apply", file, "--dry-run"]);
    assert!(out.contains("~ service app: settings"), "{out}");
    assert_eq!(hook_logs(&st), before);
    assert_eq!(st.deployment("hello")["state"], "RUNNING");

    // The setting: configure, stop, start again on the app servers only.
    let out = st.ok(&["apply", file]);
    assert!(out.contains("~ service app: settings"), "{out}");
    let after = hook_logs(&st);
    for (id, log) in &after {
        let added = log.strip_prefix(before[id].as_str()).unwrap();
        if id.starts_with("app-") {
            assert_eq!(added, "configure\nstop\nstart\n", "{id}: {log}");
        } else {
            assert_eq!(added, "", "{id} ran hooks: {log}");
        }
    }
    let d = st.deployment("hello");
    assert_eq!(d["state"], "RUNNING");
    let app = servers(&d, "app");
    let id = app[0]["services"][0]["id"].as_str().unwrap();
    let conf = read(
        &server_root(&st, "hello", &app[0])
            .join("mnt/services")
            .join(id)
            .join("hello.conf"),
    );
    assert!(conf.contains("greeting=bonjour"), "{conf}");
    // The same file again changes nothing.
    let out = st.ok(&["apply", file]);
    assert!(out.contains("the file changes nothing"), "{out}");

    // New bounds: the tier follows the new min.
    let wider = changed.replace("min = 2\nmax = 4", "min = 3\nmax = 6");
    std::fs::write(file, &wider).unwrap();
    let out = st.ok(&["apply", file]);
    assert!(out.contains("~ tier app: bounds 2..4 -> 3..6"), "{out}");
    let d = st.deployment("hello");
    assert_eq!(servers(&d, "app").len(), 3, "{d}");

    // A changed package is refused, naming the service, and nothing happens.
    let pkg = common::package_copy(&st, "hello-copy", "hello", |m| m + "\n# a new version\n");
    let newer = wider.replacen(
        &format!(
            "package = \"{}\"\nports = {{ http = 8080 }}",
            stratus_plugin_artifacts::package_dir("hello").display()
        ),
        &format!("package = \"{}\"\nports = {{ http = 8080 }}", pkg.display()),
        1,
    );
    assert_ne!(newer, wider, "the app's package line was found");
    std::fs::write(file, &newer).unwrap();
    let before = hook_logs(&st);
    let err = refused(&st, file);
    assert!(err.contains("the package of service app changed"), "{err}");
    assert!(err.contains("nothing was applied"), "{err}");
    assert_eq!(hook_logs(&st), before);
    terminate(&st, "hello");
}

#[test]
fn apply_adds_and_removes_tiers_and_services() {
    let st = Stratus::new();
    let text = hello_deployment("hello", 1);
    let file = st.write_file("hello.toml", &text);
    let file = file.to_str().unwrap();
    st.ok(&["launch", file]);
    let ids_before: Vec<String> = ["db", "app", "lb"]
        .iter()
        .map(|t| servers(&st.deployment("hello"), t)[0]["services"][0]["id"].to_string())
        .collect();

    // A new tier with a new service that sorts before the others: it goes through the whole
    // pipeline, and no running service moves to another directory.
    let hello_pkg = stratus_plugin_artifacts::package_dir("hello");
    let with_cache = format!(
        "{text}\n[tiers.cache]\nmin = 2\nmax = 2\nservices = [\"aaa-cache\"]\n\n\
         [services.aaa-cache]\npackage = \"{}\"\nports = {{ http = 9090 }}\n",
        hello_pkg.display()
    );
    std::fs::write(file, &with_cache).unwrap();
    let out = st.ok(&["apply", file]);
    assert!(out.contains("+ tier cache"), "{out}");
    assert!(out.contains("+ service aaa-cache"), "{out}");
    let d = st.deployment("hello");
    let cache = servers(&d, "cache");
    assert_eq!(cache.len(), 2, "{d}");
    for s in &cache {
        assert_eq!(s["services"][0]["state"], "RUNNING", "{s}");
        assert_eq!(
            hooks(&st, s).lines().collect::<Vec<_>>(),
            ["install-service", "configure", "stop", "start"]
        );
    }
    let ids_after: Vec<String> = ["db", "app", "lb"]
        .iter()
        .map(|t| servers(&d, t)[0]["services"][0]["id"].to_string())
        .collect();
    assert_eq!(ids_after, ids_before, "a running service moved");
    let cache_id = cache[0]["services"][0]["id"].to_string();
    assert!(!ids_before.contains(&cache_id), "{cache_id} is taken: {d}");

    // Removed again: its servers end and the tier is gone from status.
    let pids: Vec<u32> = cache
        .iter()
        .map(|s| s["pid"].as_u64().unwrap() as u32)
        .collect();
    std::fs::write(file, &text).unwrap();
    let out = st.ok(&["apply", file]);
    assert!(out.contains("- tier cache"), "{out}");
    assert!(out.contains("- service aaa-cache"), "{out}");
    for p in pids {
        assert!(
            common::wait_gone(p, std::time::Duration::from_secs(10)),
            "agent {p} of a removed tier is left"
        );
    }
    let d = st.deployment("hello");
    assert_eq!(d["state"], "RUNNING", "{d}");
    let tiers: Vec<&str> = d["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(tiers, ["app", "db", "lb"], "{d}");
    terminate(&st, "hello");
}
