//! Servers leaving a deployment while it runs (scale-down, or a gone server replaced), in
//! the order that keeps dependents whole: load balancers drop the nodes, databases revoke
//! the addresses, the leaving servers' services stop (unless the server is gone), then the
//! servers and their disks end.

use crate::engine::{Engine, EngineError};
use crate::facts::{Fleet, Server, proxy_nodes};
use crate::parallel;
use crate::reconcile::Changes;
use std::collections::BTreeSet;
use stratus_model::context::HookCall;
use stratus_model::spec::DeploymentSpec;
use stratus_model::state::{AgentEvent, ServiceEvent};
use stratus_model::step_key::{Phase, StepKey};

impl Engine {
    /// Takes the servers `changes` removes out of the deployment: the gone ones when
    /// `gone`, else the others (surplus servers of a scale-down).
    pub(crate) async fn retire(
        &self,
        spec: &DeploymentSpec,
        changes: &Changes,
        gone: bool,
    ) -> Result<(), EngineError> {
        let fleet = self.fleet(spec.name.as_str())?;
        let ids: BTreeSet<String> = changes
            .tiers
            .iter()
            .flat_map(|t| t.remove.iter().filter(|id| t.gone.contains(id) == gone))
            .map(ToString::to_string)
            .collect();
        let leaving: Vec<Server> = fleet
            .values()
            .flatten()
            .filter(|s| ids.contains(&s.id.to_string()))
            .cloned()
            .collect();
        if leaving.is_empty() {
            return Ok(());
        }
        let g = changes.generation;
        self.drop_nodes(spec, &fleet, &ids, g).await?;
        let addresses: BTreeSet<String> = leaving.iter().map(|s| s.address.clone()).collect();
        for db in spec.services.values().filter(|s| s.data_source.is_some()) {
            let revoked = |_: &str, address: &str| addresses.contains(address);
            self.revoke_access(spec, &fleet, db, &addresses, revoked)
                .await?;
        }
        parallel::all(leaving.iter().map(|server| async {
            if !gone {
                self.stop_leaving(spec, &fleet, server, g).await;
            }
            self.end_server(spec.name.as_str(), server).await
        }))
        .await?;
        Ok(())
    }

    /// `remove-nodes` on every load balancer that stays, for exactly its leaving nodes.
    async fn drop_nodes(
        &self,
        spec: &DeploymentSpec,
        fleet: &Fleet,
        leaving: &BTreeSet<String>,
        g: u64,
    ) -> Result<(), EngineError> {
        let mut jobs = Vec::new();
        for tier in spec.tiers.values() {
            let Some(b) = &tier.balances else { continue };
            let nodes: Vec<_> = proxy_nodes(spec, fleet, b.service.as_str(), b.port.as_str())
                .into_iter()
                .filter(|n| leaving.contains(&n.server.id))
                .collect();
            if nodes.is_empty() {
                continue;
            }
            for svc in spec.services_of(tier.name.as_str()) {
                let balancers = fleet.get(tier.name.as_str()).into_iter().flatten();
                for server in balancers.filter(|s| !leaving.contains(&s.id.to_string())) {
                    let nodes = nodes.clone();
                    jobs.push(async move {
                        let ctx = self.service_context(spec, fleet, svc, server)?;
                        let key = StepKey::service(&svc.name, &server.id, "remove-nodes")
                            .in_phase(Phase::Change(g));
                        let call = HookCall::RemoveNodes { ctx, nodes };
                        self.service_hook(spec, svc, server, &key, call)
                            .await
                            .map(|_| ())
                    });
                }
            }
        }
        parallel::all(jobs).await?;
        Ok(())
    }

    /// `stop` of a leaving server's services, last layer first. A failure is logged: the
    /// server ends all the same.
    async fn stop_leaving(&self, spec: &DeploymentSpec, fleet: &Fleet, server: &Server, g: u64) {
        let dep = spec.name.as_str();
        let mut layers = stratus_model::plan::Plan::new(spec).layers;
        layers.reverse();
        let services = layers
            .into_iter()
            .flatten()
            .filter_map(|name| spec.service(name.as_str()))
            .filter(|svc| svc.tier.as_str() == server.tier);
        for svc in services {
            let key = StepKey::service(&svc.name, &server.id, "stop").in_phase(Phase::Change(g));
            let stopped = async {
                let ctx = self.service_context(spec, fleet, svc, server)?;
                self.service_hook(spec, svc, server, &key, HookCall::Stop { ctx })
                    .await?;
                self.service_event(dep, svc, &server.id, ServiceEvent::Stopped)
            };
            if let Err(e) = stopped.await {
                self.log_deployment(dep, &format!("stopping {} on {}: {e}", svc.name, server.id));
            }
        }
    }

    /// Ends a leaving server and its disk, as a journaled step.
    async fn end_server(&self, dep: &str, server: &Server) -> Result<(), EngineError> {
        let key = StepKey::End(server.id.clone());
        let ended = self
            .step(dep, &key, "", async {
                self.terminate_server(dep, server, None)
                    .await
                    .map(|_| ())
                    .map_err(|message| EngineError::Provider {
                        step: key.to_string(),
                        message,
                    })
            })
            .await;
        // An ended server is TERMINATED whatever else was recorded meanwhile, or the next
        // pass would see it gone and "replace" it again, forever.
        if ended.is_ok() {
            self.agent_event(dep, &server.id.to_string(), AgentEvent::Terminated)?;
        }
        ended
    }
}
