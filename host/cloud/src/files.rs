//! Cloud files: service packages and data sources in object storage.
//!
//! Layout in the bucket:
//! - `packages/<name>/<digest>/<relative path>`: every file of a package;
//! - `packages/<name>/<digest>/.stratus-manifest.json`: its file list with per-file SHA-256
//!   and executable bits (object stores keep no file modes), written last so that its
//!   presence means the upload is complete;
//! - `data/<key>` and `data-meta/<key>.json`: a data source and its digest.

use crate::beneath::Beneath;
use crate::package::{self, Contents, PackageFile};
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A package uploaded to cloud files; enough to fetch and verify it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRef {
    pub name: String,
    /// SHA-256 over the sorted (path, executable, content) triples.
    pub digest: String,
    pub files: usize,
}

/// A single uploaded file (e.g. a data source).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    pub key: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct ManifestEntry {
    path: String,
    size: u64,
    sha256: String,
    executable: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    name: String,
    digest: String,
    files: Vec<ManifestEntry>,
}

const MANIFEST: &str = ".stratus-manifest.json";

/// Why a cloud files operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A write beneath a plugin-writable directory failed (the message names the path).
    #[error("{0}")]
    Beneath(std::io::Error),
    #[error("object storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("{0} is neither a package directory nor a .tar, .tar.gz or .tgz archive")]
    NotAPackage(PathBuf),
    #[error("{0} is not a plugin package: it has no plugin.toml at its top")]
    NoManifest(PathBuf),
    #[error("package {package}: entry {entry} is a link; packages may not contain links")]
    Link { package: PathBuf, entry: String },
    #[error(
        "package {package}: entry {entry} is a device, fifo or socket; packages hold only files and directories"
    )]
    Special { package: PathBuf, entry: String },
    #[error("package {package}: entry {entry} leads outside the archive")]
    OutsideRoot { package: PathBuf, entry: String },
    #[error(
        "data source {path}: {what}; a data source must be a regular file with one name, not a link"
    )]
    NotRegular { path: PathBuf, what: String },
    #[error("data source {path} is {size} bytes; at most {MAX_DATA_SOURCE_BYTES} are uploaded")]
    DataSourceTooLarge { path: PathBuf, size: u64 },
    #[error("package {package} is too large: {what}")]
    TooLarge { package: PathBuf, what: String },
    #[error("invalid name {0:?}: use letters, digits, '-', '_' or '.' (not leading)")]
    InvalidName(String),
    #[error("invalid path {0:?} in package or key")]
    InvalidPath(String),
    #[error("package file {file:?} is corrupt: expected sha256 {expected}, got {actual}")]
    CorruptFile {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("package {name} digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("malformed metadata {key}: {source}")]
    Metadata {
        key: String,
        source: serde_json::Error,
    },
    #[error("cloud files task failed: {0}")]
    Task(String),
}

impl FilesError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FilesError {
        let path = path.to_path_buf();
        move |source| FilesError::Io { path, source }
    }
}

/// Object storage of packages and data sources.
#[derive(Debug, Clone)]
pub struct CloudFiles {
    store: Arc<dyn ObjectStore>,
}

impl CloudFiles {
    /// Cloud files in a local directory (created with mode 0700: data sources may hold data
    /// that only the control plane should read).
    pub fn local(dir: impl AsRef<Path>) -> Result<CloudFiles, FilesError> {
        let dir = dir.as_ref();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(FilesError::io(dir))?;
        Ok(CloudFiles::new(Arc::new(LocalFileSystem::new_with_prefix(
            dir,
        )?)))
    }

    /// Cloud files on any `object_store` backend (e.g. an S3 bucket).
    pub fn new(store: Arc<dyn ObjectStore>) -> CloudFiles {
        CloudFiles { store }
    }

    /// Uploads a plugin package directory or archive (everything but top-level `target/`,
    /// `src/`, `Cargo.toml`, `Cargo.lock` and dotfiles; an archive with one top directory is
    /// entered) and returns its reference. Uploading the same content again is a no-op. See
    /// the `package` module for what is refused.
    pub async fn put_package(&self, name: &str, source: &Path) -> Result<PackageRef, FilesError> {
        self.put(name, source, Contents::Plugin).await
    }

    /// Like [`CloudFiles::put_package`] for a payload without `plugin.toml` (e.g. a CM
    /// adapter's input files).
    pub async fn put_files(&self, name: &str, source: &Path) -> Result<PackageRef, FilesError> {
        self.put(name, source, Contents::Files).await
    }

