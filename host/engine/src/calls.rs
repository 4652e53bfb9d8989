//! Calling agents from journaled steps: a hook or a plain request, retried across a dropped
//! connection with the same call id (so the agent answers a repeat with its first report).

use crate::agents::LinkError;
use crate::engine::{Engine, EngineError};
use crate::facts::Server;
use crate::logs::{Component, Subject};
use crate::steps::digest;
use std::time::Duration;
use stratus_model::context::HookCall;
use stratus_model::state::AgentState;
use stratus_protocol::bounds::{MARKER_BYTES, MAX_MESSAGE_BYTES, MAX_PATH_BYTES, cut, cut_str};

/// What the engine keeps of an agent's message: the agent's own bound and its cut marker.
const MAX_AGENT_MESSAGE: usize = MAX_MESSAGE_BYTES + MARKER_BYTES;
use stratus_protocol::{AgentReply, AgentRequest, HookReport, HookResult};

/// A hook may legitimately take long (loading a data source); the runtime enforces each
/// plugin's own timeout, this only guards against a hung agent.
const CALL_LIMIT: Duration = Duration::from_secs(600);
const RECONNECT_LIMIT: Duration = Duration::from_secs(60);
/// An agent the monitor saw go away gets only a short chance to come back.
const LOST_RECONNECT_LIMIT: Duration = Duration::from_secs(3);
const ATTEMPTS: usize = 3;

impl Engine {
    /// Runs `call` on `server` as the journaled step `key`; a failed hook is an error naming
    /// the step, server, hook and the failure.
    pub(crate) async fn hook(
        &self,
        dep: &str,
        server: &Server,
        key: &str,
        package_dir: &str,
        capabilities: Option<serde_json::Value>,
        call: HookCall,
    ) -> Result<HookReport, EngineError> {
        let hook = call.name();
        let input = digest(&(&call, &capabilities, package_dir));
        let subject = Subject {
            deployment: Some(dep),
            tier: Some(&server.tier),
            server: Some(&server.id),
            service: call.service_context().map(|c| c.service_name.as_str()),
        };
        self.step(dep, key, &input, async {
            self.parts.logs.info(
                Component::ConfigurationWorker,
                subject.clone(),
                &format!("calling hook {hook} ({key})"),
            );
            let request = AgentRequest::Hook {
                call_id: format!("{dep}/{key}/{}", &input[..16]),
                package_dir: package_dir.to_string(),
                capabilities: capabilities.clone(),
                call: Box::new(call.clone()),
            };
            let report = match self.send(dep, server, key, request).await? {
                AgentReply::Hook { report } => report.within_bounds(),
                AgentReply::Error { message } => {
                    return Err(EngineError::Agent {
                        step: key.into(),
                        server: server.id.clone(),
                        message: cut(message, MAX_AGENT_MESSAGE),
                    });
                }
                AgentReply::Done => {
                    return Err(EngineError::Agent {
                        step: key.into(),
                        server: server.id.clone(),
                        message: "agent answered a hook call without a report".into(),
                    });
                }
            };
            self.keep_hook_output(dep, server, key, &report);
            if let HookResult::Failed { kind, message, .. } = &report.outcome {
                // The agent bounds what it sends; the journal, status and events rely on it.
                let (kind, message) = (
                    &cut_str(kind, MAX_PATH_BYTES + MARKER_BYTES),
                    &cut_str(message, MAX_AGENT_MESSAGE),
                );
                self.parts.logs.error(
                    Component::ConfigurationWorker,
                    subject.clone(),
                    &format!("hook {hook} failed ({kind}): {message}"),
                );
                return Err(EngineError::Hook {
                    step: key.into(),
                    server: server.id.clone(),
                    hook: hook.into(),
                    kind: kind.clone(),
                    message: message.clone(),
                });
            }
            self.parts.logs.info(
                Component::ConfigurationWorker,
                subject.clone(),
                &format!("hook {hook} done in {} ms", report.duration_ms),
            );
            Ok(report)
        })
        .await
    }

    /// Runs a non-hook request as the journaled step `key`.
    pub(crate) async fn agent_request(
        &self,
        dep: &str,
        server: &Server,
        key: &str,
        request: AgentRequest,
    ) -> Result<(), EngineError> {
        let input = digest(&format!("{request:?}"));
        self.step(
            dep,
            key,
            &input,
            self.send_untracked(dep, server, key, request),
        )
        .await
    }

    /// A request outside the journal (it must happen on every attempt of its step).
    pub(crate) async fn send_untracked(
        &self,
        dep: &str,
        server: &Server,
        key: &str,
        request: AgentRequest,
    ) -> Result<(), EngineError> {
        match self.send(dep, server, key, request).await? {
            AgentReply::Error { message } => Err(EngineError::Agent {
                step: key.into(),
                server: server.id.clone(),
                message: cut(message, MAX_AGENT_MESSAGE),
            }),
            _ => Ok(()),
        }
    }

    async fn send(
        &self,
        dep: &str,
        server: &Server,
        key: &str,
        request: AgentRequest,
    ) -> Result<AgentReply, EngineError> {
        let agents = &self.parts.agents;
        let lost = self
            .parts
            .store
            .server::<AgentState>(dep, &server.id)?
            .is_some_and(|row| row.agent_state == AgentState::Lost);
        let reconnect = if lost {
            LOST_RECONNECT_LIMIT
        } else {
            RECONNECT_LIMIT
        };
        let mut last = None;
        for _ in 0..ATTEMPTS {
            if let Err(source) = agents.wait_connected(dep, &server.id, reconnect).await {
                return Err(EngineError::Link {
                    step: key.into(),
                    source,
                });
            }
            match agents
                .call(dep, &server.id, request.clone(), CALL_LIMIT)
                .await
            {
                Ok(reply) => return Ok(reply),
                Err(e @ LinkError::Disconnected { .. }) => last = Some(e),
                Err(source) => {
                    return Err(EngineError::Link {
                        step: key.into(),
                        source,
                    });
                }
            }
        }
        Err(EngineError::Link {
            step: key.into(),
            source: last.unwrap_or(LinkError::Disconnected {
                server: server.id.clone(),
            }),
        })
    }

    /// Hook output is kept per server and per hook under `logs/hooks/`; the runtime has
    /// already replaced secrets with `****`.
    fn keep_hook_output(&self, dep: &str, server: &Server, key: &str, report: &HookReport) {
        let dir = self
            .parts
            .logs
            .dir()
            .join("hooks")
            .join(dep)
            .join(&server.id);
        if std::fs::create_dir_all(&dir).is_err() {
            return;
        }
        let file = dir.join(format!("{}.log", key.replace('/', "_")));
        let mut text = format!(
            "# {key} on {} ({} ms)\n# outcome: {:?}\n",
            server.id, report.duration_ms, report.outcome
        );
        for l in &report.logs {
            text.push_str(&format!("[{}] {}\n", l.level, l.message));
        }
        if !report.denials.is_empty() {
            text.push_str(&format!("# denied: {}\n", report.denials.join("; ")));
        }
        text.push_str("# stdout\n");
        text.push_str(&report.stdout);
        text.push_str("\n# stderr\n");
        text.push_str(&report.stderr);
        if report.truncated {
            text.push_str("\n# (output truncated)\n");
        }
        let _ = std::fs::write(file, text);
    }
}
