//! The file endpoint: the control plane serves cloud files to its agents over HTTPS, one
//! route, `GET /v1/objects/sha256/<hex>`, streamed from the store.
//!
//! Anyone who can reach the port may try, so before proving who it is a peer gets little: a
//! place among [`MAX_CONNECTIONS`], [`HANDSHAKE_TIMEOUT`] for its TLS handshake and
//! [`HEADER_TIMEOUT`] for its request head. An agent proves who it is with its server's
//! credential (`Authorization: Bearer …` plus the [`DEPLOYMENT_HEADER`] and
//! [`SERVER_HEADER`] it was launched as), checked by an [`Authorize`] (the dispatcher, which
//! forgets a terminated server's credential); it then reads only addresses granted to its
//! deployment. Every refusal looks the same whatever the reason, and nothing the peer sent is
//! echoed.

use crate::files::CloudFiles;
use crate::keys::Secret;
use crate::objects::Address;
use crate::peer_limit::{PeerLimit, PeerTicket};
use futures::TryStreamExt;
use futures::future::BoxFuture;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// The route, followed by 64 lowercase hex digits.
pub const OBJECTS_ROUTE: &str = "/v1/objects/sha256/";
/// The deployment an agent was launched in.
pub const DEPLOYMENT_HEADER: &str = "x-stratus-deployment";
/// The server an agent runs as.
pub const SERVER_HEADER: &str = "x-stratus-server";
/// Connections served at once (each agent opens one per package or data source it fetches);
/// one more is closed at once.
pub const MAX_CONNECTIONS: usize = 512;
/// Longest a peer may take over its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a peer may take to send a request head (also: idle time between requests).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a response write may wait for a peer that stopped reading: a slow reader holds
/// its place no longer than this.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest request head buffered (hyper's minimum): a request is a path and three headers.
pub const MAX_HEAD_BYTES: usize = 8192;
/// Longest name accepted in the deployment and server headers.
const MAX_NAME_BYTES: usize = 256;
/// Connections one peer (an IPv4 address, an IPv6 /64; on this machine, a user) may hold
/// before one of its requests carried a valid credential; one more is closed at once, so a
/// stranger, a plugin's program included, cannot take every place (the control plane's own
/// uid, which its local agents share, is not counted, see [`PeerLimit`]).
pub const MAX_UNPROVEN_PER_PEER: usize = 64;
/// Unproven connections of every local peer but the control plane's uid together (eight
/// program users of one plugin would otherwise take 512): remote agents keep room beside them.
pub const MAX_UNPROVEN_LOCAL: usize = 128;
/// Unproven connections of every counted peer together: the rest of [`MAX_CONNECTIONS`] is
/// always there for the control plane's own agents and for proven connections.
pub const MAX_UNPROVEN: usize = 384;
/// Least time between two log lines about refused credentials: each is counted, but a peer
/// sending wrong credentials on a kept-alive connection must not be able to write the
/// control plane's log (and rotate its history away) at the rate it sends requests.
pub const REFUSAL_LOG_GAP: Duration = Duration::from_secs(10);

/// Checks an agent's credential.
pub trait Authorize: Send + Sync + 'static {
    /// Whether `credential` is the credential of the live server `server` of `deployment`.
    fn verify<'a>(
        &'a self,
        deployment: &'a str,
        server: &'a str,
        credential: &'a Secret,
    ) -> BoxFuture<'a, bool>;
}

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// The file endpoint over one store.
#[derive(Clone)]
pub struct FileEndpoint {
    files: CloudFiles,
    auth: Arc<dyn Authorize>,
    tls: TlsAcceptor,
    places: Arc<Semaphore>,
    unproven: PeerLimit,
    refusals: Arc<Refusals>,
    crowding: Arc<Refusals>,
}

