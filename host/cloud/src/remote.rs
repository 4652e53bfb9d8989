//! The agent's side of cloud files: objects fetched by content address from the control
//! plane's file endpoint over HTTPS (the control plane's certificate pinned by the caller's
//! TLS configuration), each checked against its sha256 and bounded in size before anything
//! uses it. No path of the control plane's disk is involved.

use crate::beneath::Beneath;
use crate::endpoint::{DEPLOYMENT_HEADER, OBJECTS_ROUTE, SERVER_HEADER};
use crate::files::{FilesError, Manifest, ManifestEntry, PackageRef};
use crate::keys::Secret;
use crate::objects::Address;
use crate::package;
use crate::verify::{self, Expected};
use futures::stream::BoxStream;
use futures::{StreamExt, stream};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, HOST};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Largest package manifest fetched: a path, a digest and a size for at most
/// `MAX_PACKAGE_ENTRIES` files (10,000 × ~300 bytes), with room.
pub const MAX_MANIFEST_BYTES: u64 = 8 << 20;
/// Longest wait for the TCP connection and the TLS handshake to the file endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the response head, or for the next bytes of a body: a stalled transfer
/// fails instead of holding the request forever.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Most bytes of a refusal's text kept for the error.
const MAX_REASON_BYTES: usize = 200;

/// Who the agent is, as the file endpoint checks it.
#[derive(Debug, Clone)]
pub struct AgentIdentity {
    pub deployment: String,
    pub server_id: String,
    pub credential: Secret,
}

/// A package fetched and verified, held until written where it belongs.
#[derive(Debug)]
pub struct FetchedPackage {
    /// Each file as its manifest entry (path relative to the package root, executable bit,
    /// SHA-256 its bytes were checked against) and its bytes.
    files: Vec<(ManifestEntry, Vec<u8>)>,
}

impl FetchedPackage {
    /// Writes every file beneath `dest` (modes 0755 or 0644, no link followed); the paths
    /// written. Not flushed to disk: a server whose machine crashed is replaced, never
    /// resumed, and a process crash loses nothing written (an fsync per file was 4 % of an
    /// agent's launch).
    pub fn write_to(&self, dest: &Beneath) -> Result<Vec<PathBuf>, FilesError> {
        self.write_except(dest, None)
    }

    /// [`FetchedPackage::write_to`] leaving out the file at `left_out` (a path relative to
    /// the package root, as the manifest names it), if any.
    pub fn write_except(
        &self,
        dest: &Beneath,
        left_out: Option<&str>,
    ) -> Result<Vec<PathBuf>, FilesError> {
        let mut written = Vec::with_capacity(self.files.len());
        for (entry, bytes) in &self.files {
            if Some(entry.path.as_str()) == left_out {
                continue;
            }
            let (path, executable) = (&entry.path, entry.executable);
            let mode = if executable { 0o755 } else { 0o644 };
            let path = dest
                .write_file_unsynced(Path::new(path), bytes, mode)
                .map_err(FilesError::Beneath)?;
            written.push(path);
        }
        Ok(written)
    }

    /// The SHA-256 (hex) the file at `path` was verified against as it arrived.
    pub fn sha256_of(&self, path: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|(e, _)| e.path == path)
            .map(|(e, _)| e.sha256.as_str())
    }
}

/// The control plane's file endpoint, as one agent reaches it.
#[derive(Clone)]
pub struct RemoteFiles {
    host: String,
    port: u16,
    authority: String,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    identity: AgentIdentity,
}

impl std::fmt::Debug for RemoteFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteFiles")
            .field("endpoint", &self.authority)
            .field("identity", &self.identity)
            .finish()
    }
}

impl RemoteFiles {
    /// The endpoint at `base_url` (`https://host:port`), reached with `tls` (which pins the
    /// control plane's certificate).
    pub fn new(
        base_url: &str,
        tls: Arc<rustls::ClientConfig>,
        identity: AgentIdentity,
    ) -> Result<RemoteFiles, FilesError> {
        let bad = |message: &str| FilesError::Setting {
            setting: base_url.to_string(),
            message: message.to_string(),
        };
        let uri: Uri = base_url
            .parse()
            .map_err(|_| bad("not a URL of the form https://host:port"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("the file endpoint is reached over https only"));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| bad("the host is neither a name nor an address"))?;
        Ok(RemoteFiles {
            authority: uri
                .authority()
                .map(|a| a.to_string())
                .unwrap_or_else(|| host.clone()),
            host,
            port,
            server_name,
            tls: TlsConnector::from(tls),
            identity,
        })
    }

