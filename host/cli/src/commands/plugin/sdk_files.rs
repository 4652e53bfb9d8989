//! The WIT contract and the Python and JavaScript SDKs, embedded in the binary so that
//! `stratus plugin build` can hand them to componentize-py/-js from any directory: they are
//! written into `<package>/.stratus/`, which every build makes afresh.

use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Every file of `wit/` (a unit test checks the list against the directory).
pub const WIT_FILES: &[(&str, &str)] = &[
    ("cm.wit", include_str!("../../../../../wit/cm.wit")),
    ("host.wit", include_str!("../../../../../wit/host.wit")),
    ("proxy.wit", include_str!("../../../../../wit/proxy.wit")),
    ("scaler.wit", include_str!("../../../../../wit/scaler.wit")),
    (
        "service.wit",
        include_str!("../../../../../wit/service.wit"),
    ),
    ("types.wit", include_str!("../../../../../wit/types.wit")),
];

/// The Python SDK module, importable as `stratus_plugin`.
pub const PYTHON_SDK: (&str, &str) = ("stratus_plugin.py", "");
/// The JavaScript SDK module, imported as `./.stratus/stratus_plugin.js`.
pub const JS_SDK: (&str, &str) = ("stratus_plugin.js", "");

/// The directory under a package that a build owns.
pub const BUILD_DIR: &str = ".stratus";

/// Makes `<package>/.stratus/` afresh with `wit/` and `sdk`, and returns its path. Whatever
/// was there is removed first without following links, so a planted link cannot redirect a
/// write outside the package.
pub fn materialize(package: &Path, sdk: (&str, &str)) -> anyhow::Result<PathBuf> {
    let dir = package.join(BUILD_DIR);
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&dir),
        Ok(_) => std::fs::remove_file(&dir),
        Err(_) => Ok(()),
    }
    .with_context(|| format!("removing the previous {}", dir.display()))?;
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::create_dir(dir.join("wit"))
        .with_context(|| format!("creating {}/wit", dir.display()))?;
    for (name, text) in WIT_FILES {
        write_new(&dir.join("wit").join(name), text)?;
    }
    write_new(&dir.join(sdk.0), sdk.1)?;
    Ok(dir)
}

fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wit_file_of_the_repository_is_embedded() {
        let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit");
        let mut names: Vec<String> = std::fs::read_dir(&wit)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".wit"))
            .collect();
        names.sort();
        let embedded: Vec<&str> = WIT_FILES.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, embedded);
    }

    #[test]
    fn materialize_replaces_a_planted_link_instead_of_writing_through_it() {
        let pkg = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), pkg.path().join(BUILD_DIR)).unwrap();
        let dir = materialize(pkg.path(), ("sdk.py", "x = 1\n")).unwrap();
        assert!(std::fs::symlink_metadata(&dir).unwrap().is_dir());
        assert_eq!(
            std::fs::read_to_string(dir.join("sdk.py")).unwrap(),
            "x = 1\n"
        );
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);

        // A link planted inside the directory is removed with it, not followed.
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::fs::remove_file(dir.join("wit/host.wit")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("wit/host.wit")).unwrap();
        materialize(pkg.path(), ("sdk.py", "")).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    }
}
