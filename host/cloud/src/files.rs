//! Cloud files: service packages and data sources in object storage.
//!
//! Layout in the bucket:
//! - `packages/<name>/<digest>/<relative path>`: every file of a package;
//! - `packages/<name>/<digest>/.stratus-manifest.json`: its file list with per-file SHA-256
//!   and executable bits (object stores keep no file modes), written last so that its
//!   presence means the upload is complete;
//! - `data/sha256/<hex>` and `data-meta/<key>.json`: a data source, kept by content address,
//!   and the reference (digest, size) its key names now;
//! - `index/…` and `grants/…`: see the `objects` module (what the file endpoint serves, and
//!   to whom).

use crate::beneath::Beneath;
use crate::objects::Address;
use crate::package::{self, Contents, PackageFile};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// A package uploaded to cloud files; enough to fetch and verify it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRef {
    pub name: String,
    /// SHA-256 over the sorted (path, executable, content) triples.
    pub digest: String,
    pub files: usize,
    /// SHA-256 of the package's manifest object: the content address an agent fetches first
    /// (empty in references journaled before manifests were addressed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub manifest: String,
}

/// A single uploaded file (e.g. a data source).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    pub key: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ManifestEntry {
    pub(crate) path: String,
    pub(crate) size: u64,
    pub(crate) sha256: String,
    pub(crate) executable: bool,
}

