//! A cloud driver's one capability: outgoing HTTP to the origins its operator granted.
//!
//! wasmtime-wasi-http hands every request the guest sends to [`OriginGate::send_request`]
//! (its `WasiHttpHooks` hook) instead of sending it itself. The gate refuses any scheme, host
//! or port not in the grant with `http-request-denied` (so a redirect elsewhere is refused
//! too: the guest must send a new request to follow it), caps the number of requests per
//! call, connects only to the granted origin, bounds connect and first-byte time, the
//! response head and the response body, and records each refusal so that the host can name
//! it, whatever the guest reports.

use crate::output::Redactor;
use bytes::Bytes;
use http::uri::Scheme;
use http_body_util::BodyExt;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Largest response body a driver may read: an EC2 answer is a few KiB, a page of
/// `DescribeInstances` rarely more than a few hundred; the bytes sit in host memory until the
/// guest reads them.
pub const MAX_RESPONSE_BYTES: u64 = 4 << 20;
/// Largest response head (status line and headers) hyper buffers before it gives up.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 64 << 10;
/// Requests one driver call may send: a launch is a handful, a loop that hammers the cloud's
/// API (or probes the grant) stops here.
pub const MAX_REQUESTS_PER_CALL: u32 = 32;
/// Longest wait for a TCP (and TLS) connection to a granted origin.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the response head once the request is sent; the call's own time limit
/// bounds the body.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);
/// Where the system's trusted roots are read from for `https` origins (Debian's bundle).
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// An origin a driver may reach: scheme, host and port, as in `https://ec2.local:4566`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    https: bool,
    /// Lowercase; an IPv6 literal keeps its brackets.
    host: String,
    port: u16,
}

