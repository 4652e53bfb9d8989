//! The dispatcher: authenticates agents that dial in and carries requests to them.
//!
//! An agent proves who it is with the credential issued for its server at launch, and after
//! its first handshake with the one that replaced it (while a replacement is under way, both
//! are accepted). The dispatcher knows only digests of those credentials; a connection with an unknown server,
//! a wrong credential, or a credential already in use by a live connection is refused and
//! the refusal logged (without the credential).

use crate::handshake::{Handshakes, Rejection};
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use stratus_engine::ReportedAddress;
use stratus_engine::logs::{Component, Logs, Subject};
use stratus_protocol::{
    AgentReply, AgentRequest, Connection, Envelope, HealthResult, MetricsReport, SupervisionReport,
    UNSOLICITED_ID, Welcome,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Mutex, broadcast, mpsc, oneshot, watch};

/// Health results buffered for the application layer; a slower reader skips the oldest.
const HEALTH_BUFFER: usize = 1024;

/// A server is named by its deployment and its id.
pub type ServerKey = (String, String);

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("agent of server {0} did not connect within {1:?}")]
    NotConnected(String, Duration),
    #[error("agent of server {0} disconnected before answering")]
    Disconnected(String),
    #[error("agent of server {0} did not answer within {1:?}")]
    Timeout(String, Duration),
}

/// What an agent's hello said of its server's address, and where its connection comes from.
#[derive(Debug, Clone, Default)]
pub struct Reported {
    /// The `address` of the hello: the agent's word, unchecked.
    pub claimed: Option<String>,
    pub peer: Option<IpAddr>,
}

impl Reported {
    /// The claim as an address (authenticated agents only: it is logged when not one).
    fn checked(&self, logs: &Logs, subject: &Subject<'_>) -> Option<ReportedAddress> {
        let claimed = self.claimed.as_deref()?;
        match claimed.parse::<IpAddr>() {
            Ok(ip) => Some(ReportedAddress {
                claimed: ip,
                peer: self.peer,
            }),
            Err(_) => {
                let shown: String = claimed.chars().take(64).collect();
                let message = format!(
                    "the agent reported an address that is not an IP address ({}); ignored",
                    shown.escape_default()
                );
                logs.warn(Component::Dispatcher, subject.clone(), &message);
                None
            }
        }
    }
}

/// One agent connection as [`Dispatcher::connections`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveConnection {
    pub generation: u64,
    pub pid: u32,
}

struct Live {
    generation: u64,
    pid: u32,
    /// The address the agent reported in its hello, and where its connection comes from.
    address: Option<ReportedAddress>,
    tx: mpsc::Sender<Envelope<AgentRequest>>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<AgentReply>>>>,
}

impl Live {
    fn connection(&self) -> LiveConnection {
        LiveConnection {
            generation: self.generation,
            pid: self.pid,
        }
    }
}

#[derive(Default)]
struct State {
    /// Credential digest per server that may connect.
    expected: HashMap<ServerKey, String>,
    /// A second digest accepted while a server's credential is being replaced.
    offered: HashMap<ServerKey, String>,
    live: HashMap<ServerKey, Live>,
    /// Connections that closed (or were severed) since the monitor last took them: one that
    /// came and went between two of its looks is in neither snapshot.
    closed: std::collections::VecDeque<(ServerKey, LiveConnection)>,
}

impl State {
    /// Every live connection, by server.
    fn connections(&self) -> HashMap<ServerKey, LiveConnection> {
        let live = self.live.iter();
        live.map(|(k, l)| (k.clone(), l.connection())).collect()
    }

    /// Removes the live connection of `key` and keeps it among the closed ones.
    fn close(&mut self, key: &ServerKey) -> bool {
        let Some(live) = self.live.remove(key) else {
            return false;
        };
        if self.closed.len() == MAX_CLOSED_KEPT {
            self.closed.pop_front();
        }
        self.closed.push_back((key.clone(), live.connection()));
        true
    }

    /// Whether a credential of digest `presented` admits the agent of `key`: the expected
    /// one, or one on offer while it replaces it.
    fn admits(&self, key: &ServerKey, presented: &str) -> bool {
        self.expected.get(key).is_some_and(|d| d == presented)
            || self.offered.get(key).is_some_and(|d| d == presented)
    }
}

/// The least time between two looks at every connection by one watcher: a look comes at once
/// after a quiet spell, but a launch connects an agent every few milliseconds (and a terminate
/// closes them as fast), and one look per change was quadratic in the servers (about 1 % of a
/// 1,000-server launch's CPU). See [`next_look`].
pub const CHANGES_GATHER: Duration = Duration::from_millis(50);

