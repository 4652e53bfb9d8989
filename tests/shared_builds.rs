//! `scripts/launch-example.sh` builds the binary and the plugin artifacts; the test command
//! then builds the tests in the same target directory. A crate the two builds compile with
//! different features is compiled twice, and so is everything that depends on it: one `syn`
//! feature a test-only dependency turned on meant every proc macro, wasmtime and the whole host
//! again. `host/feature-union/Cargo.toml` asks for the test build's features in the example's
//! build; this fails, naming the crate, when a change of dependencies needs a line there. It
//! compares what `cargo tree` resolves, not the builds themselves: the measured proof (no shared
//! crate compiled again) is in BENCHMARKS.md, "The test command after launch-example.sh".

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Every package `cargo tree` lists for `selection`, with each set of features it is compiled
/// with. With an explicit target, a crate built for the build host (under a proc macro or a
/// build script) is a node of its own beside the same crate built for the target, each listed
/// with its own features, rather than one node under whichever was reached first.
fn compiled(selection: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let out = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "--locked", "--offline", "--prefix", "none"])
        .args(["--target", "host-tuple"])
        .args(["--format", "{p} [{f}]"])
        .args(selection)
        .output()
        .expect("cargo runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cargo tree {selection:?}: {stderr}");
    let mut packages: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line = line.trim_end_matches(" (*)");
        let Some((package, features)) = line.rsplit_once(" [") else {
            continue;
        };
        let features = features.trim_end_matches(']').to_string();
        packages
            .entry(package.to_string())
            .or_default()
            .insert(features);
    }
    packages
}

/// The packages `scripts/launch-example.sh` builds: the `-p` arguments of its `cargo build`.
fn example_packages() -> Vec<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/launch-example.sh");
    let text = std::fs::read_to_string(script).expect("scripts/launch-example.sh");
    // One logical line: continuations joined, the command with what is set before it.
    let text = text.replace("\\\n", " ");
    let line = text
        .lines()
        .find(|l| l.contains("cargo build"))
        .expect("launch-example.sh runs cargo build");
    let (before, command) = line.split_once("cargo build").unwrap();
    assert!(
        !before.contains("CARGO") && !before.contains("RUSTFLAGS"),
        "{line:?}: this test does not pass cargo's settings from the environment on"
    );
    let line = format!("cargo build{command}");
    let words: Vec<&str> = line.split_whitespace().collect();
    // Any other flag (features, a profile, a target) would make this test compare the wrong
    // build: it must learn to pass it on first.
    let unknown: Vec<&&str> = (words.iter().enumerate())
        .filter(|(i, w)| w.starts_with('-') && !["--quiet", "-p"].contains(w) && *i > 1)
        .map(|(_, w)| w)
        .collect();
    assert!(unknown.is_empty(), "{line:?}: this test passes only -p on");
    let packages: Vec<String> = words
        .windows(2)
        .filter(|w| w[0] == "-p")
        .map(|w| w[1].to_string())
        .collect();
    assert!(!packages.is_empty(), "no -p in {line:?}");
    packages
}

#[test]
fn the_example_build_compiles_no_crate_the_tests_compile_otherwise() {
    // What scripts/launch-example.sh builds, and what `cargo test --workspace` builds.
    let mut selection: Vec<String> = example_packages()
        .into_iter()
        .flat_map(|p| ["-p".to_string(), p])
        .collect();
    selection.extend(["-e".to_string(), "normal,build".to_string()]);
    let example = compiled(&selection.iter().map(String::as_str).collect::<Vec<_>>());
    let tests = compiled(&["--workspace", "-e", "normal,build,dev"]);
    assert!(
        example.len() > 100 && example.keys().any(|p| p.starts_with("wasmtime v")),
        "cargo tree listed too little to compare: {example:?}"
    );
    // Equal, not merely contained: a crate the tests compile in one more variant (one side
    // with a feature more) is compiled again there, with everything above it on that side.
    let mut apart = Vec::new();
    for (package, sets) in &example {
        let theirs = tests.get(package).cloned().unwrap_or_default();
        if *sets != theirs {
            apart.push(format!(
                "{package}: the example's build with {sets:?}, the tests with {theirs:?}"
            ));
        }
    }
    assert!(
        apart.is_empty(),
        "compiled twice; add the tests' features to host/feature-union/Cargo.toml \
         (proc macros' dependencies under [build-dependencies]):\n{}",
        apart.join("\n")
    );
}
