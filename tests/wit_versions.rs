//! The WIT package's version policy through the real binary (docs/writing-a-plugin.md,
//! "Versions"): a plugin built against the frozen `stratus:plugin@0.1.0` runs on this host,
//! which offers 0.1.1, and one built for 0.2.0 is refused before any hook runs, with a
//! message naming both versions.

use crate::common;

use common::cli::{stratus_in, text};
use std::process::Output;

fn plugin_call(cwd: &std::path::Path, package: &str) -> Output {
    let dir = stratus_plugin_artifacts::package_dir(package);
    stratus_in(cwd, &["plugin", "call", dir.to_str().unwrap(), "configure"])
}

#[test]
fn a_plugin_built_against_0_1_0_runs_on_this_host() {
    let dir = tempfile::tempdir().unwrap();
    let out = plugin_call(dir.path(), "wit-legacy");
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("result: ok"), "{t}");
    assert!(t.contains("built for stratus:plugin@0.1.0"), "{t}");
    let written = dir.path().join(".stratus-call/a1/version.txt");
    assert_eq!(std::fs::read_to_string(written).unwrap(), "0.1.0");
}

#[test]
fn a_plugin_built_for_another_major_version_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let out = plugin_call(dir.path(), "wit-future");
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("built for stratus:plugin@0.2.0") && t.contains("offers stratus:plugin@0.1.1"),
        "{t}"
    );
    assert!(
        !dir.path().join(".stratus-call/a1/version.txt").exists(),
        "no hook may run"
    );
}
