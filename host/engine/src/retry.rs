//! Retrying a hook that fails with a retryable `hook-error` ("a dependency is not up yet"),
//! with the service's bounded exponential backoff (`stratus_model::retry::RetryPolicy`).
//!
//! Each attempt is a distinct agent call (`<call id>/attempt-<n>` from the second one on), so
//! the agent's answer cache never replays an earlier attempt's failure. Each attempt that asks
//! to be retried is journaled as its own completed step `<key>/retry-<n>` holding a
//! [`RetryWait`]: a restarted control plane continues with the next attempt at its recorded
//! time instead of starting the count again, and `stratus status` shows the wait.

use crate::engine::{Engine, EngineError};
use crate::logs::{Component, Subject};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use stratus_model::step_key::StepKey;
use stratus_store::{StepRow, StepState};

/// An attempt that asked to be retried, and when the next one is due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryWait {
    /// The hook's journaled step, e.g. `service/app/app-1/configure`.
    pub step: String,
    pub server: String,
    pub hook: String,
    /// The attempt that asked (1-based).
    pub attempt: u32,
    /// The service's cap on attempts.
    pub attempts: u32,
    /// The hook's own message (bounded by the agent, secrets already masked).
    pub message: String,
    /// Unix milliseconds of the next attempt.
    pub next_at_ms: i64,
}

impl RetryWait {
    /// `12:01:03`, the UTC time of day of the next attempt.
    pub fn next_at_text(&self) -> String {
        let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(self.next_at_ms).unwrap_or(0));
        let stamp = humantime::format_rfc3339_seconds(at).to_string();
        stamp.get(11..19).unwrap_or(&stamp).to_string()
    }

    /// The event line of this wait.
    pub fn describe(&self) -> String {
        format!(
            "{} on {} asked to retry ({}): attempt {} of {} at {}",
            self.hook,
            self.server,
            self.message,
            self.attempt + 1,
            self.attempts,
            self.next_at_text()
        )
    }
}

/// The agent call id of attempt `n`: the first keeps the id a hook always had.
pub(crate) fn call_id(base: &str, n: u32) -> String {
    match n {
        1 => base.to_string(),
        n => format!("{base}/attempt-{n}"),
    }
}

pub(crate) fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// Sleeps until the Unix millisecond `at` (at once if it has passed).
pub(crate) async fn sleep_until(at: i64) {
    let left = u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(left)).await;
}

/// The waits a journal shows as current: for each hook step still started, its latest
/// journaled wait (recorded for the same inputs).
pub fn current_waits(steps: &[StepRow]) -> Vec<RetryWait> {
    let mut out: Vec<RetryWait> = Vec::new();
    for row in steps.iter().filter(|r| r.status == StepState::Completed) {
        let Ok(StepKey::Retry { step, .. }) = row.key.parse::<StepKey>() else {
            continue;
        };
        let outer = step.to_string();
        let running = steps.iter().any(|s| {
            s.key == outer && s.status == StepState::Started && s.input_digest == row.input_digest
        });
        let wait = row
            .outcome
            .clone()
            .and_then(|o| serde_json::from_value::<RetryWait>(o).ok());
        let (true, Some(wait)) = (running, wait) else {
            continue;
        };
        match out.iter_mut().find(|w| w.step == wait.step) {
            Some(w) if w.attempt < wait.attempt => *w = wait,
            Some(_) => {}
            None => out.push(wait),
        }
    }
    out
}

impl Engine {
    /// The latest wait journaled for step `key` with these inputs, if its count is still on.
    pub(crate) fn last_wait(
        &self,
        dep: &str,
        key: &StepKey,
        input: &str,
    ) -> Result<Option<RetryWait>, EngineError> {
        let journal = self.journal_id(dep)?;
        let mut last = None;
        for n in 1.. {
            let Some(row) = self.parts.store.step(&journal, &key.retry(n).to_string())? else {
                break;
            };
            if row.status != StepState::Completed || row.input_digest != input {
                break;
            }
            match row.outcome.and_then(|o| serde_json::from_value(o).ok()) {
                Some(wait) => last = Some(wait),
                None => break,
            }
        }
        Ok(last)
    }

    /// Journals `wait` as the step `<key>/retry-<attempt>`, with its event written inside the
    /// step so that a restart after the step completed does not write it again.
    pub(crate) async fn record_wait(
        &self,
        dep: &str,
        key: &StepKey,
        input: &str,
        wait: RetryWait,
        subject: Subject<'_>,
    ) -> Result<RetryWait, EngineError> {
        self.step(dep, &key.retry(wait.attempt), input, async {
            let line = wait.describe();
            self.parts
                .logs
                .warn(Component::ConfigurationWorker, subject, &line);
            Ok(wait)
        })
        .await
    }

    /// Ends the count of step `key` once it failed, so that running the step again (a new
    /// launch of a FAILED deployment) starts from attempt 1.
    pub(crate) fn forget_waits(
        &self,
        dep: &str,
        key: &StepKey,
        upto: u32,
    ) -> Result<(), EngineError> {
        let journal = self.journal_id(dep)?;
        for n in 1..upto {
            let rk = key.retry(n).to_string();
            if self.parts.store.step(&journal, &rk)?.is_some() {
                self.parts
                    .store
                    .step_failed(&journal, &rk, "superseded: the step failed")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, status: StepState, digest: &str, wait: Option<&RetryWait>) -> StepRow {
        StepRow {
            key: key.into(),
            status,
            attempts: 1,
            input_digest: digest.into(),
            outcome: wait.map(|w| serde_json::to_value(w).unwrap()),
            error: None,
            started_at: 0,
            finished_at: None,
            runs: 1,
        }
    }

    fn wait(step: &str, attempt: u32) -> RetryWait {
        RetryWait {
            step: step.into(),
            server: "app-1".into(),
            hook: "configure".into(),
            attempt,
            attempts: 8,
            message: "db not up".into(),
            next_at_ms: 43_263_000,
        }
    }

    #[test]
    fn only_the_latest_wait_of_a_running_step_with_the_same_inputs_is_current() {
        let key: StepKey = "service/app/app-1/configure".parse().unwrap();
        let k = &key.to_string();
        let (w1, w2) = (wait(k, 1), wait(k, 2));
        let mut steps = vec![
            row(k, StepState::Started, "d", None),
            row(
                &key.retry(1).to_string(),
                StepState::Completed,
                "d",
                Some(&w1),
            ),
            row(
                &key.retry(2).to_string(),
                StepState::Completed,
                "d",
                Some(&w2),
            ),
        ];
        assert_eq!(current_waits(&steps), std::slice::from_ref(&w2));
        assert_eq!(
            w2.describe(),
            "configure on app-1 asked to retry (db not up): attempt 3 of 8 at 12:01:03"
        );
        steps[0].status = StepState::Completed;
        assert!(
            current_waits(&steps).is_empty(),
            "a done step waits no more"
        );
        steps[0].status = StepState::Started;
        steps[0].input_digest = "changed".into();
        assert!(current_waits(&steps).is_empty(), "stale inputs");
    }

    #[test]
    fn the_first_attempt_keeps_the_old_call_id_and_later_ones_are_distinct() {
        assert_eq!(call_id("d/k/ab", 1), "d/k/ab");
        assert_eq!(call_id("d/k/ab", 2), "d/k/ab/attempt-2");
        assert_ne!(call_id("d/k/ab", 2), call_id("d/k/ab", 3));
    }
}