/// When a watcher that last looked at `last` may look again (see [`CHANGES_GATHER`]).
pub fn next_look(last: Option<tokio::time::Instant>) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    last.map_or(now, |last| (last + CHANGES_GATHER).max(now))
}

/// Most closed connections kept for [`Dispatcher::take_closed`] between two looks; past it the
/// oldest are dropped (the monitor then sees only what its snapshots show).
pub const MAX_CLOSED_KEPT: usize = 4096;

/// Cheap to clone; one per control plane.
#[derive(Clone)]
pub struct Dispatcher {
    state: Arc<Mutex<State>>,
    changed: watch::Sender<u64>,
    ids: Arc<AtomicU64>,
    logs: Logs,
    digest: fn(&str) -> String,
    /// Health results agents report, each with the server of the connection it came on.
    health: broadcast::Sender<(ServerKey, HealthResult)>,
    /// Supervision reports agents send, each with the server of its connection.
    supervision: broadcast::Sender<(ServerKey, SupervisionReport)>,
    /// Metrics reports agents send, each with the server of its connection.
    metrics: broadcast::Sender<(ServerKey, MetricsReport)>,
    /// Turns away peers before they prove who they are, and counts them.
    handshakes: Handshakes,
    /// The file endpoint's base URL, named in every agent's `Welcome` (set once at start).
    files: Arc<std::sync::OnceLock<String>>,
}

impl Dispatcher {
    /// `digest` hashes a presented credential the same way key management did.
    pub fn new(logs: Logs, digest: fn(&str) -> String) -> Dispatcher {
        Dispatcher {
            state: Arc::default(),
            changed: watch::channel(0).0,
            ids: Arc::new(AtomicU64::new(1)),
            logs,
            digest,
            health: broadcast::channel(HEALTH_BUFFER).0,
            supervision: broadcast::channel(HEALTH_BUFFER).0,
            metrics: broadcast::channel(HEALTH_BUFFER).0,
            handshakes: Handshakes::default(),
            files: Arc::default(),
        }
    }

    /// The first-frame limits and rejection counts of the control port.
    pub fn handshakes(&self) -> &Handshakes {
        &self.handshakes
    }

    /// Every health result an agent reports from now on, named by the connection's server
    /// (never by what the frame says).
    pub fn health_results(&self) -> broadcast::Receiver<(ServerKey, HealthResult)> {
        self.health.subscribe()
    }

    /// Every supervision report an agent sends from now on, bounded, named by the
    /// connection's server.
    pub fn supervision_reports(&self) -> broadcast::Receiver<(ServerKey, SupervisionReport)> {
        self.supervision.subscribe()
    }

    /// Every metrics report an agent sends from now on, bounded, named by the connection's
    /// server.
    pub fn metrics_reports(&self) -> broadcast::Receiver<(ServerKey, MetricsReport)> {
        self.metrics.subscribe()
    }

    /// Allows the agent of `key` to connect with the credential whose digest is given.
    pub async fn expect(&self, key: ServerKey, credential_digest: String) {
        self.state
            .lock()
            .await
            .expected
            .insert(key, credential_digest);
    }

    /// Also accepts the credential of `digest` for `key` until [`Dispatcher::settle`];
    /// `false` when `key` is not expected or another credential is on offer.
    pub async fn offer(&self, key: ServerKey, digest: String) -> bool {
        let mut st = self.state.lock().await;
        if !st.expected.contains_key(&key) || st.offered.contains_key(&key) {
            return false;
        }
        st.offered.insert(key, digest);
        true
    }

    /// Ends the offer of `digest` for `key`: `adopted`, it replaces the expected credential
    /// (unless the server was forgotten meanwhile); otherwise it is withdrawn.
    pub async fn settle(&self, key: &ServerKey, digest: &str, adopted: bool) {
        let mut st = self.state.lock().await;
        if st.offered.get(key).is_none_or(|d| d != digest) {
            return;
        }
        st.offered.remove(key);
        if adopted && let Some(expected) = st.expected.get_mut(key) {
            *expected = digest.to_string();
        }
    }

    /// Names the file endpoint in the `Welcome` of every agent from now on.
    pub fn set_files_endpoint(&self, url: String) {
        let _ = self.files.set(url);
    }

    /// Whether `credential` is the one the server `key` may connect with now (what the file
    /// endpoint asks; a terminated server's is forgotten).
    pub async fn verify_credential(&self, key: &ServerKey, credential: &str) -> bool {
        let presented = (self.digest)(credential);
        self.state.lock().await.admits(key, &presented)
    }

    /// Refuses the server from now on and drops its connection (the server is terminated).
    pub async fn forget(&self, key: &ServerKey) {
        let mut st = self.state.lock().await;
        st.expected.remove(key);
        st.offered.remove(key);
        st.live.remove(key);
    }

