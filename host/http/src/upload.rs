//! An uploaded deployment: a tar.gz holding `deployment.toml` and the packages it names by
//! relative path, unpacked into a fresh directory under `<state>/uploads/`. Every archive is
//! treated as hostile: its size once unpacked and its number of entries are bounded, only
//! plain files and directories are taken (no links of any kind, no devices), every path must
//! stay beneath the directory, and the file may name nothing outside it.

use flate2::read::GzDecoder;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use stratus_control::config::ControlProviders;

/// Largest upload accepted, compressed (the request body's limit).
pub const MAX_UPLOAD_BYTES: usize = 32 << 20;
/// Most bytes the archive may hold once decompressed (headers included).
pub const MAX_UNPACKED_BYTES: u64 = 128 << 20;
/// Most entries (files and directories) an archive may hold.
pub const MAX_ENTRIES: usize = 4096;
/// Deepest path an entry may have, in components.
pub const MAX_DEPTH: usize = 32;
/// The deployment file's name at the archive's top.
pub const DEPLOYMENT_FILE: &str = "deployment.toml";

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the archive holds more than {MAX_UNPACKED_BYTES} bytes once unpacked")]
    TooLarge,
    #[error("the archive holds more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("archive entry {0:?}: only relative paths without `..`, at most {MAX_DEPTH} deep")]
    UnsafePath(String),
    #[error("archive entry {path:?} is a {kind}; only files and directories are taken")]
    EntryType { path: String, kind: String },
    #[error("archive entry {0:?} appears twice or under a file")]
    Duplicate(String),
    #[error("the archive has no {DEPLOYMENT_FILE} at its top")]
    NoDeploymentFile,
    #[error("{DEPLOYMENT_FILE} names {0:?}, outside the archive; name packages by relative path")]
    Outside(String),
    #[error("not a tar.gz archive: {0}")]
    Corrupt(String),
    #[error("unpacking into {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Unpacks `archive` into a new directory under `uploads` and answers its deployment file;
/// `providers` (the configuration file's) are those it may name without declaring them.
pub fn unpack(
    archive: &[u8],
    uploads: &Path,
    providers: &ControlProviders,
) -> Result<PathBuf, UploadError> {
    let dest = fresh_dir(uploads)?;
    match unpack_into(archive, &dest, providers) {
        Ok(file) => Ok(file),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dest);
            Err(e)
        }
    }
}

/// A new 0700 directory `uploads/<random>`.
fn fresh_dir(uploads: &Path) -> Result<PathBuf, UploadError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| UploadError::Io { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(uploads)
        .map_err(io(uploads))?;
    let dest = uploads.join(hex::encode(rand::random::<[u8; 8]>()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dest)
        .map_err(io(&dest))?;
    Ok(dest)
}

fn unpack_into(
    archive: &[u8],
    dest: &Path,
    providers: &ControlProviders,
) -> Result<PathBuf, UploadError> {
    let limited = Limited {
        inner: GzDecoder::new(archive),
        left: MAX_UNPACKED_BYTES,
    };
    let mut tar = tar::Archive::new(limited);
    let entries = tar.entries().map_err(read_error)?;
    for (n, entry) in entries.enumerate() {
        if n >= MAX_ENTRIES {
            return Err(UploadError::TooManyEntries);
        }
        let mut entry = entry.map_err(read_error)?;
        take_entry(&mut entry, dest)?;
    }
    let file = dest.join(DEPLOYMENT_FILE);
    if !std::fs::symlink_metadata(&file).is_ok_and(|m| m.is_file()) {
        return Err(UploadError::NoDeploymentFile);
    }
    confined(&file, providers)?;
    Ok(file)
}

/// Writes one entry beneath `dest`, or refuses it.
fn take_entry<R: Read>(entry: &mut tar::Entry<'_, R>, dest: &Path) -> Result<(), UploadError> {
    let raw = entry.path().map_err(read_error)?.into_owned();
    let shown = raw.to_string_lossy().into_owned();
    let relative = safe_relative(&raw).ok_or_else(|| UploadError::UnsafePath(shown.clone()))?;
    let kind = entry.header().entry_type();
    if kind.is_pax_global_extensions() {
        return Ok(());
    }
    let target = dest.join(&relative);
    let io = |source| UploadError::Io {
        path: target.clone(),
        source,
    };
    if relative.as_os_str().is_empty() {
        return Ok(());
    }
    if kind.is_dir() {
        return match std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&target)
        {
            Ok(()) => Ok(()),
            Err(_) => Err(UploadError::Duplicate(shown)),
        };
    }
    if !kind.is_file() {
        return Err(UploadError::EntryType {
            path: shown,
            kind: format!("{kind:?}").to_lowercase(),
        });
    }
    if let Some(parent) = target.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|_| UploadError::Duplicate(shown.clone()))?;
    }
    let executable = entry.header().mode().unwrap_or(0) & 0o111 != 0;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if executable { 0o700 } else { 0o600 })
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&target)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => UploadError::Duplicate(shown.clone()),
            _ => io(e),
        })?;
    std::io::copy(entry, &mut file).map_err(read_error)?;
    Ok(())
}

/// `path` as plain components beneath the destination (`.` dropped), or `None`.
fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (out.components().count() <= MAX_DEPTH).then_some(out)
}

/// Refuses a file that names a path outside its directory (absolute, or through `..`): every
/// path of the file is a `{written, resolved}` pair in the parsed specification.
fn confined(file: &Path, providers: &ControlProviders) -> Result<(), UploadError> {
    let text = std::fs::read_to_string(file).map_err(|source| UploadError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    // A file that does not parse is refused by launch, with its line and column; read as
    // launch reads it, with the providers it may name, or it would pass here unchecked.
    let Ok(text) = providers.merged(&text, file) else {
        return Ok(());
    };
    let Ok(spec) = stratus_model::spec::DeploymentSpec::from_str(&text, file) else {
        return Ok(());
    };
    let value = serde_json::to_value(&spec).unwrap_or_default();
    let mut written = Vec::new();
    written_paths(&value, &mut written);
    for w in written {
        if safe_relative(Path::new(&w)).is_none() {
            return Err(UploadError::Outside(w));
        }
    }
    Ok(())
}

fn written_paths(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let (Some(serde_json::Value::String(w)), Some(_)) =
                (map.get("written"), map.get("resolved"))
            {
                out.push(w.clone());
            }
            map.values().for_each(|v| written_paths(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| written_paths(v, out)),
        _ => {}
    }
}

fn read_error(e: std::io::Error) -> UploadError {
    if e.kind() == std::io::ErrorKind::FileTooLarge {
        UploadError::TooLarge
    } else {
        UploadError::Corrupt(e.to_string())
    }
}

/// A reader that fails once more than `left` bytes came through: a gzip bomb stops at the
/// bound, whatever the tar headers claim.
struct Limited<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::FileTooLarge, "archive too large")
        })?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
