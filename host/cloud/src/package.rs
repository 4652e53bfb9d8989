//! What a service package is on disk: its files, their executable bits, and its digest.

use crate::files::FilesError;
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Top-level entries of a package source directory that are build inputs, not payload.
const BUILD_ENTRIES: &[&str] = &["target", "src", "Cargo.toml", "Cargo.lock"];

/// One file of a package, with its `/`-separated path relative to the package root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageFile {
    pub path: String,
    pub bytes: Vec<u8>,
    pub executable: bool,
}

/// The files of a package directory or `.tar`/`.tar.gz`/`.tgz` archive, sorted by path.
pub fn collect(source: &Path) -> Result<Vec<PackageFile>, FilesError> {
    let meta = std::fs::metadata(source).map_err(FilesError::io(source))?;
    if meta.is_dir() {
        return collect_dir(source);
    }
    let name = source.to_string_lossy();
    let gz = name.ends_with(".tar.gz") || name.ends_with(".tgz");
    if !gz && !name.ends_with(".tar") {
        return Err(FilesError::NotAPackage(source.to_path_buf()));
    }
    let unpacked = tempfile::tempdir().map_err(FilesError::io(source))?;
    let file = std::fs::File::open(source).map_err(FilesError::io(source))?;
    let reader: Box<dyn std::io::Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    // `unpack` refuses entries that would land outside the target directory.
    tar::Archive::new(reader)
        .unpack(unpacked.path())
        .map_err(FilesError::io(source))?;
    collect_dir(&archive_root(unpacked.path())?)
}

/// An archive made with `tar czf pkg.tgz pkg/` has one top directory; the package is inside.
fn archive_root(dir: &Path) -> Result<std::path::PathBuf, FilesError> {
    let entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(FilesError::io(dir))?
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    match entries.as_slice() {
        [only] if only.path().is_dir() && !dir.join("plugin.toml").exists() => Ok(only.path()),
        _ => Ok(dir.to_path_buf()),
    }
}

fn collect_dir(root: &Path) -> Result<Vec<PackageFile>, FilesError> {
    let mut files = Vec::new();
    walk(root, "", &mut files)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<PackageFile>) -> Result<(), FilesError> {
    for entry in std::fs::read_dir(dir).map_err(FilesError::io(dir))? {
        let entry = entry.map_err(FilesError::io(dir))?;
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| FilesError::InvalidPath(path.display().to_string()))?;
        if name.starts_with('.') || (prefix.is_empty() && BUILD_ENTRIES.contains(&name.as_str())) {
            continue;
        }
        let rel = format!("{prefix}{name}");
        // Follows symlinks: a package may link payload from elsewhere.
        let meta = std::fs::metadata(&path).map_err(FilesError::io(&path))?;
        if meta.is_dir() {
            walk(&path, &format!("{rel}/"), out)?;
        } else if meta.is_file() {
            let bytes = std::fs::read(&path).map_err(FilesError::io(&path))?;
            let executable = meta.permissions().mode() & 0o111 != 0;
            out.push(PackageFile {
                path: rel,
                bytes,
                executable,
            });
        }
    }
    Ok(())
}

/// The package digest: SHA-256 over every file in path order, each as its path, a NUL, its
/// executable flag, its length (8 bytes, big endian) and its content. The executable flag is
/// included because it changes what the package does.
pub fn digest<'a>(files: impl IntoIterator<Item = (&'a str, bool, &'a [u8])>) -> String {
    let mut h = Sha256::new();
    for (path, executable, bytes) in files {
        h.update(path.as_bytes());
        h.update([0, if executable { b'x' } else { b'-' }]);
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    hex::encode(h.finalize())
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A relative path from a manifest is safe to join under a destination directory.
pub fn safe_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}