    /// The live connections (see [`Dispatcher::connections`]) and, looked at in the same instant,
    /// the connections that closed since the last call, oldest first (at most
    /// [`MAX_CLOSED_KEPT`]; one that [`Dispatcher::forget`] dropped is not among them). A
    /// connection is in one or the other, never both.
    pub async fn take_closed(
        &self,
    ) -> (
        HashMap<ServerKey, LiveConnection>,
        Vec<(ServerKey, LiveConnection)>,
    ) {
        let mut st = self.state.lock().await;
        (st.connections(), st.closed.drain(..).collect())
    }

    /// The servers whose agents are connected right now.
    pub async fn connected(&self) -> std::collections::HashSet<ServerKey> {
        self.state.lock().await.live.keys().cloned().collect()
    }

    /// Each connected agent's connection: its generation (unique per connection) and pid. A
    /// key whose generation changed between two looks lost its connection and made another,
    /// even when both happened before the looker ran.
    pub async fn connections(&self) -> HashMap<ServerKey, LiveConnection> {
        self.state.lock().await.connections()
    }

    /// Notified whenever an agent connects or disconnects. A watcher that looks at every
    /// connection on a change looks at most once per [`CHANGES_GATHER`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The address the connected agent of `key` reported in its handshake (see
    /// `stratus_engine::learned_address`), with the address its connection comes from.
    pub async fn reported_address(&self, key: &ServerKey) -> Option<ReportedAddress> {
        self.state
            .lock()
            .await
            .live
            .get(key)
            .and_then(|l| l.address)
    }

    pub async fn is_connected(&self, key: &ServerKey) -> bool {
        self.state.lock().await.live.contains_key(key)
    }

    /// Waits until the agent of `key` has completed its handshake. The first look is not
    /// limited: with a zero limit, a look that had to wait for the lock (a busy launch) would
    /// otherwise report a connected agent as not connected.
    pub async fn wait_connected(
        &self,
        key: &ServerKey,
        limit: Duration,
    ) -> Result<(), DispatchError> {
        let mut rx = self.changed.subscribe();
        if self.is_connected(key).await {
            return Ok(());
        }
        let wait = async {
            while rx.changed().await.is_ok() {
                if self.is_connected(key).await {
                    return true;
                }
            }
            false
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(true) => Ok(()),
            _ => Err(DispatchError::NotConnected(key.1.clone(), limit)),
        }
    }

    /// Sends a request to the agent of `key` and waits for its reply.
    pub async fn call(
        &self,
        key: &ServerKey,
        body: AgentRequest,
        limit: Duration,
    ) -> Result<AgentReply, DispatchError> {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let (tx, pending) = {
            let st = self.state.lock().await;
            let live = st
                .live
                .get(key)
                .ok_or_else(|| DispatchError::Disconnected(key.1.clone()))?;
            (live.tx.clone(), live.pending.clone())
        };
        let (reply_tx, reply_rx) = oneshot::channel();
        pending.lock().await.insert(id, reply_tx);
        if tx.send(Envelope { id, body }).await.is_err() {
            pending.lock().await.remove(&id);
            return Err(DispatchError::Disconnected(key.1.clone()));
        }
        match tokio::time::timeout(limit, reply_rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(DispatchError::Disconnected(key.1.clone())),
            Err(_) => {
                pending.lock().await.remove(&id);
                Err(DispatchError::Timeout(key.1.clone(), limit))
            }
        }
    }

