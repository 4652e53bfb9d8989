//! Ends that could not finish while their deployment runs (the server's host unreachable): the
//! server stays ENDING, its end step stays started with a journaled wait (`stratus status`
//! shows it like a hook's retry), and the end is tried again with backoff while no task works
//! on the deployment, until the provider confirms it or the attempts run out (then a terminate
//! of the deployment still ends it).

use super::ended_message;
use crate::engine::{Engine, EngineError};
use crate::facts::Server;
use crate::logs::{Component, Subject};
use crate::parallel;
use crate::recovery::ASKED_AT_ONCE;
use crate::retry::{RetryWait, now_ms};
use std::time::Duration;
use stratus_model::ServerId;
use stratus_model::spec::DeploymentSpec;
use stratus_model::state::{AgentEvent, AgentState};
use stratus_model::step_key::StepKey;
use stratus_store::ServerRow;

/// Attempts at ending a server before only a terminate tries again: a day at the longest wait.
pub(crate) const END_ATTEMPTS: u32 = 1440;
/// The wait after the first failed attempt; each next one doubles, up to [`MAX_END_WAIT`].
const FIRST_END_WAIT: Duration = Duration::from_secs(5);
/// Longest wait between attempts, so that a host coming back is cleaned within about a minute.
const MAX_END_WAIT: Duration = Duration::from_secs(60);
/// Longest reason kept with a wait (the event of the first failure keeps it whole).
const MAX_REASON: usize = 1024;

/// How long to wait after failed attempt `n` (1-based).
pub(crate) fn end_wait(n: u32) -> Duration {
    let doubling = 1u32 << n.saturating_sub(1).min(16);
    FIRST_END_WAIT.saturating_mul(doubling).min(MAX_END_WAIT)
}

/// The failed attempts at ending `server` in `journal`.
fn attempts_key(journal: &str, server: &str) -> String {
    format!("end-attempts/{journal}/{server}")
}

