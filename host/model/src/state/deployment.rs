//! The deployment's life: PENDING → LAUNCHING → RUNNING ⇄ SCALING → STOPPING → TERMINATED,
//! with DEGRADED while a tier is short of its target (a server lost, not yet replaced), and
//! FAILED reachable from every live state.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{IllegalTransition, fmt_state};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentState {
    /// Accepted, nothing launched yet.
    Pending,
    /// Scaling every tier from 0 to `min` and configuring services in DAG order.
    Launching,
    Running,
    /// A scaling event (scale up/down or auto-recovery) is under way.
    Scaling,
    /// Up, but some tier is short of its target count of running servers; the reason says
    /// which servers are missing.
    Degraded {
        reason: String,
    },
    /// Terminating: services stopped in reverse DAG order, servers released.
    Stopping,
    Terminated,
    /// A step failed; the operator can relaunch (hooks are idempotent) or terminate.
    Failed {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentEvent {
    LaunchRequested,
    AllServicesRunning,
    ScaleRequested,
    ScaleDone,
    /// A server stopped answering (or is gone); the reason names it.
    Degraded(String),
    /// Every tier has its target again without a scaling event (a lost agent came back).
    Recovered,
    TerminateRequested,
    AllStopped,
    Failed(String),
}

impl DeploymentState {
    /// The one transition function of deployments.
    pub fn next(&self, event: DeploymentEvent) -> Result<DeploymentState, IllegalTransition> {
        use DeploymentEvent as E;
        use DeploymentState as S;
        Ok(match (self, event) {
            (S::Pending | S::Failed { .. }, E::LaunchRequested) => S::Launching,
            (S::Launching, E::AllServicesRunning) => S::Running,
            // A scaling event arriving while one runs joins it.
            (S::Running | S::Scaling | S::Degraded { .. }, E::ScaleRequested) => S::Scaling,
            (S::Scaling, E::ScaleDone) => S::Running,
            // While launching or scaling, the reconciler itself deals with a lost server.
            (S::Running | S::Degraded { .. }, E::Degraded(reason)) => S::Degraded { reason },
            (S::Degraded { .. }, E::Recovered) => S::Running,
            // Repeating a terminate request is harmless, so STOPPING accepts it.
            (
                S::Pending
                | S::Launching
                | S::Running
                | S::Scaling
                | S::Degraded { .. }
                | S::Stopping
                | S::Failed { .. },
                E::TerminateRequested,
            ) => S::Stopping,
            (S::Stopping, E::AllStopped) => S::Terminated,
            (
                S::Pending
                | S::Launching
                | S::Running
                | S::Scaling
                | S::Degraded { .. }
                | S::Stopping,
                E::Failed(reason),
            ) => S::Failed { reason },
            (state, event) => {
                return Err(IllegalTransition {
                    machine: "deployment",
                    state: state.name(),
                    event: event.name(),
                });
            }
        })
    }

    /// The state's name without its reason, e.g. `FAILED`.
    pub fn name(&self) -> &'static str {
        match self {
            DeploymentState::Pending => "PENDING",
            DeploymentState::Launching => "LAUNCHING",
            DeploymentState::Running => "RUNNING",
            DeploymentState::Scaling => "SCALING",
            DeploymentState::Degraded { .. } => "DEGRADED",
            DeploymentState::Stopping => "STOPPING",
            DeploymentState::Terminated => "TERMINATED",
            DeploymentState::Failed { .. } => "FAILED",
        }
    }

    /// No event leaves this state.
    pub fn is_terminal(&self) -> bool {
        matches!(self, DeploymentState::Terminated)
    }
}

impl DeploymentEvent {
    pub fn name(&self) -> &'static str {
        match self {
            DeploymentEvent::LaunchRequested => "LAUNCH_REQUESTED",
            DeploymentEvent::AllServicesRunning => "ALL_SERVICES_RUNNING",
            DeploymentEvent::ScaleRequested => "SCALE_REQUESTED",
            DeploymentEvent::ScaleDone => "SCALE_DONE",
            DeploymentEvent::Degraded(_) => "DEGRADED",
            DeploymentEvent::Recovered => "RECOVERED",
            DeploymentEvent::TerminateRequested => "TERMINATE_REQUESTED",
            DeploymentEvent::AllStopped => "ALL_STOPPED",
            DeploymentEvent::Failed(_) => "FAILED",
        }
    }
}

impl fmt::Display for DeploymentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = match self {
            DeploymentState::Failed { reason } | DeploymentState::Degraded { reason } => {
                Some(reason.as_str())
            }
            _ => None,
        };
        fmt_state(f, self.name(), reason)
    }
}

