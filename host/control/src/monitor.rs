//! The monitor's view of agents between launch steps: an agent whose connection closes is
//! LOST, and RUNNING again when it reconnects (as every agent does after a control-plane
//! restart). Transitions go through the model's function, so a terminated agent stays
//! TERMINATED and one still STARTING waits for its launch step's handshake.

use crate::dispatcher::{Dispatcher, LiveConnection, ServerKey, next_look};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use stratus_engine::Engine;
use stratus_engine::logs::{Component, Subject};
use stratus_model::state::{AgentEvent, AgentState};
use stratus_protocol::AgentRequest;

/// Runs until the dispatcher goes away. Connections are compared by generation, not by
/// server: change notifications coalesce (and looks are at least
/// [`CHANGES_GATHER`](crate::dispatcher::CHANGES_GATHER) apart), so an agent that is killed
/// and started again before this task looks shows up as the same server with a new
/// connection, and one that connected and closed between two looks is among the
/// dispatcher's closed connections.
pub async fn watch_agents(engine: Engine, dispatcher: Dispatcher) {
    let mut changes = dispatcher.subscribe();
    let (mut known, _) = dispatcher.take_closed().await;
    let mut last = None;
    while changes.changed().await.is_ok() {
        tokio::time::sleep_until(next_look(last)).await;
        last = Some(tokio::time::Instant::now());
        changes.mark_unchanged();
        let (now, closed) = dispatcher.take_closed().await;
        for (dep, server) in lost(&known, &now, &closed) {
            record(
                &engine,
                dep,
                server,
                AgentEvent::Lost,
                "agent LOST: its connection closed",
            );
        }
        for (key, pid) in ended(&now, &known).map(|k| (k, now[k].pid)) {
            // An agent started again by other means (a reboot) has a new pid: the provider
            // must watch and end that one, and recovery must not take the old one's death
            // for the server's.
            if note_pid(&engine, key, pid) {
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

/// The servers to record LOST, each once: those whose connection in `before` is not in
/// `after`, and those with a connection in `closed` that `before` did not hold (it came and
/// went between the two looks).
fn lost<'a>(
    before: &'a HashMap<ServerKey, LiveConnection>,
    after: &'a HashMap<ServerKey, LiveConnection>,
    closed: &'a [(ServerKey, LiveConnection)],
) -> BTreeSet<&'a ServerKey> {
    let unseen = closed
        .iter()
        .filter(|(key, c)| before.get(key) != Some(c))
        .map(|(key, _)| key);
    ended(before, after).chain(unseen).collect()
}

/// The connections of `before` that `after` no longer holds (gone, or replaced by another).
fn ended<'a>(
    before: &'a HashMap<ServerKey, LiveConnection>,
    after: &'a HashMap<ServerKey, LiveConnection>,
) -> impl Iterator<Item = &'a ServerKey> {
    before
        .iter()
        .filter(|(key, c)| after.get(*key) != Some(*c))
        .map(|(key, _)| key)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(server: &str) -> ServerKey {
        ("shop".to_string(), server.to_string())
    }

    fn conn(generation: u64, pid: u32) -> LiveConnection {
        LiveConnection { generation, pid }
    }

    /// What a first look saw: lb-1, app-1 and db-1 connected.
    fn first_look() -> HashMap<ServerKey, LiveConnection> {
        HashMap::from([
            (key("lb-1"), conn(1, 100)),
            (key("app-1"), conn(2, 200)),
            (key("db-1"), conn(3, 300)),
        ])
    }

    /// Seen between two looks: lb-1 killed and started again (a new connection), app-1
    /// untouched, db-1 gone, web-1 new.
    #[test]
    fn a_connection_replaced_between_two_looks_is_both_lost_and_back() {
        let before = first_look();
        let after = HashMap::from([
            (key("lb-1"), conn(7, 700)),
            (key("app-1"), conn(2, 200)),
            (key("web-1"), conn(8, 800)),
        ]);
        let mut lost: Vec<_> = ended(&before, &after).cloned().collect();
        lost.sort();
        assert_eq!(lost, [key("db-1"), key("lb-1")]);
        let mut back: Vec<_> = ended(&after, &before).cloned().collect();
        back.sort();
        assert_eq!(back, [key("lb-1"), key("web-1")]);
    }

    /// Between two looks: api-1 connected and closed (in neither look), lb-1's connection closed
    /// and its next one too (each once in the closed list), db-1's seen connection closed.
    /// Each is LOST once; app-1, untouched, is not.
    #[test]
    fn a_connection_that_came_and_went_between_two_looks_is_lost() {
        let before = first_look();
        let after = HashMap::from([(key("app-1"), conn(2, 200))]);
        let closed = [
            (key("db-1"), conn(3, 300)),
            (key("api-1"), conn(4, 400)),
            (key("lb-1"), conn(1, 100)),
            (key("lb-1"), conn(5, 500)),
        ];
        let lost: Vec<_> = lost(&before, &after, &closed)
            .into_iter()
            .cloned()
            .collect();
        assert_eq!(lost, [key("api-1"), key("db-1"), key("lb-1")]);
        assert!(super::lost(&before, &before, &[]).is_empty());
    }
}
