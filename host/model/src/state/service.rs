//! A service on one server. It is PAUSED while it is installed and configured (hooks such as
//! `install-service` and `configure` do not change its state), STARTING while its `start`
//! hook runs, RUNNING after it, STOPPED after `stop`, FAILED with the reason of a failed hook.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{IllegalTransition, fmt_state};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceState {
    Paused,
    Starting,
    Running,
    Stopped,
    Failed { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceEvent {
    /// (Re)installation begins: back to PAUSED from a stopped or failed service.
    Install,
    /// The `start` hook is called.
    Start,
    /// The `start` hook succeeded.
    Started,
    /// The `stop` hook succeeded.
    Stopped,
    /// A hook failed, trapped or timed out.
    Failed(String),
}

impl ServiceState {
    /// The one transition function of services.
    pub fn next(&self, event: ServiceEvent) -> Result<ServiceState, IllegalTransition> {
        use ServiceEvent as E;
        use ServiceState as S;
        Ok(match (self, event) {
            (S::Paused | S::Stopped | S::Failed { .. }, E::Install) => S::Paused,
            // A paused service is started after `configure`; a failed one may be restarted.
            (S::Paused | S::Stopped | S::Failed { .. }, E::Start) => S::Starting,
            (S::Starting, E::Started) => S::Running,
            // Step 6 of a launch runs `stop` before `start` even on a fresh (PAUSED) service,
            // and a failed service is stopped before its server goes away.
            (S::Paused | S::Starting | S::Running | S::Failed { .. }, E::Stopped) => S::Stopped,
            (S::Paused | S::Starting | S::Running | S::Stopped, E::Failed(reason)) => {
                S::Failed { reason }
            }
            (state, event) => {
                return Err(IllegalTransition {
                    machine: "service",
                    state: state.name(),
                    event: event.name(),
                });
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            ServiceState::Paused => "PAUSED",
            ServiceState::Starting => "STARTING",
            ServiceState::Running => "RUNNING",
            ServiceState::Stopped => "STOPPED",
            ServiceState::Failed { .. } => "FAILED",
        }
    }
}

impl ServiceEvent {
    pub fn name(&self) -> &'static str {
        match self {
            ServiceEvent::Install => "INSTALL",
            ServiceEvent::Start => "START",
            ServiceEvent::Started => "STARTED",
            ServiceEvent::Stopped => "STOPPED",
            ServiceEvent::Failed(_) => "FAILED",
        }
    }
}

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = match self {
            ServiceState::Failed { reason } => Some(reason.as_str()),
            _ => None,
        };
        fmt_state(f, self.name(), reason)
    }
}

impl fmt::Display for ServiceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{check_table, enumerate};
    use ServiceEvent as E;
    use ServiceState as S;

    const TABLE: &str = "
        PAUSED INSTALL -> PAUSED
        PAUSED START -> STARTING
        PAUSED STARTED -> illegal
        PAUSED STOPPED -> STOPPED
        PAUSED FAILED -> FAILED: boom
        STARTING INSTALL -> illegal
        STARTING START -> illegal
        STARTING STARTED -> RUNNING
        STARTING STOPPED -> STOPPED
        STARTING FAILED -> FAILED: boom
        RUNNING INSTALL -> illegal
        RUNNING START -> illegal
        RUNNING STARTED -> illegal
        RUNNING STOPPED -> STOPPED
        RUNNING FAILED -> FAILED: boom
        STOPPED INSTALL -> PAUSED
        STOPPED START -> STARTING
        STOPPED STARTED -> illegal
        STOPPED STOPPED -> illegal
        STOPPED FAILED -> FAILED: boom
        FAILED INSTALL -> PAUSED
        FAILED START -> STARTING
        FAILED STARTED -> illegal
        FAILED STOPPED -> STOPPED
        FAILED FAILED -> illegal
    ";

    #[test]
    fn every_pair_matches_the_table() {
        let states = enumerate(S::Paused, |s| match s {
            S::Paused => Some(S::Starting),
            S::Starting => Some(S::Running),
            S::Running => Some(S::Stopped),
            S::Stopped => Some(S::Failed {
                reason: "boom".into(),
            }),
            S::Failed { .. } => None,
        });
        let events = enumerate(E::Install, |e| match e {
            E::Install => Some(E::Start),
            E::Start => Some(E::Started),
            E::Started => Some(E::Stopped),
            E::Stopped => Some(E::Failed("boom".into())),
            E::Failed(_) => None,
        });
        check_table(&states, &events, TABLE, S::next, S::name, E::name);
    }

    #[test]
    fn launch_sequence_of_a_database() {
        // install-service, install-data-source, configure keep it PAUSED; then stop, start.
        let mut s = S::Paused;
        for e in [E::Install, E::Stopped, E::Start, E::Started] {
            s = s.next(e).unwrap();
        }
        assert_eq!(s, S::Running);
    }

    #[test]
    fn serde_and_display() {
        let f = S::Failed {
            reason: "start: exit 1".into(),
        };
        assert_eq!(f.to_string(), "FAILED: start: exit 1");
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(json, r#"{"FAILED":{"reason":"start: exit 1"}}"#);
        assert_eq!(serde_json::to_string(&S::Paused).unwrap(), "\"PAUSED\"");
        let e = serde_json::to_string(&E::Failed("x".into())).unwrap();
        assert_eq!(e, r#"{"FAILED":"x"}"#);
    }
}