/// A package's file list: the object an agent fetches first, by its content address.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) name: String,
    pub(crate) digest: String,
    pub(crate) files: Vec<ManifestEntry>,
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
    #[error("{0} is not a content address: expected 64 lowercase hex digits of a sha256")]
    InvalidAddress(String),
    #[error("object {object}: {message}")]
    Remote { object: String, message: String },
    #[error("object {object}: the file endpoint refused it ({status}): {reason}")]
    Refused {
        object: String,
        status: u16,
        reason: String,
    },
    #[error("object {object} is larger than {limit} bytes; refused")]
    ObjectTooLarge { object: String, limit: u64 },
    #[error(
        "object {object} failed verification: expected sha256:{expected} ({size} bytes), received bytes hash to sha256:{actual}; nothing was written"
    )]
    Mismatch {
        object: String,
        expected: String,
        actual: String,
        size: u64,
    },
    #[error("cloud files setting {setting:?}: {message}")]
    Setting { setting: String, message: String },
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
    /// The directory behind a local store (packages are read from it in place).
    local: Option<PathBuf>,
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
        let store = Arc::new(LocalFileSystem::new_with_prefix(dir)?);
        Ok(CloudFiles {
            store,
            local: Some(dir.to_path_buf()),
        })
    }

    /// Cloud files on any `object_store` backend (e.g. an S3 bucket, see
    /// [`CloudFiles::from_setting`]).
    pub fn new(store: Arc<dyn ObjectStore>) -> CloudFiles {
        CloudFiles { store, local: None }
    }

    pub(crate) fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The directory behind a local store; `None` for a remote one (S3).
    pub fn local_dir(&self) -> Option<&Path> {
        self.local.as_deref()
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
        let manifest_key = format!("{prefix}/{MANIFEST}");
        let mut package = PackageRef {
            name: name.to_string(),
            digest: digest.clone(),
            files: files.len(),
            manifest: String::new(),
        };
        if let Some(address) = self.uploaded_manifest(&manifest_key).await? {
            package.manifest = address.as_str().to_string();
            return Ok(package);
        }
        let mut entries = Vec::with_capacity(files.len());
        for PackageFile {
            path,
            bytes,
            executable,
        } in files
        {
            let sha256 = package::sha256(&bytes);
            let size = bytes.len() as u64;
            let key = format!("{prefix}/{path}");
            self.store
                .put(&object_path(&key)?, PutPayload::from(bytes))
                .await?;
            self.index(&sha256.parse()?, &key, size).await?;
            entries.push(ManifestEntry {
                size,
                sha256,
                executable,
                path: path.clone(),
            });
        }
        let manifest = Manifest {
            name: name.to_string(),
            digest,
            files: entries,
        };
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
        let address: Address = package::sha256(&json).parse()?;
        // Indexed before it is written: a manifest's presence means everything is servable.
        self.index(&address, &manifest_key, json.len() as u64)
            .await?;
        self.store
            .put(&object_path(&manifest_key)?, json.into())
            .await?;
        package.manifest = address.as_str().to_string();
        tracing::info!(package = name, digest = %package.digest, files = package.files, "package uploaded");
        Ok(package)
    }

    /// The address of a package's manifest when the package is uploaded already; one uploaded
    /// before addresses existed is indexed now.
    async fn uploaded_manifest(&self, manifest_key: &str) -> Result<Option<Address>, FilesError> {
        let json = match self.store.get(&object_path(manifest_key)?).await {
            Ok(got) => got.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let address: Address = package::sha256(&json).parse()?;
        if !self.is_indexed(&address).await? {
            let manifest: Manifest = parse_json(manifest_key, &json)?;
            let prefix = manifest_key.trim_end_matches(MANIFEST);
            for e in &manifest.files {
                let key = format!("{prefix}{}", e.path);
                self.index(&e.sha256.parse()?, &key, e.size).await?;
            }
            self.index(&address, manifest_key, json.len() as u64)
                .await?;
        }
        Ok(Some(address))
    }

    /// The address of `package`'s manifest (from the reference, or read from the store for a
    /// reference journaled before manifests were addressed).
    pub async fn manifest_address(&self, package: &PackageRef) -> Result<Address, FilesError> {
        if !package.manifest.is_empty() {
            return package.manifest.parse();
        }
        check_name(&package.name)?;
        let key = format!("packages/{}/{}/{MANIFEST}", package.name, package.digest);
        self.uploaded_manifest(&key)
            .await?
            .ok_or_else(|| FilesError::Remote {
                object: key,
                message: "not in cloud files".into(),
            })
    }

    /// A directory holding `package`'s files on this machine (for the control plane's
    /// compile): the store's own directory when it is local, else a verified copy fetched
    /// once into `cache`.
    pub async fn package_dir(
        &self,
        package: &PackageRef,
        cache: &Path,
    ) -> Result<PathBuf, FilesError> {
        check_name(&package.name)?;
        if let Some(local) = &self.local {
            return Ok(local
                .join("packages")
                .join(&package.name)
                .join(&package.digest));
        }
        let dir = cache.join(&package.name).join(&package.digest);
        let done = cache
            .join(&package.name)
            .join(format!("{}.complete", package.digest));
        if done.exists() {
            return Ok(dir);
        }
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(FilesError::io(&dir)(e));
            }
            _ => {}
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(FilesError::io(&dir))?;
        let beneath = Beneath::open(&dir).map_err(FilesError::Beneath)?;
        self.fetch_package(package, &beneath).await?;
        std::fs::write(&done, b"").map_err(FilesError::io(&done))?;
        Ok(dir)
    }

    /// Lets the servers of `deployment` fetch `package`: its manifest and every file.
    pub async fn grant_package(
        &self,
        deployment: &str,
        package: &PackageRef,
    ) -> Result<(), FilesError> {
        let address = self.manifest_address(package).await?;
        let key = format!("packages/{}/{}/{MANIFEST}", package.name, package.digest);
        let manifest: Manifest = self.get_json(&key).await?;
        for e in &manifest.files {
            self.grant(deployment, &e.sha256.parse()?).await?;
        }
        self.grant(deployment, &address).await
    }

    /// Lets the servers of `deployment` fetch the data source `file`.
    pub async fn grant_file(&self, deployment: &str, file: &FileRef) -> Result<(), FilesError> {
        self.grant(deployment, &file.sha256.parse()?).await
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

    /// Uploads one file (e.g. `datasource.sql`) under `key`, kept by its content address: it
    /// is hashed first (the same content is stored once), then streamed in parts of
    /// [`DATA_SOURCE_CHUNK_BYTES`] and hashed again on the way, so its size costs no memory and
    /// a file that changed in between is never stored under the wrong address.
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<FileRef, FilesError> {
        if !package::safe_relative(key) {
            return Err(FilesError::InvalidPath(key.to_string()));
        }
        let src = path.to_path_buf();
        let (file, sha256, size) = tokio::task::spawn_blocking(move || hash_data_source(&src))
            .await
            .map_err(|e| FilesError::Task(e.to_string()))??;
        let address: Address = sha256.parse()?;
        let object = format!("data/sha256/{sha256}");
        if !self.is_indexed(&address).await? {
            self.upload(&object, file, path, &sha256).await?;
            self.index(&address, &object, size).await?;
        }
        let file = FileRef {
            key: key.to_string(),
            sha256,
            size,
        };
        let meta = serde_json::to_vec(&file).expect("file ref serializes");
        self.store
            .put(&object_path(&format!("data-meta/{key}.json"))?, meta.into())
            .await?;
        Ok(file)
    }

    /// Streams `file` (read from its start) to `object`; completed only if its bytes still
    /// hash to `sha256`.
    async fn upload(
        &self,
        object: &str,
        file: std::fs::File,
        path: &Path,
        sha256: &str,
    ) -> Result<(), FilesError> {
        let mut upload = WriteMultipart::new_with_chunk_size(
            self.store.put_multipart(&object_path(object)?).await?,
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
        let actual = hex::encode(hasher.finalize());
        if actual != sha256 {
            let _ = upload.abort().await;
            return Err(FilesError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other("the file changed while it was uploaded"),
            });
        }
        upload.finish().await?;
        Ok(())
    }

    /// The reference (digest, size) of the file uploaded under `key`.
    pub async fn file_ref(&self, key: &str) -> Result<FileRef, FilesError> {
        if !package::safe_relative(key) {
            return Err(FilesError::InvalidPath(key.to_string()));
        }
        self.get_json(&format!("data-meta/{key}.json")).await
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
        let file = self.file_ref(key).await?;
        let address: Address = file.sha256.parse()?;
        let object = self
            .open_object(&address)
            .await?
            .ok_or_else(|| FilesError::Remote {
                object: format!("{key} ({address})"),
                message: "not in cloud files".into(),
            })?;
        let expected = crate::verify::Expected {
            object: key.to_string(),
            sha256: file.sha256.clone(),
            size: file.size,
        };
        crate::verify::stream_to_file(object.bytes, &expected, dir, rel).await?;
        Ok(file)
    }

    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<T, FilesError> {
        let bytes = self.store.get(&object_path(key)?).await?.bytes().await?;
        parse_json(key, &bytes)
    }
}

