//! Scheduled health checks: the control plane tells the agent, once a service has started,
//! to call its `health-check` hook every interval with a timeout; each result goes back as an
//! unsolicited frame on whatever connection is up (a result with no connection is dropped:
//! the control plane then sees the server lost, and its services UNKNOWN).

use crate::hooks::Hooks;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stratus_model::context::{HealthStatus, HookCall};
use stratus_model::health::{MIN_INTERVAL_MS, MIN_TIMEOUT_MS};
use stratus_protocol::bounds::{MAX_HEALTH_MESSAGE_BYTES, cut};
use stratus_protocol::{AgentReply, HealthResult, HealthWatch, HookResult};
use tokio::sync::broadcast;
use tokio::task::AbortHandle;

/// Most services one agent checks, so that requests cannot make it run checks without end.
pub const MAX_WATCHES: usize = 256;
/// Results buffered for a slow connection; older ones are dropped (only the latest matters).
const RESULT_BUFFER: usize = 256;

/// The services this agent checks, and where their results go.
pub(crate) struct Watches {
    tasks: Mutex<HashMap<String, AbortHandle>>,
    results: broadcast::Sender<HealthResult>,
}

impl Default for Watches {
    fn default() -> Self {
        Watches {
            tasks: Mutex::default(),
            results: broadcast::channel(RESULT_BUFFER).0,
        }
    }
}

impl Watches {
    /// Every result from now on, for the connection that forwards them.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<HealthResult> {
        self.results.subscribe()
    }

    /// Sends `result` now, outside the schedule (the disk watch stopped the service).
    pub(crate) fn report(&self, result: HealthResult) {
        let result = HealthResult {
            message: cut(result.message, MAX_HEALTH_MESSAGE_BYTES),
            ..result
        };
        let _ = self.results.send(result.within_bounds());
    }

    /// Stops the scheduled checks of `service`, if any.
    pub(crate) fn unwatch(&self, service: &str) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(task) = tasks.remove(service) {
            task.abort();
            tracing::info!(%service, "health checks stopped");
        }
    }

    /// Stops every scheduled check (the agent is shutting its services down).
    pub(crate) fn stop_all(&self) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for (_, task) in tasks.drain() {
            task.abort();
        }
    }
}

impl Hooks {
    /// Starts (or replaces) the scheduled checks of `watch.service`.
    pub(crate) fn watch_health(self: &Arc<Self>, watch: HealthWatch) -> Result<(), String> {
        if !matches!(*watch.call, HookCall::HealthCheck { .. }) {
            return Err(format!(
                "a health watch of {} must call health-check, not {}",
                watch.service,
                watch.call.name()
            ));
        }
        let mut tasks = self.health.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if !tasks.contains_key(&watch.service) && tasks.len() >= MAX_WATCHES {
            return Err(format!(
                "this agent already checks {MAX_WATCHES} services, the most it checks"
            ));
        }
        let service = watch.service.clone();
        tracing::info!(
            %service,
            interval_ms = watch.interval_ms,
            timeout_ms = watch.timeout_ms,
            "health checks scheduled"
        );
        let task = tokio::spawn(check_forever(self.clone(), watch)).abort_handle();
        if let Some(old) = tasks.insert(service, task) {
            old.abort();
        }
        Ok(())
    }
}

/// A watch's interval and timeout, held to the model's bounds whatever the request said.
fn schedule(interval_ms: u64, timeout_ms: u64) -> (Duration, Duration) {
    let interval = interval_ms.max(MIN_INTERVAL_MS);
    let timeout = timeout_ms.clamp(MIN_TIMEOUT_MS, interval);
    (
        Duration::from_millis(interval),
        Duration::from_millis(timeout),
    )
}

/// Checks forever: each check one interval after the previous one ended (the first one
/// interval after the service started), so results are never closer than the interval.
async fn check_forever(hooks: Arc<Hooks>, watch: HealthWatch) {
    let (interval, _) = schedule(watch.interval_ms, watch.timeout_ms);
    loop {
        tokio::time::sleep(interval).await;
        let result = check(&hooks, &watch).await;
        // No receiver means no connection right now; the result is simply not reported.
        let _ = hooks.health.results.send(result);
    }
}

/// One check: the hook's report, CRITICAL when it does not answer in time, UNKNOWN when it
/// fails or cannot run.
async fn check(hooks: &Hooks, watch: &HealthWatch) -> HealthResult {
    let (_, timeout) = schedule(watch.interval_ms, watch.timeout_ms);
    let started = Instant::now();
    let call = hooks.run(&watch.package_dir, watch.capabilities.clone(), &watch.call);
    // Over its disk limit it stays CRITICAL whatever its own check would say.
    let held = hooks.disk.over(&watch.service);
    let (status, message) = match held {
        Some(reason) => (HealthStatus::Critical, reason),
        None => answer(tokio::time::timeout(timeout, call).await, timeout),
    };
    HealthResult {
        service: watch.service.clone(),
        status,
        message: cut(message, MAX_HEALTH_MESSAGE_BYTES),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
    .within_bounds()
}

/// The status and message of a check's reply (`Err`: it did not answer within `timeout`).
fn answer(
    reply: Result<AgentReply, tokio::time::error::Elapsed>,
    timeout: Duration,
) -> (HealthStatus, String) {
    match reply {
        Err(_) => (
            HealthStatus::Critical,
            format!(
                "health-check did not answer within {} ms",
                timeout.as_millis()
            ),
        ),
        Ok(AgentReply::Hook { report }) => match report.outcome {
            HookResult::Health { report } => (report.status, report.message),
            HookResult::Failed { kind, message, .. } => (
                HealthStatus::Unknown,
                format!("health-check failed ({kind}): {message}"),
            ),
            HookResult::Done | HookResult::Cm { .. } => (
                HealthStatus::Unknown,
                "health-check returned no health report".to_string(),
            ),
        },
        Ok(AgentReply::Error { message }) => (
            HealthStatus::Unknown,
            format!("health-check could not run: {message}"),
        ),
        Ok(_) => (
            HealthStatus::Unknown,
            "health-check returned no health report".to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_is_held_to_the_bounds() {
        let ms = |(i, t): (Duration, Duration)| (i.as_millis(), t.as_millis());
        assert_eq!(ms(schedule(0, 0)), (1_000, 100));
        assert_eq!(ms(schedule(5_000, 60_000)), (5_000, 5_000));
        assert_eq!(ms(schedule(2_000, 300)), (2_000, 300));
    }
}
