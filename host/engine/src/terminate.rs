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
use stratus_model::step_key::{Phase, StepKey};
use stratus_protocol::AgentRequest;
use stratus_provider::LaunchedServer;

const GRACE: Duration = Duration::from_secs(10);

/// The journal's record of whether a deployment's terminate keeps its servers' disks, so that
/// a terminate resumed after a restart does what the operator asked.
fn keep_disks_key(dep: &str) -> String {
    format!("terminate/{dep}/keep-disks")
}

/// Where the disks of a deployment's last terminate were kept (read by `stratus terminate`).
pub fn kept_disks_key(dep: &str) -> String {
    format!("terminate/{dep}/kept-disks")
}

/// Why servers of a deployment's last terminate kept their disks, one line each (read by
/// `stratus terminate`); empty when every disk was ended.
pub fn disks_left_key(dep: &str) -> String {
    format!("terminate/{dep}/disks-left")
}

impl Engine {
    /// Terminates the deployment `spec` describes, removing its servers' disks unless
    /// `keep_disks`; returns the failures it met on the way.
    pub async fn terminate(
        &self,
        spec: &DeploymentSpec,
        keep_disks: bool,
    ) -> Result<Vec<String>, EngineError> {
        let key = keep_disks_key(spec.name.as_str());
        self.parts
            .store
            .set_meta(&key, if keep_disks { "true" } else { "false" })?;
        // Nothing kept yet by this terminate: an earlier one's answer must not show.
        self.parts
            .store
            .set_meta(&kept_disks_key(spec.name.as_str()), "")?;
        self.terminate_as_recorded(spec).await
    }

    /// Resumes a terminate with the disk choice it was started with.
    pub async fn resume_terminate(
        &self,
        spec: &DeploymentSpec,
    ) -> Result<Vec<String>, EngineError> {
        self.terminate_as_recorded(spec).await
    }

    async fn terminate_as_recorded(
        &self,
        spec: &DeploymentSpec,
    ) -> Result<Vec<String>, EngineError> {
        let dep = spec.name.as_str();
        let keep = self.parts.store.meta(&keep_disks_key(dep))?.as_deref() == Some("true");
        // Kept disks are labelled with the launch they belong to, stable across a resume.
        let label = keep.then(|| self.parts.store.meta(&format!("epoch/{dep}")));
        let label = match label {
            Some(epoch) => Some(epoch?.unwrap_or_else(|| "1".to_string())),
            None => None,
        };
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
                    let key = StepKey::service(&svc.name, &server.id, "remove-nodes")
                        .in_phase(Phase::Terminate);
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
                        let key = |action: &'static str| {
                            StepKey::service(&svc.name, &server.id, action)
                                .in_phase(Phase::Terminate)
                        };
                        let dir = service_package_dir(svc);
                        if !grants.is_empty() {
                            let call = HookCall::RevokeDatabaseAccess {
                                ctx: ctx.clone(),
                                grants,
                            };
                            self.hook(
                                dep,
                                server,
                                &key("revoke-database-access"),
                                &dir,
                                caps(svc),
                                call,
                            )
                            .await?;
                        }
                        self.hook(
                            dep,
                            server,
                            &key("stop"),
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

        let ended = join_all(
            fleet
                .values()
                .flatten()
                .map(|s| self.terminate_server(dep, s, label.as_deref())),
        )
        .await;
        // A launch that terminate stopped may have started a server it never recorded.
        let known: Vec<String> = fleet.values().flatten().map(|s| s.id.to_string()).collect();
        for id in self.parts.provider.end_unrecorded(dep, &known).await {
            self.log_deployment(
                dep,
                &format!("ended server {id}, which was starting when terminate began"),
            );
        }
        let (mut kept, mut left) = (None, Vec::new());
        for result in ended {
            match result {
                Ok(Some(path)) => kept = path.parent().map(std::path::Path::to_path_buf),
                Ok(None) => {}
                Err(e) => left.push(e),
            }
        }
        self.parts
            .store
            .set_meta(&disks_left_key(dep), &left.join("\n"))?;
        problems.extend(left);
        if let Some(dir) = &kept {
            let dir = dir.display().to_string();
            self.parts.store.set_meta(&kept_disks_key(dep), &dir)?;
            self.log_deployment(dep, &format!("server disks kept under {dir}"));
        }
        self.deployment_event(dep, DeploymentEvent::AllStopped)?;
        self.new_journal(dep)?;
        self.log_deployment(dep, "deployment TERMINATED");
        Ok(problems)
    }