    /// One connection to the endpoint; several requests may follow on it, one at a time.
    async fn connect(&self, object: &str) -> Result<SendRequest<Empty<Bytes>>, FilesError> {
        let failed = |message: String| FilesError::Remote {
            object: object.to_string(),
            message,
        };
        let connect = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| failed(format!("connecting to {}: {e}", self.authority)))?;
            let _ = tcp.set_nodelay(true);
            self.tls
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| failed(format!("TLS with {}: {e}", self.authority)))
        };
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| {
                failed(format!(
                    "no connection to {} within {CONNECT_TIMEOUT:?}",
                    self.authority
                ))
            })??;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| failed(format!("HTTP with {}: {e}", self.authority)))?;
        // Ends by itself once `sender` is dropped and no request is in flight.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// The body of `address`, checked to be at most `expected.size` bytes by its length.
    async fn get(
        &self,
        sender: &mut SendRequest<Empty<Bytes>>,
        address: &Address,
        expected: &Expected,
    ) -> Result<BoxStream<'static, Result<Bytes, FilesError>>, FilesError> {
        let object = expected.object.clone();
        let failed = |message: String| FilesError::Remote {
            object: object.clone(),
            message,
        };
        let request = Request::get(format!("{OBJECTS_ROUTE}{}", address.as_str()))
            .header(HOST, &self.authority)
            .header(
                AUTHORIZATION,
                format!("Bearer {}", self.identity.credential.expose()),
            )
            .header(DEPLOYMENT_HEADER, &self.identity.deployment)
            .header(SERVER_HEADER, &self.identity.server_id)
            .body(Empty::new())
            .map_err(|e| failed(format!("building the request: {e}")))?;
        let exchange = async {
            sender
                .ready()
                .await
                .map_err(|e| failed(format!("connection lost: {e}")))?;
            sender
                .send_request(request)
                .await
                .map_err(|e| failed(format!("request failed: {e}")))
        };
        let response = tokio::time::timeout(READ_TIMEOUT, exchange)
            .await
            .map_err(|_| failed(format!("no answer within {READ_TIMEOUT:?}")))??;
        if response.status() != StatusCode::OK {
            return Err(refused(&expected.object, response).await);
        }
        let length = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if length.is_some_and(|n| n > expected.size) {
            return Err(FilesError::ObjectTooLarge {
                object: expected.object.clone(),
                limit: expected.size,
            });
        }
        Ok(body_stream(response.into_body(), expected.object.clone()))
    }

    /// Fetches and verifies `package`: its manifest by address, then every file it lists,
    /// each against its sha256, and the whole against the package digest and file count.
    pub async fn fetch_package(&self, package: &PackageRef) -> Result<FetchedPackage, FilesError> {
        let label = format!("package {} manifest", package.name);
        let address: Address = package.manifest.parse()?;
        let mut sender = self.connect(&label).await?;
        let manifest = self.manifest(&mut sender, &address, &label).await?;
        check_manifest(&manifest, package)?;
        let mut files = Vec::with_capacity(manifest.files.len());
        for entry in manifest.files {
            let expected = Expected {
                object: format!("package {} file {}", package.name, entry.path),
                sha256: entry.sha256.clone(),
                size: entry.size,
            };
            let body = self
                .get(&mut sender, &entry.sha256.parse()?, &expected)
                .await?;
            let bytes = verify::collect(body, &expected).await?;
            files.push((entry, bytes));
        }
        // Hashed again as a whole: the manifest's address is only what the control plane found
        // in its store, and a manifest planted there must not bring other files in.
        let actual = package::digest(
            files
                .iter()
                .map(|(e, b)| (e.path.as_str(), e.executable, b.as_slice())),
        );
        if actual != package.digest {
            return Err(FilesError::DigestMismatch {
                name: package.name.clone(),
                expected: package.digest.clone(),
                actual,
            });
        }
        Ok(FetchedPackage { files })
    }

    /// The manifest at `address`, verified and parsed.
    async fn manifest(
        &self,
        sender: &mut SendRequest<Empty<Bytes>>,
        address: &Address,
        label: &str,
    ) -> Result<Manifest, FilesError> {
        // The size is not known before the manifest arrives: bounded, then checked by digest.
        let bound = Expected {
            object: label.to_string(),
            sha256: address.as_str().to_string(),
            size: MAX_MANIFEST_BYTES,
        };
        let body = self.get(sender, address, &bound).await?;
        let bytes = verify::collect_bounded(body, &bound).await?;
        crate::files::parse_json(label, &bytes)
    }

    /// Streams the object `expected` to `dir/rel` (mode 0600): it appears there only once its
    /// bytes match; a large data source is never held in memory.
    pub async fn fetch_file(
        &self,
        expected: &Expected,
        dir: &Beneath,
        rel: &Path,
    ) -> Result<PathBuf, FilesError> {
        let address: Address = expected.sha256.parse()?;
        let mut sender = self.connect(&expected.object).await?;
        let body = self.get(&mut sender, &address, expected).await?;
        verify::stream_to_file(body, expected, dir, rel).await
    }
}

