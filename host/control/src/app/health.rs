//! Health on a schedule, the control plane's part: every result an agent reports (see the
//! dispatcher) is recorded through the engine, and what it calls for is done here: a restart
//! of the service runs as the deployment's task (so no scale or reconcile runs beside it);
//! a condemned server is left to auto-recovery (`recovery.rs`), which replaces it.

use super::App;
use crate::dispatcher::ServerKey;
use stratus_engine::health::HealthAction;
use stratus_engine::logs::{Component, Subject};
use stratus_model::spec::DeploymentSpec;
use stratus_model::state::DeploymentState;
use stratus_protocol::HealthResult;
use tokio::sync::broadcast::{Receiver, error::RecvError};

impl App {
    /// Runs for as long as the control plane does.
    pub async fn watch_health(self, mut results: Receiver<(ServerKey, HealthResult)>) {
        loop {
            match results.recv().await {
                Ok(((dep, server), result)) => self.note_health(&dep, &server, result).await,
                // Some results were missed; newer ones follow every interval.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            }
        }
    }

    async fn note_health(&self, dep: &str, server: &str, result: HealthResult) {
        let Ok(Some(row)) = self.store.deployment::<DeploymentState>(dep) else {
            return;
        };
        let may_act = match row.state {
            DeploymentState::Running | DeploymentState::Degraded { .. } => {
                !self.working_on(dep).await
            }
            DeploymentState::Scaling => false,
            _ => return,
        };
        let Ok(spec) = self.spec_of(&row) else {
            return;
        };
        let service = result.service.clone();
        match self.engine.note_health(&spec, server, result, may_act) {
            Ok(HealthAction::Restart { n }) => {
                self.spawn_restart(spec, server.to_string(), service, n)
                    .await;
            }
            // Not waited for: results keep arriving while the request travels.
            Ok(HealthAction::Unwatch) => {
                let (engine, logs) = (self.engine.clone(), self.logs.clone());
                let (dep, server) = (dep.to_string(), server.to_string());
                tokio::spawn(async move {
                    if let Err(e) = engine.unwatch_health(&dep, &server, &service).await {
                        let subject = Subject {
                            deployment: Some(&dep),
                            server: Some(&server),
                            ..Subject::default()
                        };
                        logs.warn(Component::MonitorServer, subject, &e.to_string());
                    }
                });
            }
            // Auto-recovery sees the condemned server on its next look and replaces it.
            Ok(HealthAction::Replace | HealthAction::None) => {}
            Err(e) => {
                let subject = Subject {
                    deployment: Some(dep),
                    server: Some(server),
                    ..Subject::default()
                };
                let message = format!("recording a health result: {e}");
                self.logs.warn(Component::MonitorServer, subject, &message);
            }
        }
    }

    /// Restarts `service` on `server` as the deployment's task.
    async fn spawn_restart(&self, spec: DeploymentSpec, server: String, service: String, n: u32) {
        let engine = self.engine.clone();
        let logs = self.logs.clone();
        let name = spec.name.to_string();
        let mut tasks = self.tasks.lock().await;
        let previous = tasks.remove(&name);
        let handle = tokio::spawn(async move {
            if let Some(p) = previous {
                let _ = p.await;
            }
            if let Err(e) = engine.restart_unhealthy(&spec, &server, &service, n).await {
                let subject = Subject {
                    deployment: Some(spec.name.as_str()),
                    server: Some(&server),
                    service: Some(&service),
                    ..Subject::default()
                };
                let message = format!("restart of {service} on {server} failed: {e}");
                logs.warn(Component::MonitorServer, subject, &message);
            }
        });
        tasks.insert(name, handle);
    }
}
