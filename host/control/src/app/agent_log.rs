//! A server's agent log read through its agent's connection: a server on another machine
//! (SSH hosts, cloud instances) keeps its log there, where the control plane cannot read it.
//! What the agent sends is held to the bound it was asked for, whatever it sent.

use super::{App, AppError};
use std::time::Duration;
use stratus_model::state::AgentState;
use stratus_protocol::bounds::cut_str;
use stratus_protocol::{AgentReply, AgentRequest, MAX_AGENT_LOG_BYTES};

/// Longest the control plane waits for an agent to send its log.
const READ_LOG_LIMIT: Duration = Duration::from_secs(10);
/// Longest error message kept from an agent that could not read its log.
const MAX_ERROR_BYTES: usize = 1024;

/// The end of an agent's log; `cut` when the log was longer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentLog {
    pub text: String,
    pub cut: bool,
}

impl App {
    /// The end of the agent log of `server` of deployment `name`, asked of its connected
    /// agent (at most [`MAX_AGENT_LOG_BYTES`]).
    pub async fn agent_log(&self, name: &str, server: &str) -> Result<AgentLog, AppError> {
        self.row(name)?;
        let row = self
            .store
            .servers::<AgentState>(name)?
            .into_iter()
            .find(|s| s.id == server)
            .ok_or_else(|| AppError::NoServer {
                deployment: name.to_string(),
                server: server.to_string(),
            })?;
        let not_connected = |why: String| AppError::AgentNotConnected {
            server: server.to_string(),
            why,
        };
        // A LOST or ended server's agent has no connection to ask on.
        if !matches!(row.agent_state, AgentState::Running | AgentState::Starting) {
            return Err(not_connected(row.agent_state.to_string()));
        }
        let request = AgentRequest::ReadLog {
            max_bytes: MAX_AGENT_LOG_BYTES,
        };
        let reply = (self.engine.parts().agents)
            .call(name, server, request, READ_LOG_LIMIT)
            .await
            .map_err(|e| not_connected(e.to_string()))?;
        match reply {
            AgentReply::Log { text, cut } => Ok(within_bound(text, cut)),
            AgentReply::Error { message } => Err(AppError::AgentLog {
                server: server.to_string(),
                message: cut_str(&message, MAX_ERROR_BYTES),
            }),
            _ => Err(AppError::AgentLog {
                server: server.to_string(),
                message: "the agent answered without its log".into(),
            }),
        }
    }
}

/// `text` cut to its last [`MAX_AGENT_LOG_BYTES`] (from a line start when there is one), in
/// case an agent sent more than it was asked for.
fn within_bound(text: String, cut: bool) -> AgentLog {
    let max = MAX_AGENT_LOG_BYTES as usize;
    if text.len() <= max {
        return AgentLog { text, cut };
    }
    let mut from = text.len() - max;
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let from = match text[from..].find('\n') {
        Some(i) if from + i + 1 < text.len() => from + i + 1,
        _ => from,
    };
    AgentLog {
        text: text[from..].to_string(),
        cut: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_log_from_an_agent_is_cut_to_its_last_lines() {
        let max = MAX_AGENT_LOG_BYTES as usize;
        let short = within_bound("a\nb\n".into(), false);
        assert_eq!((short.text.as_str(), short.cut), ("a\nb\n", false));
        let text = format!("{}\n", "é".repeat(max)) + "tail\n";
        let held = within_bound(text, false);
        assert_eq!((held.text.as_str(), held.cut), ("tail\n", true));
        let one_line = within_bound("é".repeat(max), false);
        assert!(one_line.cut && one_line.text.len() <= max);
        assert!(one_line.text.len() >= max - 1);
    }
}
