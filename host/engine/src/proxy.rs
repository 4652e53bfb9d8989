//! Step 8 of the launch: every load balancer learns exactly the nodes it balances.

use crate::engine::{Engine, EngineError};
use crate::facts::{Fleet, proxy_nodes};
use crate::parallel;
use stratus_model::context::HookCall;
use stratus_model::spec::DeploymentSpec;
use stratus_model::step_key::StepKey;

impl Engine {
    /// Step 8: each load balancer's services learn exactly the balanced nodes.
    pub(crate) async fn start_proxies(
        &self,
        spec: &DeploymentSpec,
        fleet: &Fleet,
    ) -> Result<(), EngineError> {
        let mut jobs = Vec::new();
        for tier in spec.tiers.values() {
            let Some(b) = &tier.balances else { continue };
            let nodes = proxy_nodes(spec, fleet, b.service.as_str(), b.port.as_str());
            for svc in spec.services_of(tier.name.as_str()) {
                for server in fleet.get(tier.name.as_str()).into_iter().flatten() {
                    let nodes = nodes.clone();
                    jobs.push(async move {
                        let ctx = self.service_context(spec, fleet, svc, server)?;
                        let key = StepKey::service(&svc.name, &server.id, "start-proxy");
                        let call = HookCall::StartProxy { ctx, nodes };
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
}