/// A manifest must describe exactly the package asked for, within the package limits, with
/// plain relative paths.
fn check_manifest(manifest: &Manifest, package: &PackageRef) -> Result<(), FilesError> {
    let wrong = |what: String| FilesError::Remote {
        object: format!("package {} manifest", package.name),
        message: what,
    };
    if manifest.name != package.name || manifest.digest != package.digest {
        return Err(wrong("it describes another package".into()));
    }
    if manifest.files.len() != package.files
        || manifest.files.len() as u64 > package::MAX_PACKAGE_ENTRIES
    {
        return Err(wrong(format!(
            "it lists {} files, not {}",
            manifest.files.len(),
            package.files
        )));
    }
    let total: u64 = manifest.files.iter().map(|f| f.size).sum();
    if total > package::MAX_PACKAGE_BYTES {
        return Err(wrong(format!(
            "its files add up to more than {} bytes",
            package::MAX_PACKAGE_BYTES
        )));
    }
    if let Some(bad) = manifest
        .files
        .iter()
        .find(|f| !package::safe_relative(&f.path))
    {
        return Err(FilesError::InvalidPath(bad.path.clone()));
    }
    Ok(())
}

/// Why the endpoint refused, with the start of its text (never trusted beyond that).
async fn refused(object: &str, response: Response<Incoming>) -> FilesError {
    let status = response.status().as_u16();
    let body = tokio::time::timeout(READ_TIMEOUT, async {
        let mut body = http_body_util::Limited::new(response.into_body(), MAX_REASON_BYTES);
        let mut text = Vec::new();
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                text.extend_from_slice(&data);
            }
        }
        text
    })
    .await
    .unwrap_or_default();
    let reason: String = String::from_utf8_lossy(&body)
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON_BYTES)
        .collect();
    FilesError::Refused {
        object: object.to_string(),
        status,
        reason,
    }
}

/// The data of a response body, each wait for more bounded by [`READ_TIMEOUT`].
fn body_stream(body: Incoming, object: String) -> BoxStream<'static, Result<Bytes, FilesError>> {
    stream::unfold(Some(body), move |body| {
        let object = object.clone();
        async move {
            let mut body = body?;
            loop {
                let failed = |message: String| {
                    Some((
                        Err(FilesError::Remote {
                            object: object.clone(),
                            message,
                        }),
                        None,
                    ))
                };
                match tokio::time::timeout(READ_TIMEOUT, body.frame()).await {
                    Err(_) => return failed(format!("transfer stalled for {READ_TIMEOUT:?}")),
                    Ok(None) => return None,
                    Ok(Some(Err(e))) => return failed(format!("transfer failed: {e}")),
                    Ok(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            return Some((Ok(data), Some(body)));
                        }
                    }
                }
            }
        }
    })
    .boxed()
}
