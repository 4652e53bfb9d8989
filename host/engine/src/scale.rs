//! Steps 1–2 of the launch, per server: the provider brings it up, its agent starts
//! (STARTING) and handshakes with the dispatcher (RUNNING). The reconciler decides which.

use crate::engine::{Engine, EngineError};
use crate::facts::Server;
use crate::logs::{Component, Subject};
use crate::steps::digest;
use std::time::Duration;
use stratus_model::ServerId;
use stratus_model::spec::{DeploymentSpec, TierSpec};
use stratus_model::state::{AgentEvent, AgentState};
use stratus_model::step_key::StepKey;
use stratus_provider::{LaunchRequest, Presence};
use stratus_store::ServerRow;

impl Engine {
    /// Starts server `n` of `tier` (or adopts the one a stopped launch left) and waits for
    /// its agent's handshake.
    pub(crate) async fn launch_server(
        &self,
        spec: &DeploymentSpec,
        tier: &TierSpec,
        n: u32,
    ) -> Result<Server, EngineError> {
        let dep = spec.name.as_str();
        let sid = ServerId::new(tier.name.clone(), n);
        let id = sid.to_string();
        let name = sid.server_name(&spec.name);
        let key = StepKey::Launch(sid.clone());
        let subject = Subject {
            deployment: Some(dep),
            tier: Some(tier.name.as_str()),
            server: Some(&id),
            ..Subject::default()
        };
        let provider = self.tier_provider(spec, tier)?;
        let server = self
            .step(dep, &key, &digest(&(&id, &tier.launch.provider)), async {
                // A launch cut short may have left a live agent: adopt it instead of a twin.
                if let Some(row) = self.parts.store.server::<AgentState>(dep, &id)?
                    && self.adoptable(&row, &key).await?
                    && let Some(server) = self.server_of(&row)?
                {
                    return Ok(server);
                }
                self.parts.logs.info(
                    Component::ScalingWorker,
                    subject.clone(),
                    &format!(
                        "launching server {name} on provider {}",
                        tier.launch.provider
                    ),
                );
                let credential = stratus_cloud::random_token();
                let credential_digest = stratus_cloud::digest(&credential);
                let credential = credential.expose().to_string();
                self.parts
                    .agents
                    .expect(dep, &id, credential_digest.clone())
                    .await;
                let mut launched = provider
                    .launch(LaunchRequest {
                        deployment: dep.to_string(),
                        server_id: id.clone(),
                        server_name: name.clone(),
                        control_addr: self.parts.control_addr.clone(),
                        fingerprint: self.parts.control_fingerprint,
                        credential,
                        agent_args: self.parts.agent_args.clone(),
                    })
                    .await
                    .map_err(|e| EngineError::Provider {
                        step: key.to_string(),
                        message: e.to_string(),
                    })?;
                // The handle names the provider as the tier does: the one that ends it.
                launched.handle.provider = tier.launch.provider.to_string();
                let root =
                    provider
                        .root_of(&launched.handle)
                        .map_err(|e| EngineError::Provider {
                            step: key.to_string(),
                            message: e.to_string(),
                        })?;
                let server = Server {
                    id: sid.clone(),
                    name: name.clone(),
                    tier: tier.name.to_string(),
                    address: launched.address.to_string(),
                    root,
                };
                self.parts.store.upsert_server(&ServerRow {
                    deployment: dep.to_string(),
                    id: id.clone(),
                    tier: tier.name.to_string(),
                    name: name.clone(),
                    address: server.address.clone(),
                    provider: launched.handle.provider.clone(),
                    handle: Some(launched.handle.data.clone()),
                    agent_state: AgentState::Starting,
                    credential_digest,
                })?;
                self.parts.logs.info(
                    Component::MonitorServer,
                    subject.clone(),
                    &format!(
                        "discovered server {name} at {} on provider {}: agent STARTING",
                        server.address, launched.handle.provider
                    ),
                );
                Ok(server)
            })
            .await?;
        if let Some(row) = self.parts.store.server::<AgentState>(dep, &id)? {
            self.parts
                .agents
                .expect(dep, &id, row.credential_digest)
                .await;
        }
        self.parts
            .agents
            .wait_connected(dep, &id, Duration::from_millis(tier.launch.boot_timeout_ms))
            .await
            .map_err(|source| EngineError::Link {
                step: format!("server/{id}/handshake"),
                source,
            })?;
        let server = self.learn_address(dep, server).await?;
        // Before any hook runs: from then on the bootstrap's credential admits nobody.
        self.replace_launch_credential(dep, &id).await?;
        self.agent_event(dep, &id, AgentEvent::Handshake)?;
        self.parts
            .logs
            .info(Component::MonitorServer, subject, "agent RUNNING");
        for svc in spec.services_of(tier.name.as_str()) {
            self.service_created(dep, svc, &sid)?;
        }
        Ok(server)
    }
}

impl Engine {
    /// Whether a server recorded by a launch cut short still exists, to be adopted instead of
    /// launched again; a provider that cannot tell fails the step rather than risk a twin.
    async fn adoptable(
        &self,
        row: &ServerRow<AgentState>,
        key: &StepKey,
    ) -> Result<bool, EngineError> {
        match self.presence(row).await {
            Presence::Exists => Ok(true),
            Presence::Gone => Ok(false),
            Presence::Unknown(reason) => Err(EngineError::Provider {
                step: key.to_string(),
                message: format!(
                    "cannot tell whether server {} of an earlier attempt still exists: {reason}",
                    row.id
                ),
            }),
        }
    }
}
