//! What a service package is on disk: its files, their executable bits, and its digest.
//!
//! Packages may be hostile, so collecting one follows no link and reads nothing unbounded:
//! a plugin package must have `plugin.toml` at its top (checked before anything else is
//! read), a symbolic or hard link, device, fifo or socket anywhere is refused with an error
//! naming the entry, archive entries may not lead outside the archive, and both the number
//! of entries and the unpacked size are capped.

use crate::files::FilesError;
use rustix::fs::{FileType, Mode, OFlags};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path};

/// Top-level entries of a package source directory that are build inputs, not payload.
const BUILD_ENTRIES: &[&str] = &["target", "src", "Cargo.toml", "Cargo.lock"];

/// Most entries (files and directories) a package may hold: a plugin, not a filesystem.
pub const MAX_PACKAGE_ENTRIES: u64 = 10_000;
/// Most bytes a package may hold unpacked (512 MiB): it is read into memory to be hashed and
/// uploaded, and holds a component of at most 256 MB by default.
pub const MAX_PACKAGE_BYTES: u64 = 512 << 20;

/// Deepest directory nesting in a package; the walk recurses once per level.
pub const MAX_PACKAGE_DEPTH: usize = 64;

/// The file every plugin package has at its top.
pub const MANIFEST_FILE: &str = "plugin.toml";

/// What a package must contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contents {
    /// A plugin: `plugin.toml` at the top.
    Plugin,
    /// Any payload (e.g. a CM adapter's input files).
    Files,
}

/// One file of a package, with its `/`-separated path relative to the package root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageFile {
    pub path: String,
    pub bytes: Vec<u8>,
    pub executable: bool,
}

/// Running totals checked against the limits.
#[derive(Default)]
struct Budget {
    entries: u64,
    bytes: u64,
}

impl Budget {
    fn entry(&mut self, source: &Path) -> Result<(), FilesError> {
        self.entries += 1;
        if self.entries > MAX_PACKAGE_ENTRIES {
            return Err(too_large(
                source,
                format!("more than {MAX_PACKAGE_ENTRIES} entries"),
            ));
        }
        Ok(())
    }

    fn bytes(&mut self, source: &Path, n: u64) -> Result<(), FilesError> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > MAX_PACKAGE_BYTES {
            return Err(too_large(
                source,
                format!("more than {MAX_PACKAGE_BYTES} bytes unpacked"),
            ));
        }
        Ok(())
    }

    /// What is left of the byte budget, for bounding one read.
    fn left(&self) -> u64 {
        MAX_PACKAGE_BYTES - self.bytes
    }
}

fn too_large(source: &Path, what: String) -> FilesError {
    FilesError::TooLarge {
        package: source.to_path_buf(),
        what,
    }
}

/// The files of a package directory or `.tar`/`.tar.gz`/`.tgz` archive, sorted by path.
/// `source` itself may be a link (it is the operator's own path); nothing inside may.
pub fn collect(source: &Path, contents: Contents) -> Result<Vec<PackageFile>, FilesError> {
    let meta = std::fs::metadata(source).map_err(FilesError::io(source))?;
    let files = if meta.is_dir() {
        collect_dir(source, contents)?
    } else {
        collect_archive(source)?
    };
    if contents == Contents::Plugin && !files.iter().any(|f| f.path == MANIFEST_FILE) {
        return Err(FilesError::NoManifest(source.to_path_buf()));
    }
    Ok(files)
}

fn collect_dir(root: &Path, contents: Contents) -> Result<Vec<PackageFile>, FilesError> {
    if contents == Contents::Plugin {
        // Before reading anything else: `package = "/etc"` fails here, not after a walk.
        let manifest = root.join(MANIFEST_FILE);
        let is_file = std::fs::symlink_metadata(&manifest).is_ok_and(|m| m.file_type().is_file());
        if !is_file {
            return Err(FilesError::NoManifest(root.to_path_buf()));
        }
    }
    let mut files = Vec::new();
    walk(root, root, "", &mut Budget::default(), &mut files)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn walk(
    root: &Path,
    dir: &Path,
    prefix: &str,
    budget: &mut Budget,
    out: &mut Vec<PackageFile>,
) -> Result<(), FilesError> {
    if prefix.matches('/').count() > MAX_PACKAGE_DEPTH {
        return Err(too_large(
            root,
            format!("directories nested deeper than {MAX_PACKAGE_DEPTH}"),
        ));
    }
    for entry in std::fs::read_dir(dir).map_err(FilesError::io(dir))? {
        let entry = entry.map_err(FilesError::io(dir))?;
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| FilesError::InvalidPath(path.display().to_string()))?;
        if skipped(prefix, &name) {
            continue;
        }
        budget.entry(root)?;
        let rel = format!("{prefix}{name}");
        // Not followed: a link in a package could deliver any file of the uploading host.
        let kind = entry.file_type().map_err(FilesError::io(&path))?;
        if kind.is_dir() {
            walk(root, &path, &format!("{rel}/"), budget, out)?;
        } else if kind.is_file() {
            let (bytes, executable) = read_regular(root, &path, &rel, budget)?;
            out.push(PackageFile {
                path: rel,
                bytes,
                executable,
            });
        } else {
            return Err(refused(root, rel, kind.is_symlink()));
        }
    }
    Ok(())
}

