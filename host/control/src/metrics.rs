//! Metrics, the control plane's part: each agent is asked for its services' CPU and memory
//! every `metrics-interval` of its deployment (when it connects, when the interval changes,
//! and again when it stays silent), and each report is kept in a bounded window per server,
//! which scaling rules read through [`Metrics`]. The latest sample of each server is also
//! written to the store, every server's together once per [`STORE_EVERY`], where `stratus
//! status` reads it.
//!
//! Reports are stamped on receipt and named by the connection's server, never by what the
//! frame says; one closer than half the interval to the previous one of its server is ignored,
//! so a flooding agent cannot fill its window.

use crate::dispatcher::{Dispatcher, LiveConnection, ServerKey, next_look};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stratus_model::ids::ServerId;
use stratus_model::metrics::{DEFAULT_INTERVAL_MS, MAX_SAMPLES, Sample, ServerWindow};
use stratus_model::spec::DeploymentSpec;
use stratus_model::state::{AgentState, DeploymentState};
use stratus_protocol::{AgentRequest, MetricsReport};
use stratus_store::{Store, StoreError};
use tokio::sync::broadcast::error::RecvError;

/// How often the servers' latest samples received since the last time are written to the
/// store, in one transaction: status needs no fresher, and a commit per report was a sixth of
/// an idle control plane's time with 500 servers reporting every 5 s.
pub const STORE_EVERY: Duration = Duration::from_secs(1);
/// How often the deployments' intervals and servers are looked at again: a changed interval
/// is sent to the agents, the windows of servers that left are dropped, and silent agents
/// are asked again.
pub const REFRESH: Duration = Duration::from_secs(2);
/// How long an agent may send no report, in intervals, before it is asked again (an agent
/// started again forgets what it was asked).
const SILENT_INTERVALS: u32 = 3;
/// How long an agent may take to accept a metrics watch.
const ASK_LIMIT: Duration = Duration::from_secs(10);

/// The windows of every server, per deployment; cheap to clone.
#[derive(Clone, Default)]
pub struct Metrics {
    windows: Arc<Mutex<HashMap<ServerKey, VecDeque<Sample>>>>,
}

impl Metrics {
    /// Keeps `report`, received at `now_ms` from `server` of `deployment` whose agents report
    /// every `interval_ms`, as that server's newest sample (its oldest dropped past
    /// [`MAX_SAMPLES`]); `None` when it came closer than half an interval to the previous one.
    pub fn record(
        &self,
        deployment: &str,
        server: &str,
        interval_ms: u64,
        report: MetricsReport,
        now_ms: u64,
    ) -> Option<Sample> {
        let report = report.within_bounds();
        let mut windows = self.lock();
        let window = windows
            .entry((deployment.to_string(), server.to_string()))
            .or_default();
        if window
            .back()
            .is_some_and(|last| now_ms.saturating_sub(last.at_ms) < interval_ms / 2)
        {
            return None;
        }
        let sample = Sample {
            at_ms: now_ms,
            cpu_percent: report.cpu_percent,
            memory_bytes: report.memory_bytes,
            memory_percent: report.memory_percent,
        };
        if window.len() >= MAX_SAMPLES {
            window.pop_front();
        }
        window.push_back(sample);
        Some(sample)
    }

