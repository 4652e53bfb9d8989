//! A server's agent: STARTING until its handshake, RUNNING while connected, LOST when the
//! connection drops, ENDING once its server is being ended, TERMINATED when its server is
//! released. ENDING lasts while the provider cannot end the server (its host unreachable), so
//! nobody takes for ended a server whose processes and disk may still be there.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::IllegalTransition;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AgentState {
    Starting,
    Running,
    Lost,
    /// Its end began and has not been confirmed by the provider yet.
    Ending,
    Terminated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AgentEvent {
    /// The agent authenticated with the dispatcher for the first time in its process.
    Handshake,
    /// The connection dropped or heartbeats stopped.
    Lost,
    /// The same agent process reconnected.
    Reconnected,
    /// Its server's end began: the agent is asked to go, the provider to end the server.
    Ending,
    /// Its server was released.
    Terminated,
}

impl AgentState {
    /// The one transition function of agents.
    pub fn next(&self, event: AgentEvent) -> Result<AgentState, IllegalTransition> {
        use AgentEvent as E;
        use AgentState as S;
        Ok(match (self, event) {
            // A lost agent may come back as the same process or as a restarted one.
            (S::Starting | S::Lost, E::Handshake) => S::Running,
            (S::Lost, E::Reconnected) => S::Running,
            // An agent that never handshakes is lost too, so the monitor can replace it.
            (S::Starting | S::Running, E::Lost) => S::Lost,
            // An ending agent stays ENDING whatever its connection does, until the provider
            // confirms the end: its closing connection is not a loss, nor its return a comeback.
            (S::Starting | S::Running | S::Lost, E::Ending) => S::Ending,
            (S::Starting | S::Running | S::Lost | S::Ending, E::Terminated) => S::Terminated,
            (state, event) => {
                return Err(IllegalTransition {
                    machine: "agent",
                    state: state.name(),
                    event: event.name(),
                });
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            AgentState::Starting => "STARTING",
            AgentState::Running => "RUNNING",
            AgentState::Lost => "LOST",
            AgentState::Ending => "ENDING",
            AgentState::Terminated => "TERMINATED",
        }
    }
}

impl AgentEvent {
    pub fn name(&self) -> &'static str {
        match self {
            AgentEvent::Handshake => "HANDSHAKE",
            AgentEvent::Lost => "LOST",
            AgentEvent::Reconnected => "RECONNECTED",
            AgentEvent::Ending => "ENDING",
            AgentEvent::Terminated => "TERMINATED",
        }
    }
}

impl fmt::Display for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for AgentEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{check_table, enumerate};
    use AgentEvent as E;
    use AgentState as S;

    const TABLE: &str = "
        STARTING HANDSHAKE -> RUNNING
        STARTING LOST -> LOST
        STARTING RECONNECTED -> illegal
        STARTING ENDING -> ENDING
        STARTING TERMINATED -> TERMINATED
        RUNNING HANDSHAKE -> illegal
        RUNNING LOST -> LOST
        RUNNING RECONNECTED -> illegal
        RUNNING ENDING -> ENDING
        RUNNING TERMINATED -> TERMINATED
        LOST HANDSHAKE -> RUNNING
        LOST LOST -> illegal
        LOST RECONNECTED -> RUNNING
        LOST ENDING -> ENDING
        LOST TERMINATED -> TERMINATED
        ENDING HANDSHAKE -> illegal
        ENDING LOST -> illegal
        ENDING RECONNECTED -> illegal
        ENDING ENDING -> illegal
        ENDING TERMINATED -> TERMINATED
        TERMINATED HANDSHAKE -> illegal
        TERMINATED LOST -> illegal
        TERMINATED RECONNECTED -> illegal
        TERMINATED ENDING -> illegal
        TERMINATED TERMINATED -> illegal
    ";

    #[test]
    fn every_pair_matches_the_table() {
        let states = enumerate(S::Starting, |s| match s {
            S::Starting => Some(S::Running),
            S::Running => Some(S::Lost),
            S::Lost => Some(S::Ending),
            S::Ending => Some(S::Terminated),
            S::Terminated => None,
        });
        let events = enumerate(E::Handshake, |e| match e {
            E::Handshake => Some(E::Lost),
            E::Lost => Some(E::Reconnected),
            E::Reconnected => Some(E::Ending),
            E::Ending => Some(E::Terminated),
            E::Terminated => None,
        });
        check_table(&states, &events, TABLE, S::next, S::name, E::name);
    }

    #[test]
    fn serde_uses_operator_names() {
        assert_eq!(serde_json::to_string(&S::Running).unwrap(), "\"RUNNING\"");
        assert_eq!(serde_json::from_str::<S>("\"LOST\"").unwrap(), S::Lost);
        assert_eq!(
            serde_json::to_string(&E::Reconnected).unwrap(),
            "\"RECONNECTED\""
        );
    }
}
