//! Every state the engine records goes through the model's one transition function per
//! machine, so a deployment, agent or service can only move along a legal edge. An event that
//! is not legal from the recorded state is not written: on resume the engine replays events
//! whose effect is already recorded (e.g. `Start` for a service that reached RUNNING before
//! the crash), and those must change nothing.

use crate::engine::{Engine, EngineError};
use stratus_model::ServerId;
use stratus_model::spec::ServiceSpec;
use stratus_model::state::{
    AgentEvent, AgentState, DeploymentEvent, DeploymentState, ServiceEvent, ServiceState,
};

/// Attempts at moving a deployment's state while other tasks keep changing it.
const MAX_STATE_SWAPS: u32 = 16;

impl Engine {
    /// Applies `event` to the deployment's recorded state; returns the new state, or `None`
    /// when the event was not legal from there (and so nothing changed).
    ///
    /// The write is a compare-and-swap on the state read, so an event of one task never
    /// overwrites a state another task wrote in between (recovery's DEGRADED, a terminate's
    /// TERMINATING): the event is judged again against the newer state.
    pub(crate) fn deployment_event(
        &self,
        dep: &str,
        event: DeploymentEvent,
    ) -> Result<Option<DeploymentState>, EngineError> {
        let store = &self.parts.store;
        for _ in 0..MAX_STATE_SWAPS {
            let current = store
                .deployment::<DeploymentState>(dep)?
                .map(|r| r.state)
                .unwrap_or(DeploymentState::Pending);
            let next = match current.next(event.clone()) {
                Ok(next) => next,
                Err(illegal) => {
                    tracing::debug!(%illegal, deployment = dep, "event ignored");
                    return Ok(None);
                }
            };
            let reason = match &next {
                DeploymentState::Failed { reason } => Some(reason.as_str()),
                _ => None,
            };
            if store.swap_deployment_state(dep, &current, &next, reason)? {
                return Ok(Some(next));
            }
            if store.deployment::<DeploymentState>(dep)?.is_none() {
                let missing = format!("deployment {dep:?}");
                return Err(stratus_store::StoreError::NotFound(missing).into());
            }
        }
        Err(EngineError::Contended {
            deployment: dep.to_string(),
        })
    }

    /// Records a service instance as PAUSED: the state it is created in when its server is up.
    pub(crate) fn service_created(
        &self,
        dep: &str,
        svc: &ServiceSpec,
        server: &ServerId,
    ) -> Result<(), EngineError> {
        let server = &server.to_string();
        if self.service_state(dep, svc, server)?.is_none() {
            self.write_service(dep, svc, server, &ServiceState::Paused)?;
        }
        Ok(())
    }

    /// Applies `event` to a service instance's recorded state (see [`Engine::deployment_event`]).
    pub(crate) fn service_event(
        &self,
        dep: &str,
        svc: &ServiceSpec,
        server: &ServerId,
        event: ServiceEvent,
    ) -> Result<Option<ServiceState>, EngineError> {
        let server = &server.to_string();
        let current = self
            .service_state(dep, svc, server)?
            .unwrap_or(ServiceState::Paused);
        match current.next(event) {
            Ok(next) => {
                self.write_service(dep, svc, server, &next)?;
                Ok(Some(next))
            }
            Err(illegal) => {
                tracing::debug!(%illegal, deployment = dep, service = %svc.name, server, "event ignored");
                Ok(None)
            }
        }
    }

    /// Applies `event` to an agent's recorded state.
    pub fn agent_event(
        &self,
        dep: &str,
        server: &str,
        event: AgentEvent,
    ) -> Result<Option<AgentState>, EngineError> {
        let store = &self.parts.store;
        // Compare and swap: another writer (terminate, the monitor, recovery) may change the
        // state between the read and the write; then the event is judged again from its state.
        loop {
            let Some(row) = store.server::<AgentState>(dep, server)? else {
                return Ok(None);
            };
            let next = match row.agent_state.next(event) {
                Ok(next) => next,
                Err(illegal) => {
                    tracing::debug!(%illegal, deployment = dep, server, "event ignored");
                    return Ok(None);
                }
            };
            // When it was lost is what auto-recovery's grace counts from.
            if next == AgentState::Lost {
                let key = crate::recovery::lost_at_key(dep, server);
                store.set_meta(&key, &crate::retry::now_ms().to_string())?;
            }
            if store.swap_agent_state(dep, server, &row.agent_state, &next)? {
                if next == AgentState::Lost {
                    self.losses.noted();
                }
                return Ok(Some(next));
            }
        }
    }

    fn service_state(
        &self,
        dep: &str,
        svc: &ServiceSpec,
        server: &str,
    ) -> Result<Option<ServiceState>, EngineError> {
        Ok(self
            .parts
            .store
            .service_instance::<ServiceState>(dep, svc.name.as_str(), server)?
            .map(|i| i.state))
    }

    fn write_service(
        &self,
        dep: &str,
        svc: &ServiceSpec,
        server: &str,
        state: &ServiceState,
    ) -> Result<(), EngineError> {
        self.parts.store.set_service_state(
            dep,
            svc.name.as_str(),
            &format!("a{}", svc.id),
            server,
            state,
        )?;
        Ok(())
    }
}
