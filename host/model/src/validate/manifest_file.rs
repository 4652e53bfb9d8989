//! A package's `plugin.toml`, read for validation: from a package directory (the file itself,
//! never through a symbolic link) or from a `.tar`/`.tar.gz`/`.tgz` archive (only its
//! `plugin.toml` entry, nothing unpacked). Every read is bounded, because a package may be
//! hostile.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::plugin::manifest::Manifest;
use crate::spec::{PackageKind, PackageRef};

/// Largest `plugin.toml` read; real manifests are a few hundred bytes.
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024;
/// Most bytes of an archive (after decompression) read while looking for its `plugin.toml`,
/// so that a compression bomb costs bounded time.
pub const MAX_ARCHIVE_SCAN_BYTES: u64 = 512 << 20;
/// Most archive entries looked at while looking for `plugin.toml`.
pub const MAX_ARCHIVE_ENTRIES: usize = 100_000;

const MANIFEST: &str = "plugin.toml";

/// A package's manifest and where it was found, relative to the package
/// (`plugin.toml`, or `<top>/plugin.toml` in an archive with one top-level directory).
#[derive(Debug, Clone)]
pub(crate) struct PackageManifest {
    pub manifest: Manifest,
    pub entry: PathBuf,
}

impl PackageManifest {
    /// The manifest as messages name it: the package path as written, then the entry.
    pub fn shown(&self, pkg: &PackageRef) -> String {
        pkg.path.written.join(&self.entry).display().to_string()
    }
}

/// Reads and validates the manifest of `pkg`; the error is a sentence naming the file.
pub(crate) fn load(pkg: &PackageRef) -> Result<PackageManifest, String> {
    let (text, entry) = match pkg.kind {
        PackageKind::Directory => {
            let shown = pkg.path.written.join(MANIFEST);
            let text = from_dir(&pkg.path.resolved.join(MANIFEST), &shown)?;
            (text, PathBuf::from(MANIFEST))
        }
        PackageKind::Archive => from_archive(&pkg.path.resolved, &pkg.path.written)?,
    };
    let shown = pkg.path.written.join(&entry);
    let manifest = Manifest::parse(&text, &shown).map_err(|e| one_line(&e.to_string()))?;
    Ok(PackageManifest { manifest, entry })
}

/// A TOML error on one line: its position line and its message, without the source excerpt
/// and caret, so that each problem of a deployment file stays one line.
fn one_line(message: &str) -> String {
    let mut lines = message.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or_default();
    match lines.next_back() {
        Some(last) if message.contains('|') => format!("{first}: {last}"),
        _ => message.to_string(),
    }
}

/// `dir/plugin.toml`, refusing a link and checking that the file opened is the one looked at.
fn from_dir(path: &Path, shown: &Path) -> Result<String, String> {
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", shown.display());
    let looked = std::fs::symlink_metadata(path).map_err(cannot)?;
    if looked.file_type().is_symlink() {
        return Err(format!(
            "{} is a symbolic link (expected a regular file)",
            shown.display()
        ));
    }
    if !looked.is_file() {
        return Err(format!("{} is not a regular file", shown.display()));
    }
    let file = std::fs::File::open(path).map_err(cannot)?;
    let opened = file.metadata().map_err(cannot)?;
    if (opened.dev(), opened.ino()) != (looked.dev(), looked.ino()) {
        return Err(format!("{} changed while it was read", shown.display()));
    }
    bounded_text(file, shown)
}

/// The text of at most [`MAX_MANIFEST_BYTES`] from `r`.
fn bounded_text(r: impl Read, shown: &Path) -> Result<String, String> {
    let mut bytes = Vec::new();
    r.take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", shown.display()))?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(format!(
            "{} is larger than {} KiB",
            shown.display(),
            MAX_MANIFEST_BYTES / 1024
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8", shown.display()))
}

