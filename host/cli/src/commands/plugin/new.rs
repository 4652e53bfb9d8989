//! `stratus plugin new`: writes a package skeleton (manifest with `[build]`, every hook of the
//! world, a `cfg/` template, a README) into a new or empty directory.

use super::scaffold::{Lang, NewWorld, Skeleton};
use anyhow::{Context, bail};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub fn new_cmd(
    name: &str,
    lang: Lang,
    world: NewWorld,
    dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    check_new_name(name)?;
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    let files = Skeleton { name, lang, world }.files()?;
    prepare_dir(&dir)?;
    for (relative, text) in files {
        let path = dir.join(&relative);
        write_new(&path, &text)?;
        println!("created {}", path.display());
    }
    println!(
        "next: stratus plugin build {0} && stratus plugin call {0} {1}",
        dir.display(),
        if world == NewWorld::Cm {
            "prepare"
        } else {
            "configure"
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// A manifest name that also works as a crate, file and directory name.
fn check_new_name(name: &str) -> anyhow::Result<()> {
    stratus_model::plugin::manifest::check_name(name).map_err(anyhow::Error::msg)?;
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        bail!(
            "plugin name `{name}` must start with a letter: it also names the package's \
             directory, its template file and (in Rust) its crate"
        );
    }
    Ok(())
}

/// Creates `dir`, or accepts it if it is an empty directory (not a link to one).
fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
        Ok(m) if m.file_type().is_symlink() => bail!(
            "{} is a symbolic link; plugin new writes only into a real, new or empty directory",
            dir.display()
        ),
        Ok(m) if !m.is_dir() => bail!("{} exists and is not a directory", dir.display()),
        Ok(_) => {
            let mut entries =
                std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
            if entries.next().is_some() {
                bail!(
                    "{} exists and is not empty; plugin new writes only into a new or empty \
                     directory, so it never overwrites a file",
                    dir.display()
                );
            }
            Ok(())
        }
    }
}

/// Writes a file that must not exist yet (nothing is followed or overwritten).
fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
