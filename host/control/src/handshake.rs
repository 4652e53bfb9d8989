//! The TLS handshake and first frame of every connection to the control port, which anyone
//! who can reach the port (a plugin's program included) may open before proving who it is.
//! Until then a peer gets little: one of [`MAX_PENDING`] places (at most
//! [`MAX_PENDING_PER_PEER`] for one peer, [`MAX_PENDING_LOCAL`] for local programs together,
//! [`MAX_PENDING_STRANGERS`] for everyone but the control plane's own uid), [`HELLO_TIMEOUT`] for the TLS
//! handshake and its first frame together, a first frame of at most [`MAX_HELLO_BYTES`], and
//! rejections are written as events at most once per [`REJECTION_EVENT_GAP`], with a fixed
//! reason (never what the peer sent) and a count. Each connection runs as its own task, so a
//! peer that stalls mid-handshake holds up nobody else.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stratus_cloud::peer_limit::PeerLimit;
use stratus_engine::logs::{Component, Logs, Subject};
use stratus_protocol::{Connection, FramingError, Hello};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;

/// A connection to the control port as the control plane sees it: TLS, or plaintext when the
/// control plane was started so (loopback only).
pub type ServerStream = Either<tokio_rustls::server::TlsStream<TcpStream>, TcpStream>;

/// Largest first frame: a hello holds a deployment and server name and a credential.
pub const MAX_HELLO_BYTES: usize = 64 * 1024;
/// How long a new connection may take over its TLS handshake and hello together.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections that may be waiting for their hello at once; one more is closed at once.
pub const MAX_PENDING: usize = 256;
/// Connections one peer (an IPv4 address, an IPv6 /64; on this machine, a user) may have
/// waiting for their hello at once; one more is closed at once, so a stranger, a plugin's
/// program included, cannot take every place (the control plane's own uid, which its local
/// agents share, is not counted: see `stratus_cloud::peer_limit`).
pub const MAX_PENDING_PER_PEER: usize = 32;
/// Connections every local peer but the control plane's uid may have waiting together (one
/// plugin on nine local servers has nine program users): remote agents keep room beside them.
pub const MAX_PENDING_LOCAL: usize = 64;
/// Connections every counted peer may have waiting together: the rest of [`MAX_PENDING`] is
/// always there for the control plane's own agents and operators.
pub const MAX_PENDING_STRANGERS: usize = 192;
/// Least time between two rejection events.
pub const REJECTION_EVENT_GAP: Duration = Duration::from_secs(10);

/// Why a connection was turned away, in words that never echo the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Busy,
    /// One peer already has [`MAX_PENDING_PER_PEER`] connections waiting for their hello, or
    /// strangers together their total.
    Crowding,
    /// Not TLS, or a peer that gave up the handshake (an agent pinning another certificate).
    Tls,
    TooLarge,
    Malformed,
    WrongToken,
    UnknownServer,
    WrongCredential,
    /// The credential is right but its agent is connected already (pid of that agent).
    InUse {
        pid: u32,
    },
}

impl Rejection {
    /// What the peer is told: an unknown server and a wrong credential read alike, so that a
    /// stranger cannot learn which deployments and servers exist (the log tells them apart).
    pub fn told(self) -> &'static str {
        match self {
            Rejection::UnknownServer | Rejection::WrongCredential => {
                "unknown server or wrong credential"
            }
            other => other.reason(),
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Busy => "too many connections waiting to log in",
            Rejection::Crowding => {
                "too many connections from one peer, or from strangers together, waiting to log in"
            }
            Rejection::Tls => {
                "a failed TLS handshake (not TLS, or a peer pinning another certificate)"
            }
            Rejection::TooLarge => "a first frame over 64 KiB",
            Rejection::Malformed => "a first frame that is not a hello",
            Rejection::WrongToken => "an operator with a wrong control token",
            Rejection::UnknownServer => {
                "an agent of an unknown server (never launched here, or terminated)"
            }
            Rejection::WrongCredential => "an agent with a wrong credential",
            Rejection::InUse { .. } => stratus_protocol::REFUSED_IN_USE,
        }
    }
}

/// The places for pending hellos and the rejections not yet written.
#[derive(Clone)]
pub struct Handshakes {
    pending: Arc<Semaphore>,
    per_peer: PeerLimit,
    rejected: Arc<Mutex<Rejected>>,
}

#[derive(Default)]
struct Rejected {
    last_event: Option<Instant>,
    /// Rejections since the last event, by reason.
    unreported: Vec<(Rejection, u64)>,
}

impl Default for Handshakes {
    fn default() -> Self {
        Handshakes {
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
            per_peer: PeerLimit::new(MAX_PENDING_PER_PEER)
                .with_totals(MAX_PENDING_LOCAL, MAX_PENDING_STRANGERS),
            rejected: Arc::default(),
        }
    }
}

impl Handshakes {
    /// The connection's hello after its TLS handshake (with `tls`; plaintext without), with
    /// the connection now reading full-size frames; `None` when the peer was turned away (or
    /// closed, or stayed silent).
    pub async fn hello(
        &self,
        stream: TcpStream,
        tls: Option<&TlsAcceptor>,
        logs: &Logs,
    ) -> Option<(Connection<ServerStream>, Hello)> {
        // Counted before a place is taken: a crowding peer takes none.
        let admitted = match (stream.peer_addr(), stream.local_addr()) {
            (Ok(peer), Ok(local)) => self.per_peer.admit(peer, local),
            _ => None,
        };
        let Some(_ticket) = admitted else {
            self.reject(Rejection::Crowding, logs);
            return None;
        };
        let Ok(_place) = self.pending.clone().try_acquire_owned() else {
            self.reject(Rejection::Busy, logs);
            return None;
        };
        let _ = stream.set_nodelay(true);
        let first = async {
            let stream = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => Either::Left(tls),
                    Err(_) => return Err(Some(Rejection::Tls)),
                },
                None => Either::Right(stream),
            };
            let mut conn = Connection::with_max_frame(stream, MAX_HELLO_BYTES);
            match conn.recv::<Hello>().await {
                Ok(hello) => Ok((conn.with_full_limit(), hello)),
                Err(FramingError::TooLarge) => Err(Some(Rejection::TooLarge)),
                Err(FramingError::Malformed(_)) => Err(Some(Rejection::Malformed)),
                Err(_) => Err(None),
            }
        };
        match tokio::time::timeout(HELLO_TIMEOUT, first).await {
            Ok(Ok(found)) => Some(found),
            Ok(Err(Some(why))) => {
                self.reject(why, logs);
                None
            }
            Ok(Err(None)) | Err(_) => None,
        }
    }

    /// Counts a rejection, and writes the ones counted so far when the last such event is
    /// old enough.
    pub fn reject(&self, why: Rejection, logs: &Logs) {
        let mut r = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
        match r
            .unreported
            .iter_mut()
            .find(|(w, _)| w.reason() == why.reason())
        {
            Some((_, n)) => *n += 1,
            None => r.unreported.push((why, 1)),
        }
        if r.last_event
            .is_some_and(|t| t.elapsed() < REJECTION_EVENT_GAP)
        {
            return;
        }
        r.last_event = Some(Instant::now());
        let counts: Vec<String> = r
            .unreported
            .drain(..)
            .map(|(w, n)| format!("{n} × {}", w.reason()))
            .collect();
        let message = format!("rejected connections: {}", counts.join(", "));
        logs.warn(Component::Dispatcher, Subject::default(), &message);
    }
}
