//! Launch validation: a package directory must hold its built component, so that a plugin
//! never built is refused before any server starts instead of failing at `install-service`
//! on every server. Only the first bytes are read: compiling is the control plane's job.

use std::io::Read;
use std::path::Path;

use super::manifest_file::PackageManifest;
use crate::spec::{PackageKind, PackageRef};

/// The preamble of a WebAssembly binary: magic `\0asm`, then version and layer.
const WASM_MAGIC: [u8; 4] = *b"\0asm";
/// Layer 1 marks a component; layer 0 a core module (which no world can load).
const COMPONENT_LAYER: [u8; 2] = [1, 0];

/// Why the package's component is not usable, as a sentence ending with the command that
/// builds it; `Ok` for a directory whose component starts like a component, and for an
/// archive (a built artifact whose contents are checked when it is uploaded).
pub(super) fn check_built(pkg: &PackageRef, m: &PackageManifest) -> Result<(), String> {
    if pkg.kind == PackageKind::Archive {
        return Ok(());
    }
    let component = &m.manifest.plugin.component;
    let path = pkg.path.resolved.join(component);
    let shown = pkg.path.written.join(component);
    let build = format!(
        "build it with `stratus plugin build {}`",
        pkg.path.resolved.display()
    );
    let problem = match preamble(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("its component {} does not exist", shown.display())
        }
        Err(e) => format!("its component {} cannot be read: {e}", shown.display()),
        Ok(Preamble::NotRegular) => {
            format!("its component {} is not a regular file", shown.display())
        }
        Ok(Preamble::Bytes(b)) if b[..4] != WASM_MAGIC => {
            format!("its component {} is not WebAssembly", shown.display())
        }
        Ok(Preamble::Bytes(b)) if b[6..8] != COMPONENT_LAYER => format!(
            "its component {} is a core WebAssembly module, not a component",
            shown.display()
        ),
        Ok(Preamble::Bytes(_)) => return Ok(()),
    };
    Err(format!("is not built: {problem}; {build}"))
}

enum Preamble {
    /// The file is a link, directory, FIFO or device (a link is refused at upload too).
    NotRegular,
    /// The first 8 bytes, zero-padded when the file is shorter.
    Bytes([u8; 8]),
}

/// The first 8 bytes of `path`, looked at without following a link; the file opened must be
/// the one looked at (as `manifest_file` reads `plugin.toml`).
fn preamble(path: &Path) -> std::io::Result<Preamble> {
    use std::os::unix::fs::MetadataExt;
    let looked = std::fs::symlink_metadata(path)?;
    if !looked.is_file() {
        return Ok(Preamble::NotRegular);
    }
    let file = std::fs::File::open(path)?;
    let opened = file.metadata()?;
    if (opened.dev(), opened.ino()) != (looked.dev(), looked.ino()) {
        return Ok(Preamble::NotRegular);
    }
    let mut bytes = [0u8; 8];
    let mut read = 0;
    let mut r = file.take(8);
    while read < 8 {
        match r.read(&mut bytes[read..])? {
            0 => break,
            n => read += n,
        }
    }
    Ok(Preamble::Bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::manifest::Manifest;
    use crate::spec::SpecPath;

    fn check(dir: &Path, file: Option<&[u8]>) -> Result<(), String> {
        if let Some(bytes) = file {
            std::fs::write(dir.join("plugin.wasm"), bytes).unwrap();
        }
        let text = "[plugin]\nname = \"p\"\nversion = \"0.1.0\"\nworld = \"service\"\n";
        let manifest = Manifest::parse(text, Path::new("plugin.toml")).unwrap();
        let m = PackageManifest {
            manifest,
            entry: "plugin.toml".into(),
        };
        let pkg = PackageRef {
            path: SpecPath {
                written: "pkg".into(),
                resolved: dir.to_path_buf(),
            },
            kind: PackageKind::Directory,
        };
        check_built(&pkg, &m)
    }

    #[test]
    fn a_missing_component_names_the_file_and_the_build_command() {
        let dir = tempfile::tempdir().unwrap();
        let err = check(dir.path(), None).unwrap_err();
        assert!(err.contains("pkg/plugin.wasm does not exist"), "{err}");
        let cmd = format!("`stratus plugin build {}`", dir.path().display());
        assert!(err.contains(&cmd), "{err}");
    }

    #[test]
    fn a_core_module_a_text_file_and_a_short_file_are_not_built() {
        let dir = tempfile::tempdir().unwrap();
        let module = b"\0asm\x01\x00\x00\x00";
        let err = check(dir.path(), Some(module)).unwrap_err();
        assert!(err.contains("core WebAssembly module"), "{err}");
        let err = check(dir.path(), Some(b"TODO: build me")).unwrap_err();
        assert!(err.contains("is not WebAssembly"), "{err}");
        let err = check(dir.path(), Some(b"\0as")).unwrap_err();
        assert!(err.contains("is not WebAssembly"), "{err}");
        assert!(check(dir.path(), Some(b"\0asm\x0d\x00\x01\x00")).is_ok());
    }

    #[test]
    fn a_link_or_fifo_in_the_components_place_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.wasm");
        std::fs::write(&target, b"\0asm\x0d\x00\x01\x00").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("plugin.wasm")).unwrap();
        let err = check(dir.path(), None).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        std::fs::remove_file(dir.path().join("plugin.wasm")).unwrap();
        let fifo = dir.path().join("plugin.wasm");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let err = check(dir.path(), None).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
