//! Checking received bytes against their content address before anything uses them: sizes
//! are bounded as bytes arrive, and a digest mismatch names the object and leaves nothing
//! behind.

use crate::beneath::Beneath;
use crate::files::FilesError;
use futures::StreamExt;
use futures::stream::BoxStream;
use hyper::body::Bytes;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// What an object must be: its name for messages, its digest and its exact size.
#[derive(Debug, Clone)]
pub struct Expected {
    pub object: String,
    pub sha256: String,
    pub size: u64,
}

impl Expected {
    fn too_large(&self) -> FilesError {
        FilesError::ObjectTooLarge {
            object: self.object.clone(),
            limit: self.size,
        }
    }

    /// Compares what arrived with what was expected (the size only when `exact`).
    fn check(&self, hasher: Sha256, size: u64, exact: bool) -> Result<(), FilesError> {
        let actual = hex::encode(hasher.finalize());
        if actual != self.sha256 || (exact && size != self.size) {
            return Err(FilesError::Mismatch {
                object: self.object.clone(),
                expected: self.sha256.clone(),
                actual,
                size: self.size,
            });
        }
        Ok(())
    }
}

/// The whole object in memory, once its bytes match (never more than `expected.size` are
/// read).
pub async fn collect(
    bytes: BoxStream<'static, Result<Bytes, FilesError>>,
    expected: &Expected,
) -> Result<Vec<u8>, FilesError> {
    collect_checked(bytes, expected, true).await
}

/// Like [`collect`] for an object whose size is not known beforehand: `bound.size` is only
/// its largest size, and the digest alone is checked.
pub async fn collect_bounded(
    bytes: BoxStream<'static, Result<Bytes, FilesError>>,
    bound: &Expected,
) -> Result<Vec<u8>, FilesError> {
    collect_checked(bytes, bound, false).await
}

async fn collect_checked(
    mut bytes: BoxStream<'static, Result<Bytes, FilesError>>,
    expected: &Expected,
    exact: bool,
) -> Result<Vec<u8>, FilesError> {
    let mut out = Vec::with_capacity(expected.size.min(1 << 20) as usize);
    let mut hasher = Sha256::new();
    while let Some(chunk) = bytes.next().await {
        let chunk = chunk?;
        if out.len() as u64 + chunk.len() as u64 > expected.size {
            return Err(expected.too_large());
        }
        hasher.update(&chunk);
        out.extend_from_slice(&chunk);
    }
    expected.check(hasher, out.len() as u64, exact)?;
    Ok(out)
}

/// Streams the object to `dir/rel` (mode 0600, no link followed): it appears there only once
/// its bytes match; otherwise the partial file is removed.
pub async fn stream_to_file(
    mut bytes: BoxStream<'static, Result<Bytes, FilesError>>,
    expected: &Expected,
    dir: &Beneath,
    rel: &Path,
) -> Result<PathBuf, FilesError> {
    let mut new = dir.new_file(rel, 0o600).map_err(FilesError::Beneath)?;
    let target = new.target().to_path_buf();
    let mut out =
        tokio::fs::File::from_std(new.file().try_clone().map_err(FilesError::io(&target))?);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = bytes.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        if size > expected.size {
            return Err(expected.too_large());
        }
        hasher.update(&chunk);
        out.write_all(&chunk)
            .await
            .map_err(FilesError::io(&target))?;
    }
    out.flush().await.map_err(FilesError::io(&target))?;
    drop(out);
    expected.check(hasher, size, true)?;
    tokio::task::spawn_blocking(move || new.commit())
        .await
        .map_err(|e| FilesError::Task(e.to_string()))?
        .map_err(FilesError::Beneath)
}
