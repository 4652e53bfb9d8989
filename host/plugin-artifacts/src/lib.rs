//! Paths of the guest plugins built from `plugins/` by this crate's build script. Tests depend
//! on this crate so that `cargo test` always runs against freshly built `plugin.wasm` files.

use std::path::PathBuf;

include!(concat!(env!("OUT_DIR"), "/packages.rs"));

/// The repository root (the directory holding `plugins/` and `wit/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .canonicalize()
        .expect("the repository root exists")
}

/// The package directory (`plugin.toml`, `plugin.wasm`, `cfg/`) of the plugin crate `name`,
/// e.g. `hello`, `hostile`, `cm-probe`. Panics on an unknown name, listing the known ones.
pub fn package_dir(name: &str) -> PathBuf {
    match PACKAGES.iter().find(|(n, _)| *n == name) {
        Some((_, dir)) => PathBuf::from(dir),
        None => panic!(
            "unknown plugin `{name}`; known plugins: {}",
            names().join(", ")
        ),
    }
}

/// Every plugin this crate builds.
pub fn names() -> Vec<&'static str> {
    PACKAGES.iter().map(|(n, _)| *n).collect()
}
