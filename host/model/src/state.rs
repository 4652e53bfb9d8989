//! The state machines of deployments, agents and services. Each machine is a state enum, an
//! event enum and one pure `next` function; anything not in its table is an
//! [`IllegalTransition`], so the engine can never move a state silently.
//!
//! States and events serialize with their operator-facing names: `"LAUNCHING"`, and
//! `{"FAILED": {"reason": "…"}}` for a failed state (`{"FAILED": "…"}` for the event).

mod agent;
mod deployment;
mod service;

pub use agent::{AgentEvent, AgentState};
pub use deployment::{DeploymentEvent, DeploymentState};
pub use service::{ServiceEvent, ServiceState};

/// An event that the current state does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{machine} in state {state} does not accept event {event}")]
pub struct IllegalTransition {
    /// `deployment`, `agent` or `service`.
    pub machine: &'static str,
    /// The state's name, e.g. `RUNNING`.
    pub state: &'static str,
    /// The event's name, e.g. `SCALE_DONE`.
    pub event: &'static str,
}

/// Writes `NAME` or `FAILED: reason`.
fn fmt_state(
    f: &mut std::fmt::Formatter<'_>,
    name: &str,
    reason: Option<&str>,
) -> std::fmt::Result {
    match reason {
        Some(r) => write!(f, "{name}: {r}"),
        None => f.write_str(name),
    }
}

/// Checks a machine against an explicit table with one row per (state, event) pair:
/// `STATE EVENT -> RESULT` where RESULT is the resulting state's Display or `illegal`.
/// `states` and `events` come from exhaustive matches in the callers' tests, so a new
/// variant either fails to compile or lacks rows here.
#[cfg(test)]
pub(crate) fn check_table<S, E>(
    states: &[S],
    events: &[E],
    table: &str,
    next: impl Fn(&S, E) -> Result<S, IllegalTransition>,
    state_name: impl Fn(&S) -> &'static str,
    event_name: impl Fn(&E) -> &'static str,
) where
    S: std::fmt::Display,
    E: Clone,
{
    use std::collections::BTreeMap;
    let mut rows: BTreeMap<(String, String), String> = BTreeMap::new();
    for line in table.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (pair, result) = line.split_once("->").expect("row has ->");
        let mut words = pair.split_whitespace();
        let key = (
            words.next().unwrap().to_string(),
            words.next().unwrap().to_string(),
        );
        let old = rows.insert(key.clone(), result.trim().to_string());
        assert!(old.is_none(), "duplicate row {key:?}");
    }
    assert_eq!(rows.len(), states.len() * events.len(), "one row per pair");
    for s in states {
        for e in events {
            let key = (state_name(s).to_string(), event_name(e).to_string());
            let expected = rows
                .get(&key)
                .unwrap_or_else(|| panic!("no row for {key:?}"));
            let got = match next(s, e.clone()) {
                Ok(n) => n.to_string(),
                Err(err) => {
                    assert_eq!((err.state, err.event), (key.0.as_str(), key.1.as_str()));
                    "illegal".to_string()
                }
            };
            assert_eq!(&got, expected, "{} + {}", key.0, key.1);
        }
    }
}

/// Lists every value reachable through `succ` from `first`: the callers' `succ` is an
/// exhaustive match, so adding a variant forces adding it to the enumeration.
#[cfg(test)]
pub(crate) fn enumerate<T>(first: T, succ: impl Fn(&T) -> Option<T>) -> Vec<T> {
    let mut all = vec![first];
    while let Some(n) = succ(all.last().expect("non-empty")) {
        all.push(n);
    }
    all
}