/// Largest data source uploaded. Nothing holds it in memory (it is streamed to object
/// storage and to the server), so the bound only keeps a mistaken path (a disk image) from
/// filling the bucket and every server's disk: 64 GiB.
pub const MAX_DATA_SOURCE_BYTES: u64 = 64 << 30;

/// Size of each part a data source is read, uploaded and hashed in; two are in flight at most.
pub const DATA_SOURCE_CHUNK_BYTES: usize = 8 << 20;

/// Opens a data source (see [`open_data_source`]) and hashes it; the file is returned at its
/// start, for the upload.
fn hash_data_source(path: &Path) -> Result<(std::fs::File, String, u64), FilesError> {
    use std::io::{Read, Seek};
    let mut file = open_data_source(path)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(FilesError::io(path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > MAX_DATA_SOURCE_BYTES {
            return Err(FilesError::DataSourceTooLarge {
                path: path.to_path_buf(),
                size,
            });
        }
        hasher.update(&buf[..n]);
    }
    file.rewind().map_err(FilesError::io(path))?;
    Ok((file, hex::encode(hasher.finalize()), size))
}

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

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    key: &str,
    bytes: &[u8],
) -> Result<T, FilesError> {
    serde_json::from_slice(bytes).map_err(|source| FilesError::Metadata {
        key: key.to_string(),
        source,
    })
}

pub(crate) fn object_path(key: &str) -> Result<ObjectPath, FilesError> {
    ObjectPath::parse(key).map_err(|_| FilesError::InvalidPath(key.to_string()))
}

pub(crate) fn check_name(name: &str) -> Result<(), FilesError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    ok.then_some(())
        .ok_or_else(|| FilesError::InvalidName(name.to_string()))
}
