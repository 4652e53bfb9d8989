//! `stratus plugin build [DIR]`: reads the package's `[build]` table, builds the component
//! with the language's own tool and puts it where `plugin.component` says (`plugin.wasm`).

use super::{build_rust, componentize};
use anyhow::{Context, bail};
use std::path::{Component, Path};
use std::process::ExitCode;
use stratus_model::plugin::manifest::{Language, Manifest};
use stratus_plugin_runtime::DEFAULT_MAX_COMPONENT_BYTES;

pub fn build_cmd(dir: &Path) -> anyhow::Result<ExitCode> {
    // The tools run in the package directory and are given absolute paths.
    let dir = &std::fs::canonicalize(dir).with_context(|| format!("reading {}", dir.display()))?;
    let manifest = Manifest::load(&dir.join("plugin.toml"))?;
    let language = manifest.build.language;
    println!(
        "building {} ({language}, {} world) in {}",
        manifest.plugin.name,
        manifest.plugin.world,
        dir.display()
    );
    let built = match language {
        Language::Rust => build_rust::build(dir)?,
        Language::Python | Language::Javascript => componentize::build(dir, &manifest)?,
    };
    let size = std::fs::metadata(&built)
        .with_context(|| format!("reading {}", built.display()))?
        .len();
    if size > DEFAULT_MAX_COMPONENT_BYTES {
        bail!(
            "{} is {size} bytes, over the {DEFAULT_MAX_COMPONENT_BYTES} bytes an agent loads; \
             it was not installed",
            built.display()
        );
    }
    let target = install(&built, dir, &manifest.plugin.component)?;
    if language != Language::Rust {
        // componentize's output in .stratus/ is a copy of the component, not a cache.
        let _ = std::fs::remove_file(&built);
    }
    println!(
        "component: {} ({size} bytes, {:.1} MB)",
        target.display(),
        size as f64 / 1e6
    );
    Ok(ExitCode::SUCCESS)
}

/// Copies `built` to `<dir>/<component>` through a temporary file renamed into place, so a
/// link planted at the component's path is replaced, not written through; a link among the
/// component's parent directories inside the package is refused.
fn install(built: &Path, dir: &Path, component: &str) -> anyhow::Result<std::path::PathBuf> {
    let target = dir.join(component);
    let mut parent = dir.to_path_buf();
    let relative_parent = Path::new(component).parent().unwrap_or(Path::new(""));
    for part in relative_parent.components() {
        let Component::Normal(part) = part else {
            bail!("plugin.component `{component}` must be a relative path inside the package");
        };
        parent.push(part);
        match std::fs::symlink_metadata(&parent) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!(
                "{} is not a directory (a link is refused), so {component} cannot be written",
                parent.display()
            ),
            Err(_) => std::fs::create_dir(&parent)
                .with_context(|| format!("creating {}", parent.display()))?,
        }
    }
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let temporary = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    copy_new(built, &temporary)?;
    std::fs::rename(&temporary, &target).with_context(|| {
        let _ = std::fs::remove_file(&temporary);
        format!("moving the component to {}", target.display())
    })?;
    Ok(target)
}

fn copy_new(from: &Path, to: &Path) -> anyhow::Result<()> {
    let mut source =
        std::fs::File::open(from).with_context(|| format!("reading {}", from.display()))?;
    let mut dest = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .with_context(|| format!("creating {}", to.display()))?;
    std::io::copy(&mut source, &mut dest).with_context(|| format!("writing {}", to.display()))?;
    Ok(())
}