/// `text` cut to at most [`MAX_REASON`] bytes, at a character boundary.
fn bounded(mut text: String) -> String {
    if text.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

impl Engine {
    /// Records that ending `server` failed with `error` while its deployment runs: it stays
    /// ENDING, and its end step is started again with the wait until the next attempt.
    pub(crate) fn defer_end(
        &self,
        dep: &str,
        server: &ServerId,
        error: EngineError,
    ) -> Result<(), EngineError> {
        let (journal, sid) = (self.journal_id(dep)?, server.to_string());
        let store = &self.parts.store;
        let n = self.end_attempts(&journal, &sid)? + 1;
        store.set_meta(&attempts_key(&journal, &sid), &n.to_string())?;
        let reason = ended_message(error);
        let subject = Subject {
            deployment: Some(dep),
            server: Some(&sid),
            ..Subject::default()
        };
        if n >= END_ATTEMPTS {
            let message = format!(
                "{sid} could not be ended in {n} attempts ({reason}): it stays ENDING until a \
                 terminate of the deployment ends it"
            );
            self.parts
                .logs
                .error(Component::ScalingWorker, subject, &message);
            return Ok(());
        }
        let end = StepKey::End(server.clone());
        let wait = RetryWait {
            step: end.to_string(),
            server: sid.clone(),
            hook: "end".to_string(),
            attempt: n,
            attempts: END_ATTEMPTS,
            message: bounded(reason.clone()),
            next_at_ms: now_ms().saturating_add(end_wait(n).as_millis() as i64),
        };
        // Started again, so that the wait shows as current until an attempt completes it.
        store.step_begin(&journal, &end.to_string(), "")?;
        let key = end.retry(n).to_string();
        let json = serde_json::to_value(&wait)
            .map_err(|e| EngineError::Other(format!("the wait of {sid}'s end: {e}")))?;
        store.step_begin(&journal, &key, "")?;
        store.step_complete(&journal, &key, &json)?;
        if n == 1 {
            let message = format!(
                "{sid} could not be ended ({reason}): it stays ENDING, and its end is tried \
                 again from {} until its host answers",
                wait.next_at_text()
            );
            self.parts
                .logs
                .warn(Component::ScalingWorker, subject, &message);
        }
        Ok(())
    }

    /// Tries again the ends of `spec`'s ENDING servers that are due, side by side (each end
    /// of a server behind an unreachable host waits out the connect timeout): those whose wait
    /// passed, and those a stopped control plane left mid-end. Only while no task works on the
    /// deployment, so that no other end of the same server runs meanwhile. Every due server is
    /// tried and its outcome recorded; the first failure is returned after.
    pub(crate) async fn retry_ends(&self, spec: &DeploymentSpec) -> Result<(), EngineError> {
        let dep = spec.name.as_str();
        let journal = self.journal_id(dep)?;
        let mut failed = None;
        let mut due = Vec::new();
        for row in self.parts.store.servers::<AgentState>(dep)? {
            if row.agent_state == AgentState::Ending {
                match self.end_due_now(dep, &journal, &row) {
                    Ok(found) => due.extend(found),
                    Err(e) => _ = failed.get_or_insert(e),
                }
            }
        }
        let ends: Vec<_> = (due.iter())
            .map(|(server, _)| self.end_server(dep, server, None))
            .collect();
        let ended = parallel::at_most(ASKED_AT_ONCE, ends).await;
        for ((server, n), ended) in due.iter().zip(ended) {
            let noted = match ended {
                Ok(_) => {
                    let message = match n {
                        0 => format!("{} ended: its end had been cut short", server.id),
                        n => format!(
                            "{} ended on attempt {}: its host answered",
                            server.id,
                            n + 1
                        ),
                    };
                    self.log_deployment(dep, &message);
                    Ok(())
                }
                Err(e) => self.defer_end(dep, &server.id, e),
            };
            if let Err(e) = noted {
                failed.get_or_insert(e);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// The ENDING server of `row` with its failed attempts, if its end is to be tried now.
    fn end_due_now(
        &self,
        dep: &str,
        journal: &str,
        row: &ServerRow<AgentState>,
    ) -> Result<Option<(Server, u32)>, EngineError> {
        // Without a handle there is nothing the provider could end.
        let Some(server) = self.server_of(row)? else {
            self.agent_event(dep, &row.id, AgentEvent::Terminated)?;
            return Ok(None);
        };
        let n = self.end_attempts(journal, &row.id)?;
        Ok(self.end_due(journal, &server.id, n)?.then_some((server, n)))
    }

    /// The failed attempts recorded at ending `server`.
    fn end_attempts(&self, journal: &str, server: &str) -> Result<u32, EngineError> {
        let text = self.parts.store.meta(&attempts_key(journal, server))?;
        Ok(text.and_then(|t| t.parse().ok()).unwrap_or(0))
    }

    /// Whether the end of `server`, after `n` failed attempts, is to be tried now.
    fn end_due(&self, journal: &str, server: &ServerId, n: u32) -> Result<bool, EngineError> {
        if n >= END_ATTEMPTS {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
        let key = StepKey::End(server.clone()).retry(n).to_string();
        let wait = self
            .parts
            .store
            .step(journal, &key)?
            .and_then(|row| row.outcome)
            .and_then(|o| serde_json::from_value::<RetryWait>(o).ok());
        Ok(wait.is_none_or(|w| w.next_at_ms <= now_ms()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_five_seconds_up_to_a_minute() {
        let waits: Vec<u64> = (1..=6).map(|n| end_wait(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
        assert_eq!(end_wait(END_ATTEMPTS), MAX_END_WAIT);
    }

    #[test]
    fn attempts_at_the_longest_wait_last_about_a_day() {
        let total: Duration = (1..END_ATTEMPTS).map(end_wait).sum();
        assert!(total >= Duration::from_secs(23 * 3600), "{total:?}");
        assert!(total <= Duration::from_secs(25 * 3600), "{total:?}");
    }

    #[test]
    fn a_long_reason_is_cut_at_a_character_boundary() {
        let cut = bounded("é".repeat(MAX_REASON));
        assert!(cut.len() <= MAX_REASON + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        assert_eq!(bounded("short".into()), "short");
    }
}