impl Origin {
    fn of(scheme: &Scheme, host: &str, port: Option<u16>) -> Option<Origin> {
        let https = match scheme.as_str() {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        let default = if https { 443 } else { 80 };
        Some(Origin {
            https,
            host: host.to_ascii_lowercase(),
            port: port.unwrap_or(default),
        })
    }

    /// The origin a request's URI names, if it names an http(s) one.
    fn of_uri(uri: &http::Uri) -> Option<Origin> {
        let authority = uri.authority()?;
        if authority.as_str().contains('@') {
            return None;
        }
        Origin::of(uri.scheme()?, authority.host(), authority.port_u16())
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

impl std::str::FromStr for Origin {
    type Err = String;

    /// `http://host:port` or `https://host[:port]`: a scheme, a host and at most a port,
    /// nothing else (no user, path, query or fragment).
    fn from_str(text: &str) -> Result<Origin, String> {
        let bad = |why: &str| {
            format!(
                "`{}` is not an origin ({why}); write e.g. `https://ec2.us-east-1.amazonaws.com` \
                 or `http://127.0.0.1:4566`",
                text.escape_default()
            )
        };
        let uri: http::Uri = text.parse().map_err(|_| bad("not a URI"))?;
        let scheme = uri.scheme().ok_or_else(|| bad("no scheme"))?;
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("it names a user"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() || text.contains('#') {
            return Err(bad("it has a path, query or fragment"));
        }
        if authority.host().is_empty() {
            return Err(bad("no host"));
        }
        Origin::of(scheme, authority.host(), authority.port_u16())
            .ok_or_else(|| bad("the scheme must be http or https"))
    }
}

/// What the gate refused during one call, in order; the host names these in its errors.
#[derive(Debug, Clone, Default)]
pub struct Refusals(Arc<Mutex<Vec<String>>>);

/// At most this many refusals are kept per call; a guest looping over refused origins gets
/// the first ones named.
const MAX_REFUSALS_KEPT: usize = 8;
/// Longest refusal kept or logged: a guest chooses the URL it names.
const MAX_REFUSAL_BYTES: usize = 512;

impl Refusals {
    fn note(&self, what: String) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if all.len() < MAX_REFUSALS_KEPT {
            all.push(what);
        }
    }

    /// Every refusal noted so far.
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The `WasiHttpHooks` of one driver call.
pub(crate) struct OriginGate {
    granted: Arc<[Origin]>,
    tls: Option<Arc<rustls::ClientConfig>>,
    sent: u32,
    /// The call's secrets: a guest may put one in the URL it is refused.
    redactor: Redactor,
    pub refusals: Refusals,
}

impl OriginGate {
    /// A gate for `granted`; `tls` verifies `https` origins (None refuses them).
    pub fn new(
        granted: Arc<[Origin]>,
        tls: Option<Arc<rustls::ClientConfig>>,
        redactor: Redactor,
    ) -> OriginGate {
        OriginGate {
            granted,
            tls,
            sent: 0,
            redactor,
            refusals: Refusals::default(),
        }
    }

    /// The granted origin `req` goes to, or why it may not go.
    fn admit(&mut self, req: &http::Request<WasiBody>) -> Result<Origin, String> {
        let shown = || req.uri().to_string().escape_default().to_string();
        let Some(origin) = Origin::of_uri(req.uri()) else {
            return Err(format!("{}: not an http or https URL", shown()));
        };
        if !self.granted.contains(&origin) {
            let granted: Vec<String> = self.granted.iter().map(Origin::to_string).collect();
            return Err(format!(
                "{origin} is not granted (granted: {})",
                if granted.is_empty() {
                    "none".to_string()
                } else {
                    granted.join(", ")
                }
            ));
        }
        if origin.https && self.tls.is_none() {
            return Err(format!(
                "{origin}: no trusted roots ({SYSTEM_ROOTS}) to verify it"
            ));
        }
        if self.sent >= MAX_REQUESTS_PER_CALL {
            return Err(format!(
                "{origin}: more than {MAX_REQUESTS_PER_CALL} requests in one call"
            ));
        }
        self.sent += 1;
        Ok(origin)
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for OriginGate {
    fn is_supported_scheme(&mut self, scheme: &Scheme) -> bool {
        *scheme == Scheme::HTTP || *scheme == Scheme::HTTPS
    }

    /// A request without a scheme is refused rather than guessed.
    fn default_scheme(&mut self) -> Option<Scheme> {
        None
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        let origin = match self.admit(&request) {
            Ok(origin) => origin,
            Err(why) => {
                let why = self.redactor.bounded(why, MAX_REFUSAL_BYTES);
                tracing::warn!(refused = %why, "cloud driver request refused");
                self.refusals.note(why);
                return Box::new(async { Err(Error::HttpRequestDenied) });
            }
        };
        let tls = self.tls.clone().filter(|_| origin.https);
        Box::new(send(request, origin, tls, options))
    }
}

/// The system's trusted roots as a client configuration, or None when they cannot be read.
pub(crate) fn system_tls() -> Option<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(SYSTEM_ROOTS).ok()?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return None;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Some(Arc::new(config))
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Sends `req` to `origin` over HTTP/1.1 (TLS when `tls` is given), within the gate's time
/// and size bounds (shortened by the guest's own request options).
async fn send(
    mut req: http::Request<WasiBody>,
    origin: Origin,
    tls: Option<Arc<rustls::ClientConfig>>,
    options: Option<RequestOptions>,
) -> Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
> {
    let shorter = |asked: Option<Duration>, max: Duration| asked.map_or(max, |a| a.min(max));
    let connect_timeout = shorter(options.and_then(|o| o.connect_timeout), CONNECT_TIMEOUT);
    let first_byte = shorter(
        options.and_then(|o| o.first_byte_timeout),
        FIRST_BYTE_TIMEOUT,
    );
    let stream = connect(&origin, tls, connect_timeout).await?;
    let mut builder = hyper::client::conn::http1::Builder::new();
    builder.max_buf_size(MAX_RESPONSE_HEAD_BYTES);
    let handshake = builder.handshake(TokioIo::new(stream));
    let (mut sender, conn) = tokio::time::timeout(connect_timeout, handshake)
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
    // The connection is driven by its own task, aborted when the call's store drops it.
    let conn = wasmtime_wasi::runtime::spawn(conn);
    // Origin-form on the wire: the scheme and authority were checked, the path goes as is.
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    *req.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    let host = http::HeaderValue::from_str(&host_header(&origin))
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    req.headers_mut().insert(http::header::HOST, host);
    let response = tokio::time::timeout(first_byte, sender.send_request(req))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)??;
    if let Some(length) = content_length(response.headers())
        && length > MAX_RESPONSE_BYTES
    {
        return Err(Error::HttpResponseBodySize(Some(length)));
    }
    let response = response.map(|body| {
        Capped {
            inner: body.map_err(Error::from).boxed_unsync(),
            left: MAX_RESPONSE_BYTES,
        }
        .boxed_unsync()
    });
    let io = async move {
        match conn.await {
            Ok(()) => Ok(()),
            Err(e) => Err(Error::from(e)),
        }
    };
    Ok((response, Box::new(io)))
}

/// A TCP connection to `origin`, wrapped in TLS when `tls` is given.
async fn connect(
    origin: &Origin,
    tls: Option<Arc<rustls::ClientConfig>>,
    limit: Duration,
) -> Result<Box<dyn Stream>, Error> {
    let host = origin.host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::time::timeout(limit, TcpStream::connect((host, origin.port)))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Connect)?;
    let Some(config) = tls else {
        return Ok(Box::new(tcp));
    };
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|_| Error::TlsCertificateError)?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = tokio::time::timeout(limit, connector.connect(name, tcp))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Tls)?;
    Ok(Box::new(stream))
}

/// The `Host` header for `origin`: the port only when it is not the scheme's default.
fn host_header(origin: &Origin) -> String {
    let default = if origin.https { 443 } else { 80 };
    if origin.port == default {
        origin.host.clone()
    } else {
        format!("{}:{}", origin.host, origin.port)
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// A response body that fails with `http-response-body-size` once it passed its limit.
struct Capped {
    inner: WasiBody,
    left: u64,
}

impl http_body::Body for Capped {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            let n = data.len() as u64;
            if n > self.left {
                self.left = 0;
                return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(
                    MAX_RESPONSE_BYTES,
                )))));
            }
            self.left -= n;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_to_scheme_host_and_port_only() {
        let o: Origin = "HTTP://LocalHost:4566".parse().unwrap();
        assert_eq!(o.to_string(), "http://localhost:4566");
        let o: Origin = "https://ec2.us-east-1.amazonaws.com/".parse().unwrap();
        assert_eq!(o.to_string(), "https://ec2.us-east-1.amazonaws.com:443");
        for bad in [
            "ftp://127.0.0.1:21",
            "127.0.0.1:4566",
            "http://user@127.0.0.1:4566",
            "http://127.0.0.1:4566/path",
            "http://127.0.0.1:4566/?q",
            "http://127.0.0.1:4566#f",
            "http://",
            "",
        ] {
            let err = bad.parse::<Origin>().unwrap_err();
            assert!(err.contains("is not an origin"), "{bad}: {err}");
        }
    }

