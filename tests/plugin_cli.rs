//! The plugin author's inner loop through the real binary: `stratus plugin call` runs a hook
//! in the agent's sandbox and shows the files it wrote; a second call uses the compiled-code
//! cache; a denied capability fails the call with its name; `stratus plugin inspect` shows the
//! world, exports and declared capabilities.

use crate::common;

use common::cli::{stratus_in as stratus, text};

#[test]
fn plugin_call_runs_configure_and_shows_the_file_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let out = stratus(
        dir.path(),
        &["plugin", "call", hello.to_str().unwrap(), "configure"],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("result: ok"), "{t}");
    assert!(t.contains("compiled code: Compiled"), "{t}");
    let written = dir.path().join(".stratus-call/a1/hello.conf");
    assert!(
        t.contains(&format!("created  {}", written.display())),
        "{t}"
    );
    let conf = std::fs::read_to_string(&written).unwrap();
    assert!(conf.starts_with("hello from "), "{conf}");

    let again = stratus(
        dir.path(),
        &["plugin", "call", hello.to_str().unwrap(), "configure"],
    );
    let t = text(&again);
    assert!(again.status.success(), "{t}");
    assert!(
        t.contains("compiled code: Hit"),
        "the second call loads the cached code: {t}"
    );
    assert!(
        t.contains(&format!("modified {}", written.display())) || t.contains("hooks.log"),
        "{t}"
    );
}

#[test]
fn plugin_call_names_a_denied_capability_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let svc = dir.path().join("svc");
    std::fs::create_dir_all(&svc).unwrap();
    let ctx = serde_json::json!({
        "deployment": "d", "tier": "t",
        "server": {"id": "t-1", "name": "d-t-1", "address": "127.0.0.1"},
        "service_id": "1", "service_name": "x", "service_dir": svc,
        "settings": [["attack", "run-disallowed"]]
    });
    std::fs::write(dir.path().join("ctx.json"), ctx.to_string()).unwrap();
    let hostile = stratus_plugin_artifacts::package_dir("hostile");
    let out = stratus(
        dir.path(),
        &[
            "plugin",
            "call",
            hostile.to_str().unwrap(),
            "configure",
            "--context",
            "ctx.json",
        ],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("capability denied: program /bin/sh is not in the plugin's allowed programs"),
        "{t}"
    );
}

#[test]
fn plugin_inspect_shows_world_exports_and_capabilities() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = stratus_plugin_artifacts::package_dir("hello-proxy");
    let out = stratus(dir.path(), &["plugin", "inspect", proxy.to_str().unwrap()]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    for needle in [
        "world:     proxy",
        "stratus:plugin/proxy-hooks@0.1.1",
        "start-proxy(ctx, nodes)",
        "stratus:plugin/types@0.1.1",
        "dirs:         service (read-write)",
        "network:      none",
    ] {
        assert!(t.contains(needle), "{needle} missing: {t}");
    }
    let help = stratus(dir.path(), &["plugin", "call", "--help"]);
    assert!(
        text(&help).contains("stratus plugin call plugins/hello configure"),
        "--help has an example"
    );
}
