//! Ending one server, the last step of every departure: the server is ENDING, its agent is
//! asked to shut down (stopping every process it supervises), the provider ends the server's
//! whole process group, then its disk is removed without following links, or kept under a
//! label, and the server is TERMINATED. An end that fails while the deployment runs is
//! retried later (`end/deferred.rs`).

mod deferred;

use crate::engine::{Engine, EngineError};
use crate::facts::Server;
use crate::logs::{Component, Subject};
use crate::providers::launched_of;
use std::path::PathBuf;
use std::time::Duration;
use stratus_model::state::{AgentEvent, AgentState};
use stratus_model::step_key::StepKey;
use stratus_protocol::AgentRequest;
use stratus_provider::{CloudProvider, LaunchedServer};

/// How long an agent and then the provider get to end a server's processes.
const GRACE: Duration = Duration::from_secs(10);

/// What went wrong ending a server, as the operator reads it (`stratus terminate` prints it).
pub(crate) fn ended_message(e: EngineError) -> String {
    match e {
        EngineError::Provider { message, .. } => message,
        other => other.to_string(),
    }
}

impl Engine {
    /// Ends `server` and its disk (kept under the label `keep` when given) as the journaled
    /// step `server/<id>/end`; returns where a kept disk is.
    pub(crate) async fn end_server(
        &self,
        dep: &str,
        server: &Server,
        keep: Option<&str>,
    ) -> Result<Option<PathBuf>, EngineError> {
        let key = StepKey::End(server.id.clone());
        let ended = self
            .step(dep, &key, "", async {
                self.end_now(dep, server, keep)
                    .await
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

    /// Ends one server and then its disk; returns where a kept disk is, or what went wrong.
    async fn end_now(
        &self,
        dep: &str,
        server: &Server,
        keep: Option<&str>,
    ) -> Result<Option<PathBuf>, String> {
        let sid = server.id.to_string();
        let subject = Subject {
            deployment: Some(dep),
            tier: Some(&server.tier),
            server: Some(&sid),
            ..Subject::default()
        };
        // Recorded before the agent is asked to go, so its connection closing is not taken
        // for a loss (a warning, and a replacement) by the monitor.
        let _ = self.agent_event(dep, &sid, AgentEvent::Ending);
        let ask = self.parts.agents.call(
            dep,
            &sid,
            AgentRequest::Shutdown {
                grace_ms: GRACE.as_millis() as u64,
            },
            GRACE + Duration::from_secs(5),
        );
        // An agent that is gone or does not answer is ended by the provider all the same.
        let _ = ask.await;
        self.parts.agents.forget(dep, &sid).await;
        // The stored handle, not the launch step's record: a reattached agent updated it.
        let row = self.parts.store.server::<AgentState>(dep, &sid);
        let Some(launched) = row
            .map_err(|e| e.to_string())?
            .as_ref()
            .and_then(launched_of)
        else {
            let logs = &self.parts.logs;
            logs.info(
                Component::ScalingWorker,
                subject,
                "no provider handle: nothing to end",
            );
            return Ok(None);
        };
        let provider = self
            .provider(dep, &launched.handle.provider)
            .map_err(|e| format!("terminating server {}: {e}; its disk is left", server.id))?;
        let outcome = match provider.terminate(&launched, GRACE).await {
            Ok(()) => {
                let logs = &self.parts.logs;
                logs.info(
                    Component::ScalingWorker,
                    subject.clone(),
                    "server terminated",
                );
                self.end_disk(provider.as_ref(), dep, &launched, keep, &subject)
                    .await
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
        provider: &dyn CloudProvider,
        dep: &str,
        launched: &LaunchedServer,
        keep: Option<&str>,
        subject: &Subject<'_>,
    ) -> Result<Option<PathBuf>, String> {
        let logs = &self.parts.logs;
        match provider.end_disk(dep, launched, keep).await {
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
}
