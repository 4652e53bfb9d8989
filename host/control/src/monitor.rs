//! The monitor's view of agents between launch steps: an agent whose connection closes is
//! LOST, and RUNNING again when it reconnects (as every agent does after a control-plane
//! restart). Transitions go through the model's function, so a terminated agent stays
//! TERMINATED and one still STARTING waits for its launch step's handshake.

use crate::dispatcher::{Dispatcher, ServerKey};
use std::collections::HashSet;
use std::time::Duration;
use stratus_engine::Engine;
use stratus_engine::logs::{Component, Subject};
use stratus_model::state::{AgentEvent, AgentState};
use stratus_protocol::AgentRequest;

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
        for key in now.difference(&known) {
            // An agent started again by other means (a reboot) has a new pid: the provider
            // must watch and end that one, and recovery must not take the old one's death
            // for the server's.
            if let Some(pid) = dispatcher.pid_of(key).await
                && note_pid(&engine, key, pid)
            {
                // A new agent process: the health checks died with the old one.
                let (engine, (dep, server)) = (engine.clone(), key.clone());
                tokio::spawn(async move {
                    if let Err(e) = engine.rewatch_health(&dep, &server).await {
                        tracing::warn!(error = %e, %server, "health checks not scheduled again");
                    }
                });
            }
            let (dep, server) = key;
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

/// Records a reconnected agent's pid in its server's handle, as its provider wants it; says
/// whether it changed (a new agent process).
fn note_pid(engine: &Engine, (dep, server): &ServerKey, pid: u32) -> bool {
    match engine.reattached(dep, server, pid) {
        Ok(changed) => changed,
        Err(e) => {
            tracing::warn!(error = %e, "recording a reconnected agent's pid");
            false
        }
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

/// How often every connected agent is pinged.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long an agent may take to answer a ping before its connection is dropped. An agent
/// answers pings while it runs hooks (each request has its own task), so only a frozen or
/// wedged agent misses it.
pub const HEARTBEAT_LIMIT: Duration = Duration::from_secs(10);

/// Runs until the control plane stops: an agent whose process is frozen (stopped, swapped
/// out, its machine hung) keeps its connection open but answers nothing; without this it
/// would stay RUNNING for ever and never be replaced.
pub async fn heartbeat(engine: Engine, dispatcher: Dispatcher) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let keys = dispatcher.connected().await;
        let pings = keys.into_iter().map(|key| {
            let dispatcher = dispatcher.clone();
            let engine = engine.clone();
            async move {
                let answer = dispatcher
                    .call(&key, AgentRequest::Ping, HEARTBEAT_LIMIT)
                    .await;
                if let Err(crate::dispatcher::DispatchError::Timeout(..)) = answer {
                    let subject = Subject {
                        deployment: Some(&key.0),
                        server: Some(&key.1),
                        ..Subject::default()
                    };
                    let message = format!(
                        "agent did not answer a ping within {} s: dropping its connection",
                        HEARTBEAT_LIMIT.as_secs()
                    );
                    engine
                        .parts()
                        .logs
                        .warn(Component::MonitorServer, subject, &message);
                    dispatcher.sever(&key).await;
                }
            }
        });
        futures::future::join_all(pings).await;
    }
}