/// The `plugin.toml` entry of an archive and its path in it: at the root, or in the archive's
/// only top-level directory (as `tar czf pkg.tgz pkg/` makes it).
fn from_archive(path: &Path, written: &Path) -> Result<(String, PathBuf), String> {
    let shown = written.display();
    let bad = |e: std::io::Error| format!("cannot read archive {shown}: {e}");
    // A FIFO or device behind the name would block or never end.
    if !std::fs::metadata(path).map_err(bad)?.is_file() {
        return Err(format!("archive {shown} is not a regular file"));
    }
    let file = std::fs::File::open(path).map_err(bad)?;
    let name = path.to_string_lossy();
    let raw: Box<dyn Read> = if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(Bounded {
        inner: raw,
        read: 0,
    });
    let mut tops: Vec<String> = Vec::new();
    // Every candidate is kept: unpacking keeps the last of duplicate entries, so an archive
    // with two could show validation one manifest and the agent another.
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    for (i, entry) in archive.entries().map_err(bad)?.enumerate() {
        if i >= MAX_ARCHIVE_ENTRIES {
            return Err(format!(
                "archive {shown}: no plugin.toml among its first {MAX_ARCHIVE_ENTRIES} entries"
            ));
        }
        let mut entry = entry.map_err(bad)?;
        let parts = normal_parts(&entry.path().map_err(bad)?);
        let Some(top) = parts.first() else { continue };
        if !top.starts_with('.') && !tops.contains(top) {
            tops.push(top.clone());
        }
        let is_manifest = match parts.as_slice() {
            [m] | [_, m] => m == MANIFEST,
            _ => false,
        };
        if !is_manifest {
            continue;
        }
        let entry_path: PathBuf = parts.iter().collect();
        let shown_entry = written.join(&entry_path);
        if !entry.header().entry_type().is_file() {
            return Err(format!(
                "{} is a link or special file in the archive (expected a regular file)",
                shown_entry.display()
            ));
        }
        if found.iter().any(|(_, p)| *p == entry_path) {
            return Err(format!(
                "{} appears twice in the archive",
                shown_entry.display()
            ));
        }
        let text = bounded_text(&mut entry, &shown_entry)?;
        found.push((text, entry_path));
    }
    let root = found.iter().position(|(_, p)| p.as_os_str() == MANIFEST);
    match root {
        Some(i) => Ok(found.swap_remove(i)),
        None if found.len() == 1 && tops.len() == 1 => Ok(found.swap_remove(0)),
        None => Err(format!(
            "archive {shown} has no plugin.toml (expected one at its root or in its only \
             top-level directory)"
        )),
    }
}

/// The names of a path inside an archive, or nothing if it leaves the archive's root.
fn normal_parts(path: &Path) -> Vec<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => return Vec::new(),
        }
    }
    parts
}

/// A reader that fails once more than [`MAX_ARCHIVE_SCAN_BYTES`] were read through it.
struct Bounded<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > MAX_ARCHIVE_SCAN_BYTES {
            return Err(std::io::Error::other(format!(
                "gave up looking for plugin.toml after {} MiB",
                MAX_ARCHIVE_SCAN_BYTES >> 20
            )));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SpecPath;

    const TOML: &str = "[plugin]\nname = \"x\"\nversion = \"1\"\nworld = \"service\"\n";

    fn package(path: &Path, kind: PackageKind) -> PackageRef {
        PackageRef {
            path: SpecPath {
                written: PathBuf::from("pkg"),
                resolved: path.to_path_buf(),
            },
            kind,
        }
    }