    /// The digest [`CloudFiles::put_package`] (`plugin`) or [`CloudFiles::put_files`] would give
    /// `source` now, without uploading: what a launch compares to know a package changed.
    pub async fn content_digest(source: &Path, plugin: bool) -> Result<String, FilesError> {
        let contents = match plugin {
            true => Contents::Plugin,
            false => Contents::Files,
        };
        let src = source.to_path_buf();
        let files = tokio::task::spawn_blocking(move || package::collect(&src, contents))
            .await
            .map_err(|e| FilesError::Task(e.to_string()))??;
        Ok(package::digest(files.iter().map(|f| {
            (f.path.as_str(), f.executable, f.bytes.as_slice())
        })))
    }

    async fn put(
        &self,
        name: &str,
        source: &Path,
        contents: Contents,
    ) -> Result<PackageRef, FilesError> {
        check_name(name)?;
        let src = source.to_path_buf();
        let files = tokio::task::spawn_blocking(move || package::collect(&src, contents))
            .await
            .map_err(|e| FilesError::Task(e.to_string()))??;
        let digest = package::digest(
            files
                .iter()
                .map(|f| (f.path.as_str(), f.executable, f.bytes.as_slice())),
        );
        let prefix = format!("packages/{name}/{digest}");
        let manifest_key = object_path(&format!("{prefix}/{MANIFEST}"))?;
        let package = PackageRef {
            name: name.to_string(),
            digest: digest.clone(),
            files: files.len(),
        };
        if self.store.head(&manifest_key).await.is_ok() {
            return Ok(package);
        }
        let mut entries = Vec::with_capacity(files.len());
        for PackageFile {
            path,
            bytes,
            executable,
        } in files
        {
            entries.push(ManifestEntry {
                size: bytes.len() as u64,
                sha256: package::sha256(&bytes),
                executable,
                path: path.clone(),
            });
            let key = object_path(&format!("{prefix}/{path}"))?;
            self.store.put(&key, PutPayload::from(bytes)).await?;
        }
        let manifest = Manifest {
            name: name.to_string(),
            digest,
            files: entries,
        };
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
        self.store.put(&manifest_key, json.into()).await?;
        tracing::info!(package = name, digest = %package.digest, files = package.files, "package uploaded");
        Ok(package)
    }

    /// Downloads a package into `dest`, verifying every file and the package digest before
    /// writing anything; returns the paths written. `dest` may be writable by a plugin: no
    /// link in it is followed (see [`Beneath`]).
    pub async fn fetch_package(
        &self,
        package: &PackageRef,
        dest: &Beneath,
    ) -> Result<Vec<PathBuf>, FilesError> {
        check_name(&package.name)?;
        let prefix = format!("packages/{}/{}", package.name, package.digest);
        let manifest_key = format!("{prefix}/{MANIFEST}");
        let manifest: Manifest = self.get_json(&manifest_key).await?;
        let mut files = Vec::with_capacity(manifest.files.len());
        for entry in &manifest.files {
            if !package::safe_relative(&entry.path) {
                return Err(FilesError::InvalidPath(entry.path.clone()));
            }
            let key = object_path(&format!("{prefix}/{}", entry.path))?;
            let bytes = self.store.get(&key).await?.bytes().await?;
            let actual = package::sha256(&bytes);
            if actual != entry.sha256 {
                return Err(FilesError::CorruptFile {
                    file: entry.path.clone(),
                    expected: entry.sha256.clone(),
                    actual,
                });
            }
            files.push((entry, bytes));
        }
        let actual = package::digest(
            files
                .iter()
                .map(|(e, b)| (e.path.as_str(), e.executable, b.as_ref())),
        );
        if actual != package.digest || files.len() != package.files {
            return Err(FilesError::DigestMismatch {
                name: package.name.clone(),
                expected: package.digest.clone(),
                actual,
            });
        }
        let mut written = Vec::with_capacity(files.len());
        for (entry, bytes) in files {
            let mode = if entry.executable { 0o755 } else { 0o644 };
            let rel = Path::new(&entry.path);
            let path = dest
                .write_file(rel, &bytes, mode)
                .map_err(FilesError::Beneath)?;
            written.push(path);
        }
        Ok(written)
    }

