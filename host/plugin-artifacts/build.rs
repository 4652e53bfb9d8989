//! Builds the guest workspace (`plugins/`) once per cargo build and copies every component into
//! its package directory as `plugin.wasm`, so tests load real packages instead of fixtures.
//! Modelled on wasmtime's `crates/test-programs/artifacts/build.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Guest crate name → package directory under `plugins/`. Add a line per new plugin.
const PACKAGES: &[(&str, &str)] = &[
    ("hello", "hello"),
    ("hello-proxy", "hello-proxy"),
    ("app", "app"),
    ("haproxy", "haproxy"),
    ("hostile", "testing/hostile"),
    ("cm-probe", "testing/cm-probe"),
    ("hostile-cm", "testing/hostile-cm"),
    ("puppet", "puppet"),
    ("ansible", "ansible"),
    ("chef", "chef"),
    ("motd", "motd"),
    ("mariadb", "mariadb"),
    ("threshold-scaler", "threshold-scaler"),
    ("hostile-scaler", "testing/hostile-scaler"),
    ("ec2-driver", "ec2-driver"),
    ("hostile-driver", "testing/hostile-driver"),
    ("wit-legacy", "testing/legacy-0.1.0"),
    ("wit-future", "testing/future-0.2.0"),
];

/// Package directories (space-separated, as in [`PACKAGES`]) to build instead of all of them:
/// `scripts/launch-example.sh` builds only what its example names. Tests need every package,
/// so a build without the variable builds them all again.
const ONLY_ENV: &str = "STRATUS_GUEST_PACKAGES";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let repo = manifest_dir.join("../..").canonicalize().unwrap();
    let plugins = repo.join("plugins");
    let target_dir = repo.join("target/plugins");
    println!("cargo:rerun-if-env-changed={ONLY_ENV}");
    let wanted = wanted_packages();

    watch(&plugins);
    // Dotfiles are skipped above, but this one sets how every plugin is linked.
    println!(
        "cargo:rerun-if-changed={}",
        plugins.join(".cargo/config.toml").display()
    );
    watch(&repo.join("wit"));
    watch(&repo.join("apps"));

    // The two builds are independent cargo runs; side by side, one fills the cores while the
    // other waits on a long crate or a link.
    std::thread::scope(|s| {
        // The greeter ships in the `app` package only.
        let greeter = wanted
            .iter()
            .any(|(_, dir)| *dir == "app")
            .then(|| s.spawn(|| build_greeter(&repo)));
        if !wanted.is_empty() {
            build(&plugins, &target_dir, &wanted);
        }
        if let Some(Err(panic)) = greeter.map(|g| g.join()) {
            std::panic::resume_unwind(panic);
        }
    });

    let release = target_dir.join("wasm32-wasip2/release");
    let mut table = String::from("pub(crate) const PACKAGES: &[(&str, &str)] = &[\n");
    for (krate, dir) in PACKAGES {
        let package = plugins.join(dir);
        if wanted.iter().any(|(k, _)| k == krate) {
            let built = release.join(format!("{}.wasm", krate.replace('-', "_")));
            copy_if_changed(&built, &package.join("plugin.wasm"));
        }
        table.push_str(&format!(
            "    ({krate:?}, {:?}),\n",
            package.display().to_string()
        ));
    }
    table.push_str("];\n");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join("packages.rs");
    std::fs::write(out, table).unwrap();
}

/// Every package, or those [`ONLY_ENV`] names (an unknown name fails the build, naming it).
fn wanted_packages() -> Vec<(&'static str, &'static str)> {
    let Some(only) = std::env::var_os(ONLY_ENV) else {
        return PACKAGES.to_vec();
    };
    let only = only.to_string_lossy().into_owned();
    only.split_whitespace()
        .map(|name| {
            let found = PACKAGES.iter().find(|(_, dir)| *dir == name);
            *found.unwrap_or_else(|| {
                let known: Vec<&str> = PACKAGES.iter().map(|(_, dir)| *dir).collect();
                panic!("{ONLY_ENV} names {name:?}, which is not a package under plugins/; known: {known:?}")
            })
        })
        .collect()
}

fn build(plugins: &Path, target_dir: &Path, wanted: &[(&str, &str)]) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--target=wasm32-wasip2")
        .arg("--manifest-path")
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(plugins);
    if wanted.len() < PACKAGES.len() {
        for (krate, _) in wanted {
            cmd.arg("-p").arg(krate);
        }
    }
    scrub(&mut cmd);
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build plugins/: {e}"));
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stdout));
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        panic!(
            "building the plugins workspace ({}) failed: {}; see the cargo output above. \
             If the target is missing: `rustup target add wasm32-wasip2`",
            plugins.display(),
            output.status
        );
    }
}

/// Settings meant for the host build must not leak into a nested build (flags, wrappers such
/// as clippy-driver, the outer target dir and jobserver).
fn scrub(cmd: &mut Command) {
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_MAKEFLAGS",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
}

/// Builds the example application (`apps/greeter`, a native binary in a workspace of its own)
/// and ships it in the `app` package as `bin/greeter`, which that plugin runs.
fn build_greeter(repo: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = repo.join("apps/greeter/Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(repo.join("target/apps"))
        .current_dir(repo.join("apps/greeter"));
    scrub(&mut cmd);
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build apps/greeter: {e}"));
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        panic!("building {} failed: {}", manifest.display(), output.status);
    }
    let bin = repo.join("plugins/app/bin");
    std::fs::create_dir_all(&bin).unwrap_or_else(|e| panic!("creating {}: {e}", bin.display()));
    copy_if_changed(
        &repo.join("target/apps/release/greeter"),
        &bin.join("greeter"),
    );
}

/// Registers every source file below `dir` (not directories: cargo would then also see the
/// `plugin.wasm` files this script writes and rerun it on every build).
fn watch(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let text = name.to_string_lossy();
        // `app/bin` holds the greeter binary this script copies in.
        let generated = text.starts_with("plugin.wasm") || path.ends_with("plugins/app/bin");
        if name == "target" || generated || text.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            watch(&path);
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

/// Copies only when the bytes differ, so an unchanged plugin keeps its mtime (and caches), and
/// via rename, so a test in another cargo process never reads a half-written component.
fn copy_if_changed(from: &Path, to: &Path) {
    let bytes = std::fs::read(from)
        .unwrap_or_else(|e| panic!("built component {} is missing: {e}", from.display()));
    if std::fs::read(to).ok().as_deref() != Some(&bytes[..]) {
        let tmp = to.with_extension(format!("wasm.{}.tmp", std::process::id()));
        std::fs::write(&tmp, &bytes).unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
        // Keeps the executable bit of a native binary (the greeter).
        let mode = std::fs::metadata(from).map(|m| m.permissions());
        mode.and_then(|m| std::fs::set_permissions(&tmp, m))
            .unwrap_or_else(|e| panic!("copying the mode to {}: {e}", tmp.display()));
        std::fs::rename(&tmp, to).unwrap_or_else(|e| panic!("renaming to {}: {e}", to.display()));
    }
}