    /// Ends one server and then its disk (kept under `keep` when given); returns where a kept
    /// disk is, or what went wrong.
    pub(crate) async fn terminate_server(
        &self,
        dep: &str,
        server: &Server,
        keep: Option<&str>,
    ) -> Result<Option<std::path::PathBuf>, String> {
        let sid = server.id.to_string();
        let subject = Subject {
            deployment: Some(dep),
            tier: Some(&server.tier),
            server: Some(&sid),
            ..Subject::default()
        };
        // Recorded before the agent is asked to go, so its connection closing is not taken
        // for a loss (a warning, and a replacement) by the monitor.
        let _ = self.agent_event(dep, &sid, AgentEvent::Terminated);
        let ask = self.parts.agents.call(
            dep,
            &sid,
            AgentRequest::Shutdown {
                grace_ms: GRACE.as_millis() as u64,
            },
            GRACE + Duration::from_secs(5),
        );
        // An agent that is gone or does not answer is terminated by the provider all the same.
        let _ = ask.await;
        self.parts.agents.forget(dep, &server.id.to_string()).await;
        let launched = LaunchedServer {
            server_id: server.id.to_string(),
            address: server
                .address
                .parse()
                .unwrap_or(std::net::Ipv4Addr::LOCALHOST),
            root: server.root.clone().into(),
            pid: server.pid,
        };
        let outcome = match self.parts.provider.terminate(&launched, GRACE).await {
            Ok(()) => {
                self.parts.logs.info(
                    Component::ScalingWorker,
                    subject.clone(),
                    "server terminated",
                );
                self.end_disk(dep, &launched, keep, &subject).await
            }
            Err(e) => {
                let message = format!("terminating server {}: {e}; its disk is left", server.id);
                self.parts
                    .logs
                    .error(Component::ScalingWorker, subject.clone(), &message);
                Err(message)
            }
        };
        self.parts
            .logs
            .info(Component::MonitorServer, subject, "agent TERMINATED");
        outcome
    }

    /// Removes (or keeps under `keep`) the disk of a server whose processes are gone.
    async fn end_disk(
        &self,
        dep: &str,
        launched: &LaunchedServer,
        keep: Option<&str>,
        subject: &Subject<'_>,
    ) -> Result<Option<std::path::PathBuf>, String> {
        let logs = &self.parts.logs;
        match self.parts.provider.end_disk(dep, launched, keep).await {
            Ok(Some(path)) => {
                let message = format!("disk kept at {}", path.display());
                logs.info(Component::ScalingWorker, subject.clone(), &message);
                Ok(Some(path))
            }
            Ok(None) => {
                logs.info(Component::ScalingWorker, subject.clone(), "disk removed");
                Ok(None)
            }
            Err(e) => {
                let message = format!("ending the disk of {}: {e}", launched.server_id);
                logs.error(Component::ScalingWorker, subject.clone(), &message);
                Err(message)
            }
        }
    }

    /// The live servers of a deployment, by tier.
    pub fn fleet(&self, dep: &str) -> Result<Fleet, EngineError> {
        let mut fleet = Fleet::new();
        for row in self.parts.store.servers::<AgentState>(dep)? {
            if row.agent_state == AgentState::Terminated {
                continue;
            }
            let Some(pid) = row.pid else { continue };
            let Some(server) = server_from_row(&row, pid) else {
                continue;
            };
            fleet.entry(row.tier.clone()).or_default().push(server);
        }
        for servers in fleet.values_mut() {
            servers.sort_by_key(|s| s.id.index);
        }
        Ok(fleet)
    }
}
