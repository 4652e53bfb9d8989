//! The monitor's view of agents between launch steps: an agent whose connection closes is
//! LOST, and RUNNING again when it reconnects (as every agent does after a control-plane
//! restart). Transitions go through the model's function, so a terminated agent stays
//! TERMINATED and one still STARTING waits for its launch step's handshake.

use crate::dispatcher::{Dispatcher, ServerKey};
use std::collections::HashSet;
use stratus_engine::Engine;
use stratus_engine::logs::{Component, Subject};
use stratus_model::state::{AgentEvent, AgentState};

/// Runs until the dispatcher goes away.
pub async fn watch_agents(engine: Engine, dispatcher: Dispatcher) {
    let mut changes = dispatcher.subscribe();
    let mut known: HashSet<ServerKey> = dispatcher.connected().await;
    while changes.changed().await.is_ok() {
        let now = dispatcher.connected().await;
        for (dep, server) in known.difference(&now) {
            record(
                &engine,
                dep,
                server,
                AgentEvent::Lost,
                "agent LOST: its connection closed",
            );
        }
        for (dep, server) in now.difference(&known) {
            record(
                &engine,
                dep,
                server,
                AgentEvent::Reconnected,
                "agent RUNNING again",
            );
        }
        known = now;
    }
}

fn record(engine: &Engine, dep: &str, server: &str, event: AgentEvent, message: &str) {
    match engine.agent_event(dep, server, event) {
        Ok(Some(state)) => {
            let subject = Subject {
                deployment: Some(dep),
                server: Some(server),
                ..Subject::default()
            };
            let logs = &engine.parts().logs;
            if state == AgentState::Lost {
                logs.warn(Component::MonitorServer, subject, message);
            } else {
                logs.info(Component::MonitorServer, subject, message);
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "recording an agent's state"),
    }
}
