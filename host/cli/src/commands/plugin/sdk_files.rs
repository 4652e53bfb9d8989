//! The WIT contract and the Python and JavaScript SDKs, embedded in the binary so that
//! `stratus plugin build` can hand them to componentize-py/-js from any directory: they are
//! written into `<package>/.stratus/`, which every build makes afresh.

use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Every file of `wit/` (a unit test checks the list against the directory).
pub const WIT_FILES: &[(&str, &str)] = &[
    (
        "cloud-driver.wit",
        include_str!("../../../../../wit/cloud-driver.wit"),
    ),
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

/// What a language's build adds to the WIT files: its SDK module and WIT of its own.
pub struct Sdk {
    pub file: (&'static str, &'static str),
    /// Written into `wit/` beside [`WIT_FILES`], paths relative to it.
    pub wit: &'static [(&'static str, &'static str)],
}

/// The Python SDK module, importable as `stratus_plugin`.
pub const PYTHON_SDK: Sdk = Sdk {
    file: (
        "stratus_plugin.py",
        include_str!("../../../../../plugins/sdk-python/stratus_plugin.py"),
    ),
    wit: &[],
};

/// The JavaScript SDK module, imported as `./.stratus/stratus_plugin.js`, and the `*-js`
/// worlds that add WASI's filesystem (StarlingMonkey has no file API of its own).
pub const JS_SDK: Sdk = Sdk {
    file: (
        "stratus_plugin.js",
        include_str!("../../../../../plugins/sdk-js/stratus_plugin.js"),
    ),
    wit: &[
        (
            "js.wit",
            include_str!("../../../../../plugins/sdk-js/wit/js.wit"),
        ),
        (
            "deps/clocks.wit",
            include_str!("../../../../../plugins/sdk-js/wit/deps/clocks.wit"),
        ),
        (
            "deps/filesystem.wit",
            include_str!("../../../../../plugins/sdk-js/wit/deps/filesystem.wit"),
        ),
        (
            "deps/io.wit",
            include_str!("../../../../../plugins/sdk-js/wit/deps/io.wit"),
        ),
    ],
};

/// The directory under a package that a build owns.
pub const BUILD_DIR: &str = ".stratus";

/// Makes `<package>/.stratus/` afresh with `wit/` and the SDK, and returns its path. Whatever
/// was there is removed first without following links, so a planted link cannot redirect a
/// write outside the package.
pub fn materialize(package: &Path, sdk: &Sdk) -> anyhow::Result<PathBuf> {
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
    for (name, text) in WIT_FILES.iter().chain(sdk.wit) {
        let path = dir.join("wit").join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        write_new(&path, text)?;
    }
    write_new(&dir.join(sdk.file.0), sdk.file.1)?;
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
    fn every_wit_file_of_the_javascript_sdk_is_embedded() {
        let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/sdk-js/wit");
        let mut names = Vec::new();
        for sub in ["", "deps"] {
            for e in std::fs::read_dir(wit.join(sub)).unwrap() {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                if name.ends_with(".wit") {
                    names.push(if sub.is_empty() {
                        name
                    } else {
                        format!("{sub}/{name}")
                    });
                }
            }
        }
        names.sort();
        let mut embedded: Vec<&str> = JS_SDK.wit.iter().map(|(n, _)| *n).collect();
        embedded.sort();
        assert_eq!(names, embedded);
    }

    #[test]
    fn materialize_replaces_a_planted_link_instead_of_writing_through_it() {
        let pkg = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), pkg.path().join(BUILD_DIR)).unwrap();
        let dir = materialize(pkg.path(), &PYTHON_SDK).unwrap();
        assert!(std::fs::symlink_metadata(&dir).unwrap().is_dir());
        let sdk = std::fs::read_to_string(dir.join("stratus_plugin.py")).unwrap();
        assert_eq!(sdk, PYTHON_SDK.file.1);
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);

        // A link planted inside the directory is removed with it, not followed.
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::fs::remove_file(dir.join("wit/host.wit")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("wit/host.wit")).unwrap();
        materialize(pkg.path(), &JS_SDK).unwrap();
        assert!(dir.join("wit/deps/filesystem.wit").is_file());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    }
}