impl fmt::Display for DeploymentEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{check_table, enumerate};
    use DeploymentEvent as E;
    use DeploymentState as S;

    fn states() -> Vec<S> {
        enumerate(S::Pending, |s| match s {
            S::Pending => Some(S::Launching),
            S::Launching => Some(S::Running),
            S::Running => Some(S::Scaling),
            S::Scaling => Some(S::Degraded {
                reason: "app-1 lost".into(),
            }),
            S::Degraded { .. } => Some(S::Stopping),
            S::Stopping => Some(S::Terminated),
            S::Terminated => Some(S::Failed {
                reason: "boom".into(),
            }),
            S::Failed { .. } => None,
        })
    }

    fn events() -> Vec<E> {
        enumerate(E::LaunchRequested, |e| match e {
            E::LaunchRequested => Some(E::AllServicesRunning),
            E::AllServicesRunning => Some(E::ScaleRequested),
            E::ScaleRequested => Some(E::ScaleDone),
            E::ScaleDone => Some(E::Degraded("app-1 lost".into())),
            E::Degraded(_) => Some(E::Recovered),
            E::Recovered => Some(E::TerminateRequested),
            E::TerminateRequested => Some(E::AllStopped),
            E::AllStopped => Some(E::Failed("boom".into())),
            E::Failed(_) => None,
        })
    }

    const TABLE: &str = "
        PENDING LAUNCH_REQUESTED -> LAUNCHING
        PENDING ALL_SERVICES_RUNNING -> illegal
        PENDING SCALE_REQUESTED -> illegal
        PENDING SCALE_DONE -> illegal
        PENDING DEGRADED -> illegal
        PENDING RECOVERED -> illegal
        PENDING TERMINATE_REQUESTED -> STOPPING
        PENDING ALL_STOPPED -> illegal
        PENDING FAILED -> FAILED: boom
        LAUNCHING LAUNCH_REQUESTED -> illegal
        LAUNCHING ALL_SERVICES_RUNNING -> RUNNING
        LAUNCHING SCALE_REQUESTED -> illegal
        LAUNCHING SCALE_DONE -> illegal
        LAUNCHING DEGRADED -> illegal
        LAUNCHING RECOVERED -> illegal
        LAUNCHING TERMINATE_REQUESTED -> STOPPING
        LAUNCHING ALL_STOPPED -> illegal
        LAUNCHING FAILED -> FAILED: boom
        RUNNING LAUNCH_REQUESTED -> illegal
        RUNNING ALL_SERVICES_RUNNING -> illegal
        RUNNING SCALE_REQUESTED -> SCALING
        RUNNING SCALE_DONE -> illegal
        RUNNING DEGRADED -> DEGRADED: app-1 lost
        RUNNING RECOVERED -> illegal
        RUNNING TERMINATE_REQUESTED -> STOPPING
        RUNNING ALL_STOPPED -> illegal
        RUNNING FAILED -> FAILED: boom
        SCALING LAUNCH_REQUESTED -> illegal
        SCALING ALL_SERVICES_RUNNING -> illegal
        SCALING SCALE_REQUESTED -> SCALING
        SCALING SCALE_DONE -> RUNNING
        SCALING DEGRADED -> illegal
        SCALING RECOVERED -> illegal
        SCALING TERMINATE_REQUESTED -> STOPPING
        SCALING ALL_STOPPED -> illegal
        SCALING FAILED -> FAILED: boom
        DEGRADED LAUNCH_REQUESTED -> illegal
        DEGRADED ALL_SERVICES_RUNNING -> illegal
        DEGRADED SCALE_REQUESTED -> SCALING
        DEGRADED SCALE_DONE -> illegal
        DEGRADED DEGRADED -> DEGRADED: app-1 lost
        DEGRADED RECOVERED -> RUNNING
        DEGRADED TERMINATE_REQUESTED -> STOPPING
        DEGRADED ALL_STOPPED -> illegal
        DEGRADED FAILED -> FAILED: boom
        STOPPING LAUNCH_REQUESTED -> illegal
        STOPPING ALL_SERVICES_RUNNING -> illegal
        STOPPING SCALE_REQUESTED -> illegal
        STOPPING SCALE_DONE -> illegal
        STOPPING DEGRADED -> illegal
        STOPPING RECOVERED -> illegal
        STOPPING TERMINATE_REQUESTED -> STOPPING
        STOPPING ALL_STOPPED -> TERMINATED
        STOPPING FAILED -> FAILED: boom
        TERMINATED LAUNCH_REQUESTED -> illegal
        TERMINATED ALL_SERVICES_RUNNING -> illegal
        TERMINATED SCALE_REQUESTED -> illegal
        TERMINATED SCALE_DONE -> illegal
        TERMINATED DEGRADED -> illegal
        TERMINATED RECOVERED -> illegal
        TERMINATED TERMINATE_REQUESTED -> illegal
        TERMINATED ALL_STOPPED -> illegal
        TERMINATED FAILED -> illegal
        FAILED LAUNCH_REQUESTED -> LAUNCHING
        FAILED ALL_SERVICES_RUNNING -> illegal
        FAILED SCALE_REQUESTED -> illegal
        FAILED SCALE_DONE -> illegal
        FAILED DEGRADED -> illegal
        FAILED RECOVERED -> illegal
        FAILED TERMINATE_REQUESTED -> STOPPING
        FAILED ALL_STOPPED -> illegal
        FAILED FAILED -> illegal
    ";

    #[test]
    fn every_pair_matches_the_table() {
        check_table(&states(), &events(), TABLE, S::next, S::name, E::name);
    }

    #[test]
    fn failure_carries_its_reason() {
        let s = S::Running.next(E::Failed("disk full".into())).unwrap();
        assert_eq!(
            s,
            S::Failed {
                reason: "disk full".into()
            }
        );
        assert_eq!(s.to_string(), "FAILED: disk full");
    }

    #[test]
    fn illegal_transition_names_state_and_event() {
        let err = S::Terminated.next(E::LaunchRequested).unwrap_err();
        assert_eq!(
            err.to_string(),
            "deployment in state TERMINATED does not accept event LAUNCH_REQUESTED"
        );
    }

    #[test]
    fn serde_uses_operator_names() {
        assert_eq!(
            serde_json::to_string(&S::Launching).unwrap(),
            "\"LAUNCHING\""
        );
        let failed = S::Failed { reason: "x".into() };
        let json = serde_json::to_string(&failed).unwrap();
        assert_eq!(json, r#"{"FAILED":{"reason":"x"}}"#);
        assert_eq!(serde_json::from_str::<S>(&json).unwrap(), failed);
        let e = serde_json::to_string(&E::ScaleDone).unwrap();
        assert_eq!(e, "\"SCALE_DONE\"");
        assert!(S::Terminated.is_terminal() && !failed.is_terminal());
    }
}