/// Dotfiles anywhere and build inputs at the top are not payload: a package never uploads
/// them. `prefix` is the entry's parent path inside the package, empty at the top.
pub fn skipped(prefix: &str, name: &str) -> bool {
    name.starts_with('.') || (prefix.is_empty() && BUILD_ENTRIES.contains(&name))
}

fn refused(source: &Path, entry: String, link: bool) -> FilesError {
    let package = source.to_path_buf();
    match link {
        true => FilesError::Link { package, entry },
        false => FilesError::Special { package, entry },
    }
}

/// Reads one regular file without following a link, within the byte budget.
fn read_regular(
    root: &Path,
    path: &Path,
    rel: &str,
    budget: &mut Budget,
) -> Result<(Vec<u8>, bool), FilesError> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| refused_or_io(root, rel, path, e))?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| FilesError::io(path)(e.into()))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(refused(root, rel.to_string(), false));
    }
    // A second name of a file elsewhere (`ln /etc/shadow pkg/x`) delivers that file.
    if stat.st_nlink > 1 {
        return Err(refused(root, rel.to_string(), true));
    }
    budget.bytes(root, stat.st_size as u64)?;
    let mut bytes = Vec::with_capacity(stat.st_size as usize);
    std::fs::File::from(fd)
        .take(budget.left() + 1)
        .read_to_end(&mut bytes)
        .map_err(FilesError::io(path))?;
    // The file may have grown since fstat.
    budget.bytes(
        root,
        (bytes.len() as u64).saturating_sub(stat.st_size as u64),
    )?;
    Ok((bytes, stat.st_mode & 0o111 != 0))
}

fn refused_or_io(root: &Path, rel: &str, path: &Path, e: rustix::io::Errno) -> FilesError {
    match e {
        rustix::io::Errno::LOOP => refused(root, rel.to_string(), true),
        e => FilesError::io(path)(e.into()),
    }
}

/// Reads an archive entry by entry (nothing is unpacked to disk): links, devices and fifos
/// are refused, as are paths that are absolute or contain `..`.
fn collect_archive(source: &Path) -> Result<Vec<PackageFile>, FilesError> {
    let name = source.to_string_lossy();
    let gz = name.ends_with(".tar.gz") || name.ends_with(".tgz");
    if !gz && !name.ends_with(".tar") {
        return Err(FilesError::NotAPackage(source.to_path_buf()));
    }
    let file = std::fs::File::open(source).map_err(FilesError::io(source))?;
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(reader);
    let mut budget = Budget::default();
    let mut found: BTreeMap<String, (Vec<u8>, bool)> = BTreeMap::new();
    for entry in archive.entries().map_err(FilesError::io(source))? {
        let mut entry = entry.map_err(FilesError::io(source))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(rel) = archive_path(&raw) else {
            return Err(FilesError::OutsideRoot {
                package: source.to_path_buf(),
                entry: raw,
            });
        };
        use tar::EntryType as T;
        match entry.header().entry_type() {
            T::Directory | T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => {
                budget.entry(source)?
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                budget.entry(source)?;
                let size = entry.size();
                budget.bytes(source, size)?;
                let mut bytes = Vec::new();
                (&mut entry)
                    .take(size)
                    .read_to_end(&mut bytes)
                    .map_err(FilesError::io(source))?;
                let mode = entry.header().mode().map_err(FilesError::io(source))?;
                found.insert(rel, (bytes, mode & 0o111 != 0));
            }
            T::Symlink | T::Link => return Err(refused(source, raw, true)),
            _ => return Err(refused(source, raw, false)),
        }
    }
    Ok(strip_top(found))
}

/// An archive entry's path as a `/`-separated relative path (`./` dropped); `None` if it is
/// absolute or climbs with `..`. The archive's own root (`.`) is the empty path.
fn archive_path(raw: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in Path::new(raw).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(parts.join("/"))
}

/// An archive made with `tar czf pkg.tgz pkg/` has one top directory; the package is inside.
/// Dotfiles and top-level build inputs are dropped as for a directory.
fn strip_top(found: BTreeMap<String, (Vec<u8>, bool)>) -> Vec<PackageFile> {
    let top = |p: &str| p.split('/').next().unwrap_or("").to_string();
    let visible: Vec<&String> = found
        .keys()
        .filter(|p| !p.is_empty() && !top(p).starts_with('.'))
        .collect();
    let first = visible.first().map(|p| top(p));
    let one_dir = first
        .as_ref()
        .is_some_and(|t| visible.iter().all(|p| p.starts_with(&format!("{t}/"))));
    let strip = match (one_dir, first) {
        (true, Some(t)) => format!("{t}/"),
        _ => String::new(),
    };
    let mut files: Vec<PackageFile> = found
        .into_iter()
        .filter_map(|(path, (bytes, executable))| {
            let rel = path.strip_prefix(&strip)?.to_string();
            let mut parts = rel.split('/').peekable();
            let first = *parts.peek()?;
            let keep = !rel.is_empty()
                && !(BUILD_ENTRIES.contains(&first))
                && rel.split('/').all(|c| !c.starts_with('.'));
            keep.then_some(PackageFile {
                path: rel,
                bytes,
                executable,
            })
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
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