    fn request(uri: &str) -> http::Request<WasiBody> {
        let body = http_body_util::Empty::<Bytes>::new()
            .map_err(|_| unreachable!())
            .boxed_unsync();
        http::Request::builder().uri(uri).body(body).unwrap()
    }

    #[test]
    fn only_granted_origins_are_admitted_and_requests_are_counted() {
        let granted: Arc<[Origin]> = Arc::from(vec!["http://127.0.0.1:4566".parse().unwrap()]);
        let mut gate = OriginGate::new(granted, None, Redactor::default());
        assert!(gate.admit(&request("http://127.0.0.1:4566/x?y=1")).is_ok());
        for other in [
            "http://127.0.0.1:4567/",
            "https://127.0.0.1:4566/",
            "http://127.0.0.2:4566/",
            "http://localhost:4566/",
            "http://127.0.0.1/",
        ] {
            let why = gate.admit(&request(other)).unwrap_err();
            assert!(
                why.contains("is not granted (granted: http://127.0.0.1:4566)"),
                "{why}"
            );
        }
        for _ in 1..MAX_REQUESTS_PER_CALL {
            gate.admit(&request("http://127.0.0.1:4566/")).unwrap();
        }
        let why = gate.admit(&request("http://127.0.0.1:4566/")).unwrap_err();
        assert!(why.contains("more than 32 requests"), "{why}");
    }

    #[test]
    fn a_granted_https_origin_without_roots_is_refused() {
        let granted: Arc<[Origin]> = Arc::from(vec!["https://ec2.local".parse().unwrap()]);
        let mut gate = OriginGate::new(granted, None, Redactor::default());
        let why = gate.admit(&request("https://ec2.local/")).unwrap_err();
        assert!(why.contains("no trusted roots"), "{why}");
    }
}
