//! Gauges computed from the store at each scrape: how many deployments are in each state and
//! how many servers' agents are in each agent state. Every state is shown, 0 included, so a
//! series does not vanish when its last member moves on.

use crate::TelemetryError;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use stratus_model::state::{AgentState, DeploymentState};
use stratus_store::Store;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabel {
    agent_state: &'static str,
}

/// Every deployment state's name, in life order.
fn deployment_states() -> [&'static str; 8] {
    let reason = String::new;
    [
        DeploymentState::Pending,
        DeploymentState::Launching,
        DeploymentState::Running,
        DeploymentState::Scaling,
        DeploymentState::Degraded { reason: reason() },
        DeploymentState::Stopping,
        DeploymentState::Terminated,
        DeploymentState::Failed { reason: reason() },
    ]
    .map(|s| s.name())
}

const AGENT_STATES: [AgentState; 5] = [
    AgentState::Starting,
    AgentState::Running,
    AgentState::Lost,
    AgentState::Ending,
    AgentState::Terminated,
];

/// Registers both gauges, filled from `store`.
pub(crate) fn register(registry: &mut Registry, store: &Store) -> Result<(), TelemetryError> {
    let deployments = Family::<StateLabel, Gauge>::default();
    let servers = Family::<AgentLabel, Gauge>::default();
    for state in deployment_states() {
        let _ = deployments.get_or_create(&StateLabel { state });
    }
    for state in AGENT_STATES {
        let agent_state = state.name();
        let _ = servers.get_or_create(&AgentLabel { agent_state });
    }
    for row in store.deployments::<DeploymentState>()? {
        let state = row.state.name();
        deployments.get_or_create(&StateLabel { state }).inc();
        for server in store.servers::<AgentState>(&row.name)? {
            let agent_state = server.agent_state.name();
            servers.get_or_create(&AgentLabel { agent_state }).inc();
        }
    }
    registry.register("deployments", "Deployments in each state", deployments);
    registry.register(
        "servers",
        "Servers of every deployment whose agent is in each state",
        servers,
    );
    Ok(())
}