impl FileEndpoint {
    /// Serves `files` with the control plane's TLS identity.
    pub fn new(
        files: CloudFiles,
        auth: Arc<dyn Authorize>,
        tls: Arc<rustls::ServerConfig>,
    ) -> FileEndpoint {
        FileEndpoint {
            files,
            auth,
            tls: TlsAcceptor::from(tls),
            places: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            unproven: PeerLimit::new(MAX_UNPROVEN_PER_PEER)
                .with_totals(MAX_UNPROVEN_LOCAL, MAX_UNPROVEN),
            refusals: Arc::new(Refusals::new(
                "file endpoint: refused requests with a wrong credential",
            )),
            crowding: Arc::new(Refusals::new(
                "file endpoint: closed connections of peers already holding \
                 MAX_UNPROVEN_PER_PEER unproven ones (or of strangers holding \
                 MAX_UNPROVEN_LOCAL or MAX_UNPROVEN together)",
            )),
        }
    }

    /// Accepts connections on `listener` until the task is dropped; each runs as its own
    /// task, so a peer that stalls holds up nobody else. A connection is accepted only once a
    /// place is free: beyond [`MAX_CONNECTIONS`] peers wait in the kernel's accept queue rather
    /// than being reset (a thousand agents fetching their packages at once failed their
    /// launch), and the time limits free the places a stalling peer holds. A peer beyond
    /// [`MAX_UNPROVEN_PER_PEER`] is closed at once, keeping neither a place nor the queue.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let Ok(place) = self.places.clone().acquire_owned().await else {
                return;
            };
            let (tcp, ticket) = self.accept(&listener).await;
            let me = self.clone();
            tokio::spawn(async move {
                me.connection(tcp, ticket).await;
                drop(place);
            });
        }
    }

    /// The next connection whose peer may open one more.
    async fn accept(&self, listener: &TcpListener) -> (TcpStream, PeerTicket) {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(local) = tcp.local_addr() else {
                continue;
            };
            match self.unproven.admit(peer, local) {
                Some(ticket) => return (tcp, ticket),
                None => self.crowding.note(),
            }
        }
    }

    async fn connection(&self, tcp: TcpStream, ticket: PeerTicket) {
        // A response head and its body leave as separate writes: no waiting on delayed ACKs.
        let _ = tcp.set_nodelay(true);
        let shake = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.tls.accept(tcp));
        let Ok(Ok(tls)) = shake.await else {
            return;
        };
        let (me, ticket) = (self.clone(), Arc::new(std::sync::Mutex::new(ticket)));
        let service = hyper::service::service_fn(move |req| {
            let (me, ticket) = (me.clone(), ticket.clone());
            async move { Ok::<_, std::convert::Infallible>(me.answer(req, &ticket).await) }
        });
        let served = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_HEAD_BYTES)
            .serve_connection(TokioIo::new(Stall::new(tls)), service);
        if let Err(e) = served.await {
            tracing::debug!(error = %e, "file endpoint connection ended");
        }
    }

    /// The answer to one request; a valid credential proves the connection (`ticket`).
    async fn answer(
        &self,
        req: Request<Incoming>,
        ticket: &std::sync::Mutex<PeerTicket>,
    ) -> Response<Body> {
        let Some(hex) = req.uri().path().strip_prefix(OBJECTS_ROUTE) else {
            return refused(StatusCode::NOT_FOUND, "no such route");
        };
        if req.method() != Method::GET {
            return refused(StatusCode::METHOD_NOT_ALLOWED, "only GET");
        }
        let Ok(address) = hex.parse::<Address>() else {
            return refused(
                StatusCode::BAD_REQUEST,
                "not a content address: expected 64 lowercase hex digits of a sha256",
            );
        };
        let Some(deployment) = self.authenticate(req.headers()).await else {
            return refused(
                StatusCode::UNAUTHORIZED,
                "unknown server or wrong credential",
            );
        };
        ticket.lock().unwrap_or_else(|e| e.into_inner()).proven();
        match self.object(&deployment, &address).await {
            Ok(Some(response)) => response,
            Ok(None) => plain(StatusCode::NOT_FOUND, "no such object for this deployment"),
            Err(e) => {
                tracing::warn!(%address, error = %e, "file endpoint: reading cloud files failed");
                plain(StatusCode::INTERNAL_SERVER_ERROR, "cloud files error")
            }
        }
    }

    /// The deployment of the agent whose credential the request carries, if it is right.
    async fn authenticate(&self, headers: &HeaderMap) -> Option<String> {
        let text = |name: &str| {
            let v = headers.get(name)?.to_str().ok()?;
            (!v.is_empty() && v.len() <= MAX_NAME_BYTES).then(|| v.to_string())
        };
        let deployment = text(DEPLOYMENT_HEADER)?;
        let server = text(SERVER_HEADER)?;
        let credential = headers
            .get(AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?;
        let credential = Secret::new(credential);
        let ok = self.auth.verify(&deployment, &server, &credential).await;
        if !ok {
            self.refusals.note();
        }
        ok.then_some(deployment)
    }

    /// The object as a streamed response, if it is granted to `deployment` and stored.
    async fn object(
        &self,
        deployment: &str,
        address: &Address,
    ) -> Result<Option<Response<Body>>, crate::FilesError> {
        if !self.files.is_granted(deployment, address).await? {
            return Ok(None);
        }
        let Some(object) = self.files.open_object(address).await? else {
            return Ok(None);
        };
        let frames = object
            .bytes
            .map_ok(Frame::data)
            .map_err(|e| std::io::Error::other(e.to_string()));
        let response = Response::builder()
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, object.size)
            .body(BodyExt::boxed_unsync(StreamBody::new(frames)))
            .expect("a valid response");
        Ok(Some(response))
    }
}