    /// Uploads one file (e.g. `datasource.sql`) under `key`, streamed in parts of
    /// [`DATA_SOURCE_CHUNK_BYTES`] and hashed on the way, so its size costs no memory.
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<FileRef, FilesError> {
        if !package::safe_relative(key) {
            return Err(FilesError::InvalidPath(key.to_string()));
        }
        let src = path.to_path_buf();
        let file = tokio::task::spawn_blocking(move || open_data_source(&src))
            .await
            .map_err(|e| FilesError::Task(e.to_string()))??;
        let object = object_path(&format!("data/{key}"))?;
        let mut upload = WriteMultipart::new_with_chunk_size(
            self.store.put_multipart(&object).await?,
            DATA_SOURCE_CHUNK_BYTES,
        );
        let mut reader = tokio::fs::File::from_std(file);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; DATA_SOURCE_CHUNK_BYTES];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = upload.abort().await;
                    return Err(FilesError::io(path)(e));
                }
            };
            if n == 0 {
                break;
            }
            size += n as u64;
            if size > MAX_DATA_SOURCE_BYTES {
                let _ = upload.abort().await;
                return Err(FilesError::DataSourceTooLarge {
                    path: path.to_path_buf(),
                    size,
                });
            }
            hasher.update(&buf[..n]);
            // At most two parts in flight, so the upload holds a bounded amount of memory.
            upload.wait_for_capacity(2).await?;
            upload.write(&buf[..n]);
        }
        upload.finish().await?;
        let file = FileRef {
            key: key.to_string(),
            sha256: hex::encode(hasher.finalize()),
            size,
        };
        let meta = serde_json::to_vec(&file).expect("file ref serializes");
        self.store
            .put(&object_path(&format!("data-meta/{key}.json"))?, meta.into())
            .await?;
        Ok(file)
    }

    /// Downloads the file under `key` to `dir/rel` (parents created, mode 0600), streamed and
    /// hashed on the way; a file whose digest or size does not match its metadata never
    /// appears at `dir/rel`. No link beneath `dir` is followed.
    pub async fn fetch_file(
        &self,
        key: &str,
        dir: &Beneath,
        rel: &Path,
    ) -> Result<FileRef, FilesError> {
        if !package::safe_relative(key) {
            return Err(FilesError::InvalidPath(key.to_string()));
        }
        let file: FileRef = self.get_json(&format!("data-meta/{key}.json")).await?;
        let object = object_path(&format!("data/{key}"))?;
        let mut stream = self.store.get(&object).await?.into_stream();
        let mut new = dir.new_file(rel, 0o600).map_err(FilesError::Beneath)?;
        let target = new.target().to_path_buf();
        let mut out =
            tokio::fs::File::from_std(new.file().try_clone().map_err(FilesError::io(&target))?);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            hasher.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(FilesError::io(&target))?;
        }
        out.flush().await.map_err(FilesError::io(&target))?;
        drop(out);
        let actual = hex::encode(hasher.finalize());
        if actual != file.sha256 || size != file.size {
            return Err(FilesError::CorruptFile {
                file: key.to_string(),
                expected: file.sha256,
                actual,
            });
        }
        tokio::task::spawn_blocking(move || new.commit())
            .await
            .map_err(|e| FilesError::Task(e.to_string()))?
            .map_err(FilesError::Beneath)?;
        Ok(file)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T, FilesError> {
        let bytes = self.store.get(&object_path(key)?).await?.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|source| FilesError::Metadata {
            key: key.to_string(),
            source,
        })
    }
}

/// Largest data source uploaded. Nothing holds it in memory (it is streamed to object
/// storage and to the server), so the bound only keeps a mistaken path (a disk image) from
/// filling the bucket and every server's disk: 64 GiB.
pub const MAX_DATA_SOURCE_BYTES: u64 = 64 << 30;

/// Size of each part a data source is read, uploaded and hashed in; two are in flight at most.
pub const DATA_SOURCE_CHUNK_BYTES: usize = 8 << 20;

/// Opens a data source without following a link: a regular file with one name, bounded.
fn open_data_source(path: &Path) -> Result<std::fs::File, FilesError> {
    use rustix::fs::{FileType, Mode, OFlags};
    let not_regular = |what: &str| FilesError::NotRegular {
        path: path.to_path_buf(),
        what: what.to_string(),
    };
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| match e {
        rustix::io::Errno::LOOP => not_regular("it is a symbolic link"),
        e => FilesError::io(path)(e.into()),
    })?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| FilesError::io(path)(e.into()))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(not_regular("it is not a regular file"));
    }
    if stat.st_nlink > 1 {
        return Err(not_regular("it has more than one name (a hard link)"));
    }
    let size = stat.st_size as u64;
    if size > MAX_DATA_SOURCE_BYTES {
        return Err(FilesError::DataSourceTooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    Ok(std::fs::File::from(fd))
}

fn object_path(key: &str) -> Result<ObjectPath, FilesError> {
    ObjectPath::parse(key).map_err(|_| FilesError::InvalidPath(key.to_string()))
}

fn check_name(name: &str) -> Result<(), FilesError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    ok.then_some(())
        .ok_or_else(|| FilesError::InvalidName(name.to_string()))
}