    /// A gzip'd tar with `(path, content)` files, and a link entry when `link` is given.
    fn tgz(dir: &Path, files: &[(&str, &[u8])], link: Option<(&str, &str)>) -> PathBuf {
        let path = dir.join("pkg.tgz");
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut b = tar::Builder::new(gz);
        for (name, bytes) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, *bytes).unwrap();
        }
        if let Some((name, target)) = link {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, name, target).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
        path
    }

    #[test]
    fn a_directory_manifest_is_read_but_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plugin.toml"), TOML).unwrap();
        let m = load(&package(dir.path(), PackageKind::Directory)).unwrap();
        assert_eq!(m.manifest.plugin.name, "x");
        std::fs::remove_file(dir.path().join("plugin.toml")).unwrap();
        let real = dir.path().join("real.toml");
        std::fs::write(&real, TOML).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("plugin.toml")).unwrap();
        let err = load(&package(dir.path(), PackageKind::Directory)).unwrap_err();
        assert_eq!(
            err,
            "pkg/plugin.toml is a symbolic link (expected a regular file)"
        );
    }

    #[test]
    fn an_oversized_manifest_is_refused_after_a_bounded_read() {
        let dir = tempfile::tempdir().unwrap();
        let big = format!("{TOML}#{}\n", "x".repeat(MAX_MANIFEST_BYTES as usize));
        std::fs::write(dir.path().join("plugin.toml"), big).unwrap();
        let err = load(&package(dir.path(), PackageKind::Directory)).unwrap_err();
        assert_eq!(err, "pkg/plugin.toml is larger than 64 KiB");
    }

    #[test]
    fn an_archive_manifest_is_found_at_the_root_or_in_the_only_top_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = tgz(dir.path(), &[("plugin.toml", TOML.as_bytes())], None);
        let m = load(&package(&root, PackageKind::Archive)).unwrap();
        assert_eq!(m.entry, Path::new("plugin.toml"));
        let nested = tgz(
            dir.path(),
            &[
                ("x/plugin.wasm", b"\0asm"),
                ("x/plugin.toml", TOML.as_bytes()),
            ],
            None,
        );
        let m = load(&package(&nested, PackageKind::Archive)).unwrap();
        assert_eq!(
            m.shown(&package(&nested, PackageKind::Archive)),
            "pkg/x/plugin.toml"
        );
        let two_tops = tgz(
            dir.path(),
            &[("x/plugin.toml", TOML.as_bytes()), ("y/other", b"")],
            None,
        );
        let err = load(&package(&two_tops, PackageKind::Archive)).unwrap_err();
        assert!(err.contains("has no plugin.toml"), "{err}");
    }

    #[test]
    fn an_archive_manifest_that_is_a_link_or_outside_the_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let link = tgz(dir.path(), &[], Some(("plugin.toml", "/etc/passwd")));
        let err = load(&package(&link, PackageKind::Archive)).unwrap_err();
        assert_eq!(
            err,
            "pkg/plugin.toml is a link or special file in the archive (expected a regular file)"
        );
        assert!(normal_parts(Path::new("../plugin.toml")).is_empty());
        assert!(normal_parts(Path::new("/plugin.toml")).is_empty());
        assert_eq!(
            normal_parts(Path::new("./a/plugin.toml")),
            ["a", "plugin.toml"]
        );
    }

    #[test]
    fn an_archive_with_two_manifests_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let risky = TOML.replace(
            "[plugin]",
            "[capabilities]\nprograms = [\"/bin/sh\"]\n[plugin]",
        );
        let twice = tgz(
            dir.path(),
            &[
                ("plugin.toml", TOML.as_bytes()),
                ("./plugin.toml", risky.as_bytes()),
            ],
            None,
        );
        let err = load(&package(&twice, PackageKind::Archive)).unwrap_err();
        assert_eq!(err, "pkg/plugin.toml appears twice in the archive");
    }

    #[test]
    fn a_fifo_is_not_opened_as_an_archive() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pkg.tar");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = load(&package(&fifo, PackageKind::Archive)).unwrap_err();
        assert_eq!(err, "archive pkg is not a regular file");
    }

    #[test]
    fn garbage_is_not_an_archive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pkg.tar.gz");
        std::fs::write(&path, "not gzip").unwrap();
        let err = load(&package(&path, PackageKind::Archive)).unwrap_err();
        assert!(err.starts_with("cannot read archive pkg:"), "{err}");
    }
}
