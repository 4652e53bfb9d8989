//! The build script really produced a component per package, exporting its world's hooks.

use wasmparser::{Parser, Payload};

/// The names a component exports at its top level, or a panic if it is a core module.
fn component_exports(bytes: &[u8]) -> Vec<String> {
    let mut exports = Vec::new();
    let mut depth = 0;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.expect("valid wasm") {
            Payload::Version { encoding, .. } if depth == 0 => {
                assert_eq!(encoding, wasmparser::Encoding::Component, "not a component");
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth -= 1,
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    exports.push(export.unwrap().name.name.to_string());
                }
            }
            _ => {}
        }
    }
    exports
}

#[test]
fn every_package_has_a_component_exporting_its_world() {
    let expected = [
        ("hello", vec!["stratus:plugin/service-hooks@0.1.1"]),
        ("hostile", vec!["stratus:plugin/service-hooks@0.1.1"]),
        ("cm-probe", vec!["stratus:plugin/cm-hooks@0.1.1"]),
    ];
    for (name, exports) in expected {
        let dir = stratus_plugin_artifacts::package_dir(name);
        assert!(dir.join("plugin.toml").is_file(), "{name}: no plugin.toml");
        let bytes = std::fs::read(dir.join("plugin.wasm")).expect("plugin.wasm built");
        assert_eq!(component_exports(&bytes), exports, "{name}");
    }
}

#[test]
fn unknown_names_panic_with_the_known_ones() {
    let err = std::panic::catch_unwind(|| stratus_plugin_artifacts::package_dir("nope"))
        .expect_err("unknown plugin must panic");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("unknown plugin `nope`"), "{msg}");
    assert!(msg.contains("hello") && msg.contains("cm-probe"), "{msg}");
}

#[test]
fn repo_root_holds_plugins_and_wit() {
    let root = stratus_plugin_artifacts::repo_root();
    assert!(root.join("plugins/Cargo.toml").is_file());
    assert!(root.join("wit").is_dir());
}