    /// Serves one agent connection whose `Hello` has been read: checks it, then pumps frames
    /// until the connection ends.
    pub async fn serve_agent<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        conn: Connection<S>,
        deployment: String,
        server_id: String,
        credential: String,
        pid: u32,
    ) {
        let reported = Reported::default();
        self.serve_agent_at(conn, deployment, server_id, credential, pid, reported)
            .await
    }

    /// [`Dispatcher::serve_agent`] for an agent that may have reported its server's address.
    pub async fn serve_agent_at<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut conn: Connection<S>,
        deployment: String,
        server_id: String,
        credential: String,
        pid: u32,
        reported: Reported,
    ) {
        let key = (deployment.clone(), server_id.clone());
        let subject = Subject {
            deployment: Some(&deployment),
            server: Some(&server_id),
            ..Subject::default()
        };
        let presented = (self.digest)(&credential);
        drop(credential);
        let generation = self.ids.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::channel::<Envelope<AgentRequest>>(64);
        let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<AgentReply>>>> = Arc::default();
        let verdict = {
            let mut st = self.state.lock().await;
            match st.expected.get(&key) {
                // Names and credential are the peer's word: counted, never echoed.
                None => Err(Rejection::UnknownServer),
                Some(_) if !st.admits(&key, &presented) => Err(Rejection::WrongCredential),
                Some(_) => match st.live.get(&key) {
                    Some(other) => Err(Rejection::InUse { pid: other.pid }),
                    None => {
                        st.live.insert(
                            key.clone(),
                            Live {
                                generation,
                                pid,
                                address: reported.checked(&self.logs, &subject),
                                tx,
                                pending: pending.clone(),
                            },
                        );
                        Ok(())
                    }
                },
            }
        };
        if let Err(why) = verdict {
            if let Rejection::InUse { pid: other } = why {
                // The credential was right: the names are real, and this is worth a line.
                let message = format!(
                    "refused agent handshake from pid {pid}: credential already in use by a \
                     connected agent (pid {other})"
                );
                self.logs.warn(Component::Dispatcher, subject, &message);
            } else {
                self.handshakes.reject(why, &self.logs);
            }
            let reason = why.told().to_string();
            let _ = conn.send(&Welcome::Refused { reason }).await;
            return;
        }
        let welcome = Welcome::Welcome {
            files: self.files.get().cloned(),
        };
        if conn.send(&welcome).await.is_err() {
            self.drop_live(&key, generation).await;
            return;
        }
        self.logs.info(
            Component::Dispatcher,
            subject.clone(),
            &format!("agent handshake accepted (pid {pid})"),
        );
        self.changed.send_modify(|n| *n += 1);

        let (mut sink, mut stream) = conn.split();
        let writer = async {
            while let Some(env) = rx.recv().await {
                let Ok(line) = serde_json::to_string(&env) else {
                    continue;
                };
                if sink.send(line).await.is_err() {
                    break;
                }
            }
        };
        let reader = async {
            while let Some(line) = stream.next().await {
                let line = match line {
                    Ok(line) => line,
                    Err(e) => {
                        self.logs.warn(
                            Component::Dispatcher,
                            subject.clone(),
                            &format!(
                                "closing the agent connection: {}",
                                stratus_protocol::FramingError::from(e)
                            ),
                        );
                        break;
                    }
                };
                match serde_json::from_str::<Envelope<AgentReply>>(&line) {
                    Ok(Envelope {
                        id: UNSOLICITED_ID,
                        body: AgentReply::Health { result },
                    }) => {
                        let _ = self.health.send((key.clone(), result.within_bounds()));
                    }
                    Ok(Envelope {
                        id: UNSOLICITED_ID,
                        body: AgentReply::Supervision { report },
                    }) => {
                        let report = report.within_bounds();
                        let _ = self.supervision.send((key.clone(), report));
                    }
                    Ok(Envelope {
                        id: UNSOLICITED_ID,
                        body: AgentReply::Metrics { report },
                    }) => {
                        let _ = self.metrics.send((key.clone(), report.within_bounds()));
                    }
                    Ok(env) => {
                        if let Some(waiter) = pending.lock().await.remove(&env.id) {
                            let _ = waiter.send(env.body);
                        }
                    }
                    Err(e) => self.logs.warn(
                        Component::Dispatcher,
                        subject.clone(),
                        &format!("ignored a malformed frame from the agent: {e}"),
                    ),
                }
            }
        };
        tokio::select! {
            _ = writer => {},
            _ = reader => {},
        }
        self.drop_live(&key, generation).await;
        // Waiters hold the map too: clear it so each gets `Disconnected` now, not at its limit.
        pending.lock().await.clear();
        self.logs
            .warn(Component::Dispatcher, subject, "agent connection closed");
    }

    /// Drops the agent's connection (it stopped answering): the monitor records it LOST,
    /// and an agent that was only frozen reconnects once it runs again.
    pub async fn sever(&self, key: &ServerKey) {
        if self.state.lock().await.close(key) {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Closes connection `generation` of `key` if it is still the live one, and tells the
    /// watchers (waiters may have seen it live, even one whose `Welcome` was never sent).
    async fn drop_live(&self, key: &ServerKey, generation: u64) {
        let closed = {
            let mut st = self.state.lock().await;
            st.live.get(key).is_some_and(|l| l.generation == generation) && st.close(key)
        };
        if closed {
            self.changed.send_modify(|n| *n += 1);
        }
    }
}

/// For other modules' tests: makes `key`'s agent connected on connection `generation` (a
/// close of the one before it not recorded) and answers what is sent to it.
#[cfg(test)]
impl Dispatcher {
    pub(crate) async fn connect_for_test(
        &self,
        key: &ServerKey,
        generation: u64,
    ) -> mpsc::Receiver<Envelope<AgentRequest>> {
        let (tx, rx) = mpsc::channel(8);
        let live = Live {
            generation,
            pid: 1,
            address: None,
            tx,
            pending: Arc::default(),
        };
        self.state.lock().await.live.insert(key.clone(), live);
        rx
    }
}

#[cfg(test)]
#[path = "dispatcher_tests.rs"]
mod tests;
