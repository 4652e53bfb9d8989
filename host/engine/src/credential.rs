//! One-time launch credentials. The credential a server is launched with travels in its
//! bootstrap, and a cloud instance's metadata service serves its user-data to any process on
//! the instance for the instance's whole life, plugins' programs included. So once its agent
//! is connected, the control plane hands it a fresh credential inside the pinned connection
//! and, when the agent says it has stored it, records its digest and accepts nothing else.
//!
//! Until then both are accepted, so no crash on either side locks the agent out: an agent
//! that never stored the new one still has the one it had, and one that stored it while the
//! control plane stopped before recording it presents the one before (see the agent's
//! `credential.rs`). A control plane stopped mid-replacement resumes the launch, which replaces
//! the credential again. Only the launch replaces credentials: a replacement racing a step
//! that fetches files would have its fetch refused.

use crate::agents::LinkError;
use crate::engine::{Engine, EngineError};
use std::time::Duration;
use stratus_protocol::{AgentReply, AgentRequest};

/// How long the agent may take to store its new credential.
const REPLACE_LIMIT: Duration = Duration::from_secs(30);
/// Replacements a launch tries before its server fails: an agent that reconnected midway
/// gets another chance, one that cannot store a credential does not hold the launch long.
const LAUNCH_ATTEMPTS: u32 = 3;
/// Wait between two of them, and while another replacement is under way.
const LAUNCH_RETRY: Duration = Duration::from_secs(1);

/// What a request for a replacement came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The agent holds a new credential, and only it is accepted now.
    Replaced,
    /// Another replacement was under way; nothing was done.
    UnderWay,
}

impl Engine {
    /// Replaces the launch credential of a server being launched, before any hook runs: a
    /// server whose agent cannot take a new credential fails its launch (step
    /// `server/<id>/credential`), since its bootstrap's would stay valid while plugins run.
    pub(crate) async fn replace_launch_credential(
        &self,
        dep: &str,
        server: &str,
    ) -> Result<(), EngineError> {
        let mut attempts = 0;
        loop {
            match self.renew_credential(dep, server).await {
                Ok(Renewal::Replaced) => return Ok(()),
                // Another task's (none replaces credentials today but the launch): wait for it.
                Ok(Renewal::UnderWay) => {}
                Err(e) => {
                    attempts += 1;
                    if attempts >= LAUNCH_ATTEMPTS {
                        return Err(e);
                    }
                }
            }
            tokio::time::sleep(LAUNCH_RETRY).await;
        }
    }

    /// Replaces the credential of the connected agent of `server`; nothing happens when a
    /// replacement is under way already.
    pub async fn renew_credential(&self, dep: &str, server: &str) -> Result<Renewal, EngineError> {
        let fresh = stratus_cloud::random_token();
        let digest = stratus_cloud::digest(&fresh);
        let agents = &self.parts.agents;
        if !agents.offer(dep, server, digest.clone()).await {
            return Ok(Renewal::UnderWay);
        }
        let request = AgentRequest::ReplaceCredential {
            credential: fresh.expose().to_string(),
        };
        let stored = match agents.call(dep, server, request, REPLACE_LIMIT).await {
            Ok(AgentReply::Error { message }) => Err(EngineError::Agent {
                step: format!("server/{server}/credential"),
                server: server.to_string(),
                message: stratus_protocol::bounds::cut(message, crate::calls::MAX_AGENT_MESSAGE),
            }),
            Err(LinkError::Timeout { .. }) => Err(EngineError::Agent {
                step: format!("server/{server}/credential"),
                server: server.to_string(),
                message: format!(
                    "the agent did not store a new credential within {} s (an agent older \
                     than this control plane ignores the request)",
                    REPLACE_LIMIT.as_secs()
                ),
            }),
            Ok(_) => Ok(()),
            Err(source) => Err(EngineError::Link {
                step: format!("server/{server}/credential"),
                source,
            }),
        };
        // Recorded before it is the only one accepted: a control plane stopping in between
        // still accepts the launch credential, which the agent falls back to.
        let recorded = match stored {
            Ok(()) => self
                .parts
                .store
                .set_credential_digest(dep, server, &digest)
                .map_err(EngineError::from),
            Err(e) => Err(e),
        };
        agents.settle(dep, server, digest, recorded.is_ok()).await;
        recorded.map(|_| Renewal::Replaced)
    }
}
