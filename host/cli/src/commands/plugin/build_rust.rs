//! Building a Rust package: `cargo build --release --target wasm32-wasip2` of the package's
//! own crate, whether it is a project of its own (a `plugin new` skeleton) or a member of a
//! workspace (the repository's `plugins/`); cargo's JSON messages name the artifact.

use super::tools::{CARGO, RUSTC};
use anyhow::{Context, bail};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TARGET: &str = "wasm32-wasip2";

/// Builds the crate of `<dir>/Cargo.toml` and returns the `.wasm` file cargo wrote.
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    let manifest = std::fs::canonicalize(&manifest).with_context(|| {
        format!(
            "{} has no Cargo.toml; a rust plugin is a cargo package (or set `[build] language` \
             in plugin.toml)",
            dir.display()
        )
    })?;
    let cargo = CARGO.find()?;
    check_target(dir)?;
    println!(
        "cargo build --release --target {TARGET} --manifest-path {}",
        manifest.display()
    );
    let mut child = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", cargo.display()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut artifact = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's messages")?;
        if let Some(wasm) = wasm_artifact(&line, &manifest) {
            artifact = Some(wasm);
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!("cargo build failed ({status}); its messages are above");
    }
    artifact.ok_or_else(|| {
        anyhow::anyhow!(
            "cargo built no .wasm for {}: is its [lib] crate-type [\"cdylib\"]?",
            manifest.display()
        )
    })
}

/// The `.wasm` file of a `compiler-artifact` message for the crate of `manifest`.
fn wasm_artifact(line: &str, manifest: &Path) -> Option<PathBuf> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    if msg["reason"] != "compiler-artifact" {
        return None;
    }
    // Cargo may spell the member's path through the workspace root: compare real paths.
    let crate_manifest = std::fs::canonicalize(msg["manifest_path"].as_str()?).ok()?;
    if crate_manifest != manifest {
        return None;
    }
    msg["filenames"]
        .as_array()?
        .iter()
        .filter_map(|f| f.as_str())
        .find(|f| f.ends_with(".wasm"))
        .map(PathBuf::from)
}

/// Refuses early, with the command that fixes it, when the toolchain `dir` uses lacks the
/// target (cargo's own error names a missing `core` crate, which says little).
fn check_target(dir: &Path) -> anyhow::Result<()> {
    let rustc = RUSTC.find()?;
    let out = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .current_dir(dir)
        .output()
        .with_context(|| format!("running {} --print sysroot", rustc.display()))?;
    if !out.status.success() {
        bail!(
            "{} --print sysroot failed: {}",
            rustc.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !sysroot.join("lib/rustlib").join(TARGET).is_dir() {
        bail!(
            "the Rust toolchain at {} has no {TARGET} target; install it with: rustup target \
             add {TARGET}",
            sysroot.display()
        );
    }
    println!("rust toolchain: {} (has {TARGET})", sysroot.display());
    Ok(())
}
