//! Building a Python or JavaScript package: componentize-py or componentize-js turns the
//! `[build] entry` module into a component of the manifest's world, with the WIT files and
//! the language's SDK written into `<package>/.stratus/` from the binary.

use super::sdk_files::{JS_SDK, PYTHON_SDK, materialize};
use super::tools::{
    COMPONENTIZE_JS, COMPONENTIZE_JS_VERSION, COMPONENTIZE_PY, COMPONENTIZE_PY_VERSION, Tool,
};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use stratus_model::plugin::manifest::{Language, Manifest, python_module};

/// Builds the entry module of `manifest` and returns the component in `<dir>/.stratus/`.
pub fn build(dir: &Path, manifest: &Manifest) -> anyhow::Result<PathBuf> {
    let language = manifest.build.language;
    let entry = manifest
        .build
        .entry()
        .context("a python or javascript package has an entry")?;
    let source = dir.join(entry);
    no_link_on_the_way(dir, entry)?;
    if !std::fs::symlink_metadata(&source).is_ok_and(|m| m.is_file()) {
        bail!(
            "{} is not a file; plugin.toml's [build] entry names the module to build",
            source.display()
        );
    }
    let (tool, version, sdk) = match language {
        Language::Python => (COMPONENTIZE_PY, COMPONENTIZE_PY_VERSION, &PYTHON_SDK),
        _ => (COMPONENTIZE_JS, COMPONENTIZE_JS_VERSION, &JS_SDK),
    };
    let program = tool.find()?;
    check_version(tool, &program, version);
    let work = materialize(dir, sdk)?;
    println!(
        "wrote the WIT files and {} into {}",
        sdk.file.0,
        work.display()
    );
    let output = work.join("plugin.wasm");
    let world = manifest.plugin.world.to_string();
    let mut cmd = Command::new(&program);
    let world = match language {
        Language::Python => python_args(&mut cmd, &world, entry, &source, &work)?,
        _ => js_args(&mut cmd, &world, &source, &work),
    };
    cmd.arg("-o").arg(&output).current_dir(dir);
    println!("{} (world {world}) over {}", tool.program, source.display());
    // componentize-py leaves the module's bytecode beside it whatever PYTHONDONTWRITEBYTECODE
    // says, and all of a package but its dotfiles is uploaded: remove what the build made.
    let pycache = source.parent().unwrap_or(dir).join("__pycache__");
    let had_pycache = std::fs::symlink_metadata(&pycache).is_ok();
    let result = run(&mut cmd, tool);
    if !had_pycache && std::fs::symlink_metadata(&pycache).is_ok_and(|m| m.is_dir()) {
        let _ = std::fs::remove_dir_all(&pycache);
    }
    result?;
    Ok(output)
}

/// Refuses an entry reached through a symbolic link (the entry itself or a directory on the
/// way): the tool would read, and write its caches, outside the package.
fn no_link_on_the_way(dir: &Path, entry: &str) -> anyhow::Result<()> {
    let mut path = dir.to_path_buf();
    for part in Path::new(entry).components() {
        path.push(part);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            bail!(
                "{} is a symbolic link; plugin.toml's [build] entry must lie inside the package \
                 without links",
                path.display()
            );
        }
    }
    Ok(())
}

/// componentize-py's arguments: the entry is imported as a module from its own directory,
/// the SDK from `.stratus/`. Returns the world built.
fn python_args(
    cmd: &mut Command,
    world: &str,
    entry: &str,
    source: &Path,
    work: &Path,
) -> anyhow::Result<String> {
    let module = python_module(Path::new(entry)).map_err(anyhow::Error::msg)?;
    cmd.arg("-d").arg(work.join("wit"));
    cmd.args(["-w", world, "componentize", module]);
    cmd.arg("-p").arg(source.parent().unwrap_or(work));
    cmd.arg("-p").arg(work);
    Ok(world.to_string())
}

/// componentize-js's arguments. The `*-js` worlds add WASI's filesystem (StarlingMonkey has
/// no file API); wasi:http, which the host does not link, is left out. Returns the world built.
fn js_args(cmd: &mut Command, world: &str, source: &Path, work: &Path) -> String {
    let world = format!("{world}-js");
    cmd.arg(source).arg("--wit").arg(work.join("wit"));
    cmd.args(["--world-name", &world, "-d", "http", "fetch-event"]);
    world
}

/// Runs the tool with its output kept, shown whole when it fails.
fn run(cmd: &mut Command, tool: Tool) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {}", tool.program))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}):\n{}{}",
            tool.program,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Warns when the tool is not the release builds are tested with: it may still work.
fn check_version(tool: Tool, program: &Path, expected: &str) {
    let found = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if found.rsplit(' ').next() == Some(expected) {
        println!("{}: {found}", tool.program);
    } else {
        println!(
            "warning: {} says `{found}`, builds are tested with {expected} (install it with: {})",
            tool.program, tool.install
        );
    }
}

#[cfg(test)]
mod tests {
    use super::no_link_on_the_way;

    #[test]
    fn an_entry_through_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("app.py"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("app.py"), dir.path().join("app.py"))
            .unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        for entry in ["sub/app.py", "app.py"] {
            let err = no_link_on_the_way(dir.path(), entry)
                .unwrap_err()
                .to_string();
            assert!(err.contains("is a symbolic link"), "{entry}: {err}");
        }
        assert!(no_link_on_the_way(dir.path(), "real/app.py").is_ok());
    }
}