/// Refusals of one kind counted since the last log line about them.
struct Refusals {
    what: &'static str,
    count: std::sync::Mutex<RefusalCount>,
}

#[derive(Default)]
struct RefusalCount {
    last_line: Option<std::time::Instant>,
    unlogged: u64,
}

impl Refusals {
    fn new(what: &'static str) -> Refusals {
        Refusals {
            what,
            count: Default::default(),
        }
    }

    /// Counts one refusal and logs the count when the last line is [`REFUSAL_LOG_GAP`] old.
    fn note(&self) {
        let mut count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        count.unlogged += 1;
        if count
            .last_line
            .is_some_and(|t| t.elapsed() < REFUSAL_LOG_GAP)
        {
            return;
        }
        count.last_line = Some(std::time::Instant::now());
        let refused = std::mem::take(&mut count.unlogged);
        tracing::info!(
            refused,
            "{} (at most one line per {}s)",
            self.what,
            REFUSAL_LOG_GAP.as_secs()
        );
    }
}

/// A refusal that ends the connection: a peer that has not proven who it is gets one request
/// per TLS handshake, so it cannot hold a place for long by sending a request every few
/// seconds, nor make many refusals cheaply.
fn refused(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut response = plain(status, message);
    response
        .headers_mut()
        .insert(CONNECTION, hyper::header::HeaderValue::from_static("close"));
    response
}

fn plain(status: StatusCode, message: &'static str) -> Response<Body> {
    let body = Full::new(Bytes::from_static(message.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync();
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body)
        .expect("a valid response")
}

/// A connection whose writes fail once the peer has not read for [`STALL_TIMEOUT`].
struct Stall<T> {
    io: T,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> Stall<T> {
    fn new(io: T) -> Stall<T> {
        Stall { io, stalled: None }
    }

    /// `Pending` while within the limit, an error past it.
    fn waiting(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(STALL_TIMEOUT)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the peer stopped reading",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Stall<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stall<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Pending => self.waiting(cx).map(Err),
            done => {
                self.stalled = None;
                done
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Pending => self.waiting(cx).map(Err),
            done => {
                self.stalled = None;
                done
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
