//! Steps 6–7 of the launch: services configured in dependency order. For each service: grants
//! on the databases it depends on (for exactly its servers' addresses), its data source, then
//! `configure`, `stop`, `start` on every server of its tier.

use crate::engine::{Engine, EngineError};
use crate::facts::{Fleet, Server, data_source_file};
use crate::launch::data_source_key;
use crate::parallel;
use stratus_model::context::HookCall;
use stratus_model::spec::{DeploymentSpec, ServiceSpec};
use stratus_model::state::ServiceEvent;
use stratus_model::step_key::StepKey;
use stratus_protocol::AgentRequest;

impl Engine {
    /// Steps 6–7 for one service: data source, grants on the databases it uses, configure,
    /// stop, start on every server of its tier.
    pub(crate) async fn configure_service(
        &self,
        spec: &DeploymentSpec,
        fleet: &Fleet,
        svc: &ServiceSpec,
    ) -> Result<(), EngineError> {
        let dep = spec.name.as_str();
        let servers = fleet.get(svc.tier.as_str()).cloned().unwrap_or_default();
        // Grants first, so that a dependent can connect the moment it starts.
        for d in svc
            .depends_on
            .iter()
            .filter(|d| d.kind == stratus_model::context::DependencyKind::DataSource)
        {
            let Some(db) = spec.service(d.service.as_str()) else {
                continue;
            };
            self.grant_access(spec, fleet, db).await?;
        }
        parallel::all(servers.iter().map(|server| async move {
            let work = self.configure_on(spec, fleet, svc, server);
            self.failing_marks_service(dep, svc, server, work.await)
        }))
        .await?;
        Ok(())
    }

    /// Steps 6–7 of one service on one server.
    async fn configure_on(
        &self,
        spec: &DeploymentSpec,
        fleet: &Fleet,
        svc: &ServiceSpec,
        server: &Server,
    ) -> Result<(), EngineError> {
        let dep = spec.name.as_str();
        {
            let ctx = self.service_context(spec, fleet, svc, server)?;
            let key = |action: &'static str| StepKey::service(&svc.name, &server.id, action);
            if let Some(ds) = &svc.data_source {
                let name = data_source_key(dep, svc);
                let file = self
                    .parts
                    .files
                    .file_ref(&name)
                    .await
                    .map_err(|e| EngineError::Other(format!("cloud files: {e}")))?;
                self.agent_request(
                    dep,
                    server,
                    &key("fetch-data-source"),
                    AgentRequest::FetchFile {
                        name,
                        sha256: file.sha256,
                        size: file.size,
                        dest: format!("mnt/services/a{}/{}", svc.id, data_source_file(ds)),
                    },
                )
                .await?;
                let call = HookCall::InstallDataSource { ctx: ctx.clone() };
                self.service_hook(spec, svc, server, &key("install-data-source"), call)
                    .await?;
            }
            for (hook, call) in [
                ("configure", HookCall::Configure { ctx: ctx.clone() }),
                ("stop", HookCall::Stop { ctx: ctx.clone() }),
                ("start", HookCall::Start { ctx: ctx.clone() }),
            ] {
                self.service_hook(spec, svc, server, &key(hook), call)
                    .await?;
            }
            self.service_event(dep, svc, &server.id, ServiceEvent::Started)?;
            // Sent on every pass, not journaled: an agent that was replaced or restarted
            // learns its checks again.
            self.watch_health(spec, fleet, svc, server).await?;
            Ok(())
        }
    }

    /// A failed step leaves its service FAILED with the reason, then passes the error on.
    pub(crate) fn failing_marks_service(
        &self,
        dep: &str,
        svc: &ServiceSpec,
        server: &Server,
        result: Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        if let Err(e) = &result {
            self.service_event(dep, svc, &server.id, ServiceEvent::Failed(e.to_string()))?;
        }
        result
    }
}
