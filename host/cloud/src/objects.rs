//! Content addresses: every object an agent fetches (a package's manifest, each of its files,
//! a data source) is named by the SHA-256 of its bytes, so the agent can check what it
//! received without trusting the store, the network or the control plane's disk.
//!
//! Two small records in the bucket make addresses servable:
//! - `index/sha256/<hex>.json`: where the bytes of that address are kept and their size;
//! - `grants/<deployment>/<hex>`: the servers of that deployment may read the address (the
//!   file endpoint refuses every other server, even one that knows the digest).

use crate::files::{CloudFiles, FilesError, check_name, object_path};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::PutPayload;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A SHA-256 content address: exactly 64 lowercase hex digits (anything else, a path
/// included, is refused before it reaches the store).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(String);

impl Address {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl FromStr for Address {
    type Err = FilesError;

    fn from_str(s: &str) -> Result<Address, FilesError> {
        let ok = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if ok {
            return Ok(Address(s.to_string()));
        }
        // Named in errors, so a hostile string is cut and escaped.
        let shown: String = s.chars().take(80).collect();
        Err(FilesError::InvalidAddress(format!("{shown:?}")))
    }
}

/// Where the store keeps the bytes of one address.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexEntry {
    key: String,
    size: u64,
}

/// An object opened for streaming: its size and its bytes.
pub struct Object {
    pub size: u64,
    pub bytes: BoxStream<'static, Result<hyper::body::Bytes, FilesError>>,
}

fn index_key(address: &Address) -> String {
    format!("index/sha256/{}.json", address.as_str())
}

fn grant_key(deployment: &str, address: &Address) -> Result<String, FilesError> {
    check_name(deployment)?;
    Ok(format!("grants/{deployment}/{}", address.as_str()))
}

impl CloudFiles {
    /// Records that the bytes of `address` are kept under `key`.
    pub(crate) async fn index(
        &self,
        address: &Address,
        key: &str,
        size: u64,
    ) -> Result<(), FilesError> {
        let entry = IndexEntry {
            key: key.to_string(),
            size,
        };
        let json = serde_json::to_vec(&entry).expect("index entry serializes");
        self.store()
            .put(&object_path(&index_key(address))?, json.into())
            .await?;
        Ok(())
    }

    /// Whether `address` is indexed.
    pub(crate) async fn is_indexed(&self, address: &Address) -> Result<bool, FilesError> {
        exists(self, &index_key(address)).await
    }

    /// Lets the servers of `deployment` read `address` through the file endpoint.
    pub async fn grant(&self, deployment: &str, address: &Address) -> Result<(), FilesError> {
        let key = object_path(&grant_key(deployment, address)?)?;
        self.store().put(&key, PutPayload::default()).await?;
        Ok(())
    }

    /// Whether the servers of `deployment` may read `address`.
    pub async fn is_granted(
        &self,
        deployment: &str,
        address: &Address,
    ) -> Result<bool, FilesError> {
        exists(self, &grant_key(deployment, address)?).await
    }

    /// Opens the object named `address` for streaming; `None` when no such object is stored.
    pub async fn open_object(&self, address: &Address) -> Result<Option<Object>, FilesError> {
        let key = index_key(address);
        let entry: IndexEntry = match self.get_json(&key).await {
            Ok(e) => e,
            Err(FilesError::Store(object_store::Error::NotFound { .. })) => return Ok(None),
            Err(e) => return Err(e),
        };
        let got = match self.store().get(&object_path(&entry.key)?).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(Some(Object {
            size: entry.size,
            bytes: got
                .into_stream()
                .map(|r| r.map_err(FilesError::from))
                .boxed(),
        }))
    }
}

async fn exists(files: &CloudFiles, key: &str) -> Result<bool, FilesError> {
    match files.store().head(&object_path(key)?).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
