//! Terminate: the launch in reverse. Load balancers drop their nodes, services stop in reverse
//! dependency order with their grants revoked, agents shut down and servers are terminated.
//! Every server is terminated even when a hook fails; the failures are reported together.

use crate::engine::{Engine, EngineError};
use crate::facts::{Fleet, Server, proxy_nodes};
use crate::launch::{caps, server_from_row, service_package_dir};
use crate::logs::{Component, Subject};
use futures::future::join_all;
use std::time::Duration;
use stratus_model::context::HookCall;
use stratus_model::spec::DeploymentSpec;
use stratus_model::state::{AgentEvent, AgentState, DeploymentEvent, ServiceEvent};
use stratus_protocol::AgentRequest;
use stratus_provider::LaunchedServer;

const GRACE: Duration = Duration::from_secs(10);

impl Engine {
    /// Terminates the deployment `spec` describes; returns the hook failures it met on the way.
    pub async fn terminate(&self, spec: &DeploymentSpec) -> Result<Vec<String>, EngineError> {
        let dep = spec.name.as_str();
        self.deployment_event(dep, DeploymentEvent::TerminateRequested)?;
        self.log_deployment(dep, "terminate requested: deployment STOPPING");
        let fleet = &self.fleet(dep)?;
        let mut problems = Vec::new();

        for tier in spec.tiers.values() {
            let Some(b) = &tier.balances else { continue };
            let nodes = proxy_nodes(spec, fleet, b.service.as_str(), b.port.as_str());
            for svc in spec.services_of(tier.name.as_str()) {
                for server in fleet.get(tier.name.as_str()).into_iter().flatten() {
                    let ctx = self.service_context(spec, fleet, svc, server)?;
                    let call = HookCall::RemoveNodes {
                        ctx,
                        nodes: nodes.clone(),
                    };
                    let key = format!("terminate/{}/{}/remove-nodes", svc.name, server.id);
                    if let Err(e) = self
                        .hook(
                            dep,
                            server,
                            &key,
                            &service_package_dir(svc),
                            caps(svc),
                            call,
                        )
                        .await
                    {
                        problems.push(e.to_string());
                    }
                }
            }
        }

        let mut layers = stratus_model::plan::Plan::new(spec).layers;
        layers.reverse();
        for layer in layers {
            for name in layer {
                let Some(svc) = spec.service(name.as_ref()) else {
                    continue;
                };
                let grants = self.grants_for(spec, fleet, svc)?;
                let servers = fleet.get(svc.tier.as_str()).cloned().unwrap_or_default();
                let results = join_all(servers.iter().map(|server| {
                    let grants = grants.clone();
                    async move {
                        let ctx = self.service_context(spec, fleet, svc, server)?;
                        let base = format!("terminate/{}/{}", svc.name, server.id);
                        let dir = service_package_dir(svc);
                        if !grants.is_empty() {
                            let call = HookCall::RevokeDatabaseAccess {
                                ctx: ctx.clone(),
                                grants,
                            };
                            self.hook(
                                dep,
                                server,
                                &format!("{base}/revoke-database-access"),
                                &dir,
                                caps(svc),
                                call,
                            )
                            .await?;
                        }
                        self.hook(
                            dep,
                            server,
                            &format!("{base}/stop"),
                            &dir,
                            caps(svc),
                            HookCall::Stop { ctx },
                        )
                        .await?;
                        self.service_event(dep, svc, &server.id, ServiceEvent::Stopped)?;
                        Ok::<_, EngineError>(())
                    }
                }))
                .await;
                problems.extend(
                    results
                        .into_iter()
                        .filter_map(Result::err)
                        .map(|e| e.to_string()),
                );
            }
        }

        join_all(
            fleet
                .values()
                .flatten()
                .map(|s| self.terminate_server(dep, s)),
        )
        .await;
        self.deployment_event(dep, DeploymentEvent::AllStopped)?;
        self.new_journal(dep)?;
        self.log_deployment(dep, "deployment TERMINATED");
        Ok(problems)
    }

    async fn terminate_server(&self, dep: &str, server: &Server) {
        let subject = Subject {
            deployment: Some(dep),
            tier: Some(&server.tier),
            server: Some(&server.id),
            ..Subject::default()
        };
        let ask = self.parts.agents.call(
            dep,
            &server.id,
            AgentRequest::Shutdown {
                grace_ms: GRACE.as_millis() as u64,
            },
            GRACE + Duration::from_secs(5),
        );
        // An agent that is gone or does not answer is terminated by the provider all the same.
        let _ = ask.await;
        self.parts.agents.forget(dep, &server.id).await;
        let launched = LaunchedServer {
            server_id: server.id.clone(),
            address: server
                .address
                .parse()
                .unwrap_or(std::net::Ipv4Addr::LOCALHOST),
            root: server.root.clone().into(),
            pid: server.pid,
        };
        match self.parts.provider.terminate(&launched, GRACE).await {
            Ok(()) => self.parts.logs.info(
                Component::ScalingWorker,
                subject.clone(),
                "server terminated",
            ),
            Err(e) => self.parts.logs.error(
                Component::ScalingWorker,
                subject.clone(),
                &format!("terminating server: {e}"),
            ),
        }
        let _ = self.agent_event(dep, &server.id, AgentEvent::Terminated);
        self.parts
            .logs
            .info(Component::MonitorServer, subject, "agent TERMINATED");
    }

    /// The live servers of a deployment, by tier.
    pub fn fleet(&self, dep: &str) -> Result<Fleet, EngineError> {
        let mut fleet = Fleet::new();
        for row in self.parts.store.servers::<AgentState>(dep)? {
            if row.agent_state == AgentState::Terminated {
                continue;
            }
            let Some(pid) = row.pid else { continue };
            fleet
                .entry(row.tier.clone())
                .or_default()
                .push(server_from_row(&row, pid));
        }
        for servers in fleet.values_mut() {
            servers.sort_by_key(|s| server_index(&s.id));
        }
        Ok(fleet)
    }
}

/// `app-10` sorts after `app-9`.
fn server_index(id: &str) -> (String, u64) {
    match id.rsplit_once('-') {
        Some((t, n)) => (t.to_string(), n.parse().unwrap_or(0)),
        None => (id.to_string(), 0),
    }
}
