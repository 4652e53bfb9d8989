//! Supervision, the control plane's part: each agent reports the supervised processes that
//! crashed on its server (a snapshot, at most once a second, see the agent); the latest one
//! is kept per server in the store, where `stratus status` reads it, and a restart or the
//! start of a crash loop becomes an event.

use crate::dispatcher::ServerKey;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use stratus_engine::logs::{Component, Logs, Subject};
use stratus_protocol::{ProcessReport, SupervisionReport};
use stratus_store::{Store, StoreError};
use tokio::sync::broadcast::{Receiver, error::RecvError};

/// Least time between two reports of one server that are recorded: agents send at most one a
/// second, so only a misbehaving agent is slowed down (each recorded report is a store write).
pub const MIN_REPORT_GAP: Duration = Duration::from_millis(500);

/// Where the last report of `server` is kept for this launch of the deployment.
fn key(journal: &str, server: &str) -> String {
    format!("supervision/{journal}/{server}")
}

/// The last report of `server` (empty when none came).
pub fn report_of(store: &Store, journal: &str, server: &str) -> SupervisionReport {
    store
        .meta(&key(journal, server))
        .ok()
        .flatten()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Records every report agents send, for as long as the control plane runs.
pub async fn watch(
    store: Store,
    logs: Logs,
    mut reports: Receiver<(ServerKey, SupervisionReport)>,
) {
    let mut last: HashMap<ServerKey, Instant> = HashMap::new();
    loop {
        match reports.recv().await {
            Ok(((dep, server), report)) => {
                let key = (dep.clone(), server.clone());
                if last.get(&key).is_some_and(|t| t.elapsed() < MIN_REPORT_GAP) {
                    continue;
                }
                // Servers come and go: only the recent ones need remembering.
                if last.len() >= 4096 {
                    last.retain(|_, t| t.elapsed() < MIN_REPORT_GAP);
                }
                last.insert(key, Instant::now());
                if let Err(e) = note(&store, &logs, &dep, &server, report) {
                    let subject = Subject {
                        deployment: Some(&dep),
                        server: Some(&server),
                        ..Subject::default()
                    };
                    let message = format!("recording a supervision report: {e}");
                    logs.warn(Component::MonitorServer, subject, &message);
                }
            }
            // Missed reports are superseded by the next snapshot.
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        }
    }
}

fn note(
    store: &Store,
    logs: &Logs,
    dep: &str,
    server: &str,
    report: SupervisionReport,
) -> Result<(), StoreError> {
    let journal = stratus_engine::steps::journal_of(store, dep)?;
    let before = report_of(store, &journal, server);
    if before == report {
        return Ok(());
    }
    for p in &report.processes {
        let was = before
            .processes
            .iter()
            .find(|b| b.owner == p.owner && b.name == p.name);
        log_change(logs, dep, server, was, p);
    }
    let text = serde_json::to_string(&report).unwrap_or_default();
    store.set_meta(&key(&journal, server), &text)
}

/// An event when a process was started again, a warning when it entered a crash loop.
fn log_change(
    logs: &Logs,
    dep: &str,
    server: &str,
    was: Option<&ProcessReport>,
    p: &ProcessReport,
) {
    let subject = Subject {
        deployment: Some(dep),
        server: Some(server),
        service: Some(&p.owner),
        ..Subject::default()
    };
    let restarts_before = was.map_or(0, |w| w.restarts);
    if p.crash_loop && !was.is_some_and(|w| w.crash_loop) {
        let message = format!(
            "process {} of {} on {server} is in a crash loop: {} quick exits in a row, last {}",
            p.name, p.owner, p.quick_exits_in_a_row, p.last_exit
        );
        logs.warn(Component::MonitorServer, subject, &message);
    } else if p.restarts > restarts_before {
        let message = format!(
            "process {} of {} on {server} started again by its supervisor ({} restart(s); it ended: {})",
            p.name, p.owner, p.restarts, p.last_exit
        );
        logs.info(Component::MonitorServer, subject, &message);
    }
}