    /// The window of each server asked, in that order (no samples for a server never heard).
    pub fn windows(&self, deployment: &str, servers: &[ServerId]) -> Vec<ServerWindow> {
        let windows = self.lock();
        servers
            .iter()
            .map(|id| ServerWindow {
                server: id.clone(),
                samples: windows
                    .get(&(deployment.to_string(), id.to_string()))
                    .map(|w| w.iter().copied().collect())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// The newest sample of `server`, if any.
    pub fn latest(&self, deployment: &str, server: &ServerId) -> Option<Sample> {
        let windows = self.lock();
        windows
            .get(&(deployment.to_string(), server.to_string()))
            .and_then(|w| w.back().copied())
    }

    /// Drops the window of every server for which `keep` says no (it left its deployment).
    pub fn retain(&self, mut keep: impl FnMut(&str, &str) -> bool) {
        self.lock().retain(|(dep, server), _| keep(dep, server));
    }

    /// The servers that have a window.
    #[cfg(test)]
    fn servers(&self) -> Vec<ServerKey> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ServerKey, VecDeque<Sample>>> {
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where the latest sample of `server` is kept for this launch of the deployment.
fn latest_key(journal: &str, server: &str) -> String {
    format!("metrics/{journal}/{server}")
}

/// The latest sample of `server` written to the store, if any (read by `status`).
pub fn latest_stored(store: &Store, journal: &str, server: &str) -> Option<Sample> {
    store
        .meta(&latest_key(journal, server))
        .ok()
        .flatten()
        .and_then(|t| serde_json::from_str(&t).ok())
}

/// Runs for as long as the control plane does: asks agents for their metrics and keeps what
/// they report.
pub async fn watch(metrics: Metrics, store: Store, dispatcher: Dispatcher) {
    let mut reports = dispatcher.metrics_reports();
    let mut connections = dispatcher.subscribe();
    let mut feed = Feed {
        metrics,
        store,
        dispatcher,
        intervals: HashMap::new(),
        heard: HashMap::new(),
        asked: HashMap::new(),
        unstored: HashMap::new(),
    };
    let mut refresh = tokio::time::interval(REFRESH);
    let mut store_tick = tokio::time::interval(STORE_EVERY);
    store_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When to look at the connections once one changed, and when it was last done (looks are
    // at least `CHANGES_GATHER` apart).
    let (mut look_at, mut looked) = (None, None);
    loop {
        let gathered = tokio::time::sleep_until(look_at.unwrap_or_else(tokio::time::Instant::now));
        tokio::select! {
            report = reports.recv() => match report {
                Ok((key, report)) => feed.note(key, report),
                // Missed reports leave a gap in the windows; the next ones follow.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            },
            changed = connections.changed(), if look_at.is_none() => {
                if changed.is_err() {
                    return;
                }
                look_at = Some(next_look(looked));
            }
            _ = gathered, if look_at.is_some() => {
                look_at = None;
                looked = Some(tokio::time::Instant::now());
                connections.mark_unchanged();
                feed.look_at_connections().await;
            }
            _ = refresh.tick() => feed.refresh().await,
            _ = store_tick.tick() => feed.store_unstored(),
        }
    }
}

/// When an agent was last asked, for which interval, on which of its connections (a new
/// connection may be a new agent process, which knows nothing of what the old one was asked).
struct Asked {
    at: Instant,
    interval_ms: u64,
    generation: u64,
}

/// The feeding task's memory.
struct Feed {
    metrics: Metrics,
    store: Store,
    dispatcher: Dispatcher,
    /// Each deployment's interval, as last read from its file.
    intervals: HashMap<String, u64>,
    /// When each server's last report came, and when its agent was last asked.
    heard: HashMap<ServerKey, Instant>,
    asked: HashMap<ServerKey, Asked>,
    /// Each server's latest sample not written to the store yet.
    unstored: HashMap<ServerKey, Sample>,
}

impl Feed {
    /// Keeps a report from a RUNNING server of a deployment this control plane knows.
    fn note(&mut self, key: ServerKey, report: MetricsReport) {
        let (dep, server) = (&key.0, &key.1);
        let running = self
            .store
            .server::<AgentState>(dep, server)
            .ok()
            .flatten()
            .is_some_and(|r| r.agent_state == AgentState::Running);
        let Some(interval) = self.interval(dep).filter(|_| running) else {
            return;
        };
        let Some(sample) = self
            .metrics
            .record(dep, server, interval, report, unix_ms())
        else {
            return;
        };
        self.heard.insert(key.clone(), Instant::now());
        self.unstored.insert(key, sample);
    }

    /// Writes every server's latest sample received since the last call, in one transaction.
    fn store_unstored(&mut self) {
        if self.unstored.is_empty() {
            return;
        }
        let unstored = std::mem::take(&mut self.unstored);
        if let Err(e) = self.store_latest(unstored) {
            tracing::warn!(error = %e, "recording the servers' metrics");
        }
    }

    fn store_latest(&self, samples: HashMap<ServerKey, Sample>) -> Result<(), StoreError> {
        let mut journals: HashMap<String, String> = HashMap::new();
        let mut pairs = Vec::with_capacity(samples.len());
        for ((dep, server), sample) in samples {
            let journal = match journals.get(&dep) {
                Some(j) => j.clone(),
                None => {
                    let j = stratus_engine::steps::journal_of(&self.store, &dep)?;
                    journals.insert(dep, j.clone());
                    j
                }
            };
            let text = serde_json::to_string(&sample).unwrap_or_default();
            pairs.push((latest_key(&journal, &server), text));
        }
        self.store.set_metas(&pairs)
    }

    /// The metrics interval of `dep`, read from its file the first time; `None` when the
    /// deployment is unknown or terminated.
    fn interval(&mut self, dep: &str) -> Option<u64> {
        if let Some(ms) = self.intervals.get(dep) {
            return Some(*ms);
        }
        let ms = read_interval(&self.store, dep)?;
        self.intervals.insert(dep.to_string(), ms);
        Some(ms)
    }

    /// Reads every interval again, drops what belongs to servers that left, and asks the
    /// agents that need it.
    async fn refresh(&mut self) {
        self.intervals.clear();
        let live = live_servers(&self.store);
        self.metrics
            .retain(|dep, server| live.contains(&(dep.to_string(), server.to_string())));
        self.look_at_connections().await;
    }

    /// Forgets and asks (see below) over one look at the connections.
    async fn look_at_connections(&mut self) {
        let connected = self.dispatcher.connections().await;
        self.forget_disconnected(&connected);
        self.ask_silent(&connected);
    }

    /// Forgets what was asked of agents no longer connected, or connected anew since (even
    /// between two looks): one that connects again may be a new process, which knows nothing
    /// of it.
    fn forget_disconnected(&mut self, connected: &HashMap<ServerKey, LiveConnection>) {
        self.heard.retain(|k, _| connected.contains_key(k));
        self.asked.retain(|k, a| {
            connected
                .get(k)
                .is_some_and(|c| c.generation == a.generation)
        });
    }

    /// Asks every connected agent that was not asked for its deployment's current interval,
    /// or has been silent for [`SILENT_INTERVALS`] since it was last asked.
    fn ask_silent(&mut self, connected: &HashMap<ServerKey, LiveConnection>) {
        for (key, connection) in connected {
            let Some(interval) = self.interval(&key.0) else {
                continue;
            };
            let silent = Duration::from_millis(interval) * SILENT_INTERVALS;
            let quiet = self.heard.get(key).is_none_or(|t| t.elapsed() >= silent);
            let due = match self.asked.get(key) {
                None => true,
                Some(a) if a.interval_ms != interval || a.generation != connection.generation => {
                    true
                }
                Some(a) => quiet && a.at.elapsed() >= silent,
            };
            if due {
                let asked = Asked {
                    at: Instant::now(),
                    interval_ms: interval,
                    generation: connection.generation,
                };
                self.asked.insert(key.clone(), asked);
                let (dispatcher, key) = (self.dispatcher.clone(), key.clone());
                tokio::spawn(async move {
                    let ask = AgentRequest::WatchMetrics {
                        interval_ms: interval,
                    };
                    if let Err(e) = dispatcher.call(&key, ask, ASK_LIMIT).await {
                        tracing::debug!(error = %e, server = %key.1, "metrics not asked for");
                    }
                });
            }
        }
    }
}

/// The interval of a deployment that is not terminated (the default when its file no longer
/// parses: its agents still report).
fn read_interval(store: &Store, dep: &str) -> Option<u64> {
    let row = store.deployment::<DeploymentState>(dep).ok().flatten()?;
    if row.state == DeploymentState::Terminated {
        return None;
    }
    let ms = DeploymentSpec::from_str(&row.spec_toml, &row.spec_path)
        .map_or(DEFAULT_INTERVAL_MS, |s| s.metrics_interval_ms);
    Some(ms)
}

/// Every server not terminated of every deployment not terminated.
fn live_servers(store: &Store) -> HashSet<ServerKey> {
    let Ok(rows) = store.deployments::<DeploymentState>() else {
        return HashSet::new();
    };
    let mut out = HashSet::new();
    for row in rows
        .iter()
        .filter(|r| r.state != DeploymentState::Terminated)
    {
        for s in store.servers::<AgentState>(&row.name).unwrap_or_default() {
            if s.agent_state != AgentState::Terminated {
                out.insert((row.name.clone(), s.id));
            }
        }
    }
    out
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(cpu: f64) -> MetricsReport {
        MetricsReport {
            cpu_percent: cpu,
            memory_bytes: 1 << 20,
            memory_percent: 0.5,
        }
    }

    fn id(s: &str) -> ServerId {
        s.parse().unwrap()
    }

    /// An agent asked on one connection is asked again on its next, even when both were seen
    /// in no look (a new agent process knows nothing of what the old one was asked), and not
    /// again on the same connection.
    #[tokio::test]
    async fn an_agent_on_a_new_connection_is_asked_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("stratus.db")).unwrap();
        let logs = stratus_engine::logs::Logs::open(dir.path(), store.clone()).unwrap();
        let dispatcher = Dispatcher::new(logs, |c| c.to_string());
        let mut feed = Feed {
            metrics: Metrics::default(),
            store,
            dispatcher: dispatcher.clone(),
            intervals: HashMap::from([("dep".to_string(), 5_000)]),
            heard: HashMap::new(),
            asked: HashMap::new(),
            unstored: HashMap::new(),
        };
        let key = ("dep".to_string(), "app-1".to_string());
        let asked = |rx: &mut tokio::sync::mpsc::Receiver<_>| {
            matches!(
                rx.try_recv(),
                Ok(stratus_protocol::Envelope {
                    body: AgentRequest::WatchMetrics { interval_ms: 5_000 },
                    ..
                })
            )
        };
        let mut first = dispatcher.connect_for_test(&key, 1).await;
        feed.look_at_connections().await;
        tokio::task::yield_now().await;
        assert!(asked(&mut first), "asked on its first connection");
        let mut second = dispatcher.connect_for_test(&key, 2).await;
        feed.look_at_connections().await;
        tokio::task::yield_now().await;
        assert!(asked(&mut second), "asked again on its new connection");
        feed.look_at_connections().await;
        tokio::task::yield_now().await;
        assert!(!asked(&mut second), "not again on the same connection");
    }

    #[test]
    fn a_window_keeps_the_newest_samples_up_to_its_bound() {
        let m = Metrics::default();
        for i in 0..(MAX_SAMPLES as u64 + 10) {
            assert!(
                m.record("web", "app-1", 500, report(i as f64), i * 500)
                    .is_some()
            );
        }
        let w = m.windows("web", &[id("app-1"), id("app-2")]);
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].samples.len(), MAX_SAMPLES);
        assert_eq!(w[0].samples[0].cpu_percent, 10.0, "the oldest were dropped");
        assert!(
            w[1].samples.is_empty(),
            "a server never heard has no samples"
        );
        assert_eq!(w[1].server, id("app-2"));
        let last = m.latest("web", &id("app-1")).unwrap();
        assert_eq!(last.cpu_percent, (MAX_SAMPLES + 9) as f64);
        assert!(m.latest("other", &id("app-1")).is_none());
    }

    #[test]
    fn a_flooding_agent_cannot_fill_its_window() {
        let m = Metrics::default();
        assert!(
            m.record("web", "app-1", 1_000, report(1.0), 10_000)
                .is_some()
        );
        // A thousand reports within the same interval: only those half an interval apart count.
        let kept = (1..1_000)
            .filter(|i| {
                m.record("web", "app-1", 1_000, report(2.0), 10_000 + i)
                    .is_some()
            })
            .count();
        assert_eq!(kept, 1, "only the one at +500 ms");
        assert!(
            m.record("web", "app-1", 1_000, report(3.0), 11_000)
                .is_some()
        );
        // Another server's reports are its own.
        assert!(
            m.record("web", "app-2", 1_000, report(3.0), 11_001)
                .is_some()
        );
        assert_eq!(m.windows("web", &[id("app-1")])[0].samples.len(), 3);
    }

    /// A hostile agent's metrics frames: each is named by its connection's server whatever
    /// it claims, held to its bounds, and one with a request's id is no report.
    #[tokio::test]
    async fn the_dispatcher_names_and_bounds_what_an_agent_reports() {
        use stratus_protocol::Connection;
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("stratus.db")).unwrap();
        let logs = stratus_engine::logs::Logs::open(dir.path(), store).unwrap();
        let d = Dispatcher::new(logs, |c| format!("digest:{c}"));
        let key = ("dep".to_string(), "app-1".to_string());
        d.expect(key.clone(), "digest:cred".into()).await;
        let mut reports = d.metrics_reports();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = {
            let d = d.clone();
            tokio::spawn(async move {
                let (s, _) = listener.accept().await.unwrap();
                d.serve_agent(
                    Connection::new(s),
                    "dep".into(),
                    "app-1".into(),
                    "cred".into(),
                    1,
                )
                .await;
            })
        };
        let (r, mut w) = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap()
            .into_split();
        let _welcome = BufReader::new(r).lines().next_line().await.unwrap();
        let frames = [
            r#"{"id":7,"body":{"type":"metrics","report":{"cpu_percent":99.0,"memory_bytes":1,"memory_percent":1.0}}}"#,
            r#"{"id":0,"body":{"type":"metrics","server":"db-1","deployment":"other","report":{"cpu_percent":1e308,"memory_bytes":5,"memory_percent":-3.0}}}"#,
            r#"{"id":0,"body":{"type":"metrics","report":{"cpu_percent":"lots"}}}"#,
            r#"{"id":0,"body":{"type":"metrics","report":{"cpu_percent":12.5,"memory_bytes":9,"memory_percent":0.5}}}"#,
        ];
        for f in frames {
            w.write_all(format!("{f}\n").as_bytes()).await.unwrap();
        }
        let first = tokio::time::timeout(Duration::from_secs(10), reports.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.0, key, "named by the connection, not the frame");
        assert_eq!(
            first.1.cpu_percent,
            stratus_protocol::bounds::MAX_CPU_PERCENT
        );
        assert_eq!((first.1.memory_bytes, first.1.memory_percent), (5, 0.0));
        let second = tokio::time::timeout(Duration::from_secs(10), reports.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            second.1.cpu_percent, 12.5,
            "the malformed frame was skipped"
        );
        drop(w);
        served.await.unwrap();
        assert!(
            reports.try_recv().is_err(),
            "the frame with a request id is no report"
        );
    }

    #[test]
    fn reports_are_held_to_their_bounds_and_servers_that_left_are_dropped() {
        let m = Metrics::default();
        let wild = MetricsReport {
            cpu_percent: f64::NAN,
            memory_bytes: 5,
            memory_percent: -1.0,
        };
        let s = m.record("web", "app-1", 500, wild, 1).unwrap();
        assert_eq!((s.cpu_percent, s.memory_percent, s.at_ms), (0.0, 0.0, 1));
        m.record("web", "app-2", 500, report(1.0), 1);
        m.record("old", "app-1", 500, report(1.0), 1);
        m.retain(|dep, server| dep == "web" && server == "app-2");
        let mut left = m.servers();
        left.sort();
        assert_eq!(left, [("web".to_string(), "app-2".to_string())]);
    }
}
