//! Health on a schedule, the engine's part. Once a service starts, its agent is told to call
//! its `health-check` hook every interval (`watch_health`). Each result the agent reports is
//! recorded (`note_health`): the status view shows the last one, an event is written only when
//! the status changes, and a service CRITICAL `unhealthy-after` times in a row is restarted
//! (stop, start) with exponential backoff. After `restarts` restarts not followed by an OK,
//! its server is condemned: auto-recovery counts it gone and the reconciler replaces it.

use crate::engine::{Engine, EngineError};
use crate::facts::{Fleet, Server};
use crate::launch::{caps, service_package_dir};
use crate::logs::{Component, Subject};
use crate::retry::now_ms;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;
use stratus_model::context::{HealthStatus, HookCall};
use stratus_model::spec::{DeploymentSpec, HealthPolicy, ServiceSpec};
use stratus_model::state::{AgentState, ServiceState};
use stratus_model::step_key::StepKey;
use stratus_protocol::bounds::{MAX_HEALTH_MESSAGE_BYTES, cut};
use stratus_protocol::{AgentReply, AgentRequest, HealthResult, HealthWatch, HookResult};
use stratus_store::{Store, StoreError};

/// How long an agent may take to stop checking a service.
const UNWATCH_LIMIT: Duration = Duration::from_secs(10);
/// How long a restart's stop or start hook may take before the restart counts as failed.
const RESTART_CALL_LIMIT: Duration = Duration::from_secs(300);

/// What the control plane keeps of a service's health on one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRecord {
    pub status: HealthStatus,
    pub message: String,
    /// Unix milliseconds of the last result.
    pub checked_at_ms: i64,
    /// CRITICAL results in a row, counted again from 0 after each restart.
    pub critical_in_a_row: u32,
    /// Restarts since the service was last OK: at the service's `restarts`, the next
    /// unhealthy streak replaces the server.
    pub restarts_since_ok: u32,
    /// Restarts in all.
    pub restarts: u32,
    /// Unix milliseconds before which no restart starts (the backoff).
    pub next_restart_at_ms: i64,
}

impl HealthRecord {
    /// A new result at `now`: CRITICAL extends the streak, anything else ends it, and OK also
    /// forgets the restarts and their backoff.
    fn record(&mut self, status: HealthStatus, message: String, now: i64) {
        self.status = status;
        self.message = message;
        self.checked_at_ms = now;
        match status {
            HealthStatus::Critical => {
                self.critical_in_a_row = self.critical_in_a_row.saturating_add(1)
            }
            HealthStatus::Ok => {
                self.critical_in_a_row = 0;
                self.restarts_since_ok = 0;
                self.next_restart_at_ms = 0;
            }
            HealthStatus::Warning | HealthStatus::Unknown => self.critical_in_a_row = 0,
        }
    }

    /// Restart or replace once the streak reaches `unhealthy-after` and the backoff is over
    /// (replace only when the tier has `recovery`); a restart is counted here, with its
    /// backoff and a new streak, so later results do not repeat it.
    fn decide(&mut self, policy: &HealthPolicy, recovery: bool, now: i64) -> HealthAction {
        if self.critical_in_a_row < policy.unhealthy_after || now < self.next_restart_at_ms {
            return HealthAction::None;
        }
        if recovery && self.restarts_since_ok >= policy.restarts {
            return HealthAction::Replace;
        }
        self.restarts_since_ok = self.restarts_since_ok.saturating_add(1);
        self.restarts = self.restarts.saturating_add(1);
        self.critical_in_a_row = 0;
        let backoff = policy.backoff_after(self.restarts_since_ok);
        self.next_restart_at_ms =
            now.saturating_add(i64::try_from(backoff.as_millis()).unwrap_or(i64::MAX));
        HealthAction::Restart {
            n: self.restarts_since_ok,
        }
    }
}

/// What a health result calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthAction {
    None,
    /// Stop and start the service (restart number `n` since it was last OK).
    Restart {
        n: u32,
    },
    /// The server was condemned: the reconciler replaces it.
    Replace,
    /// The file has no such service on this server (any more): its checks should stop.
    Unwatch,
}

/// The word status shows for a health status.
pub fn status_word(s: HealthStatus) -> &'static str {
    match s {
        HealthStatus::Ok => "OK",
        HealthStatus::Warning => "WARNING",
        HealthStatus::Critical => "CRITICAL",
        HealthStatus::Unknown => "UNKNOWN",
    }
}

fn record_key(journal: &str, server: &str, service: &str) -> String {
    format!("health/{journal}/{server}/{service}")
}

fn condemned_key(journal: &str, server: &str) -> String {
    format!("condemned/{journal}/{server}")
}

/// The last health recorded for `service` on `server` in the journal `journal`.
pub fn health_of(
    store: &Store,
    journal: &str,
    server: &str,
    service: &str,
) -> Result<Option<HealthRecord>, StoreError> {
    Ok(store
        .meta(&record_key(journal, server, service))?
        .and_then(|t| serde_json::from_str(&t).ok()))
}

/// Why `server` was condemned, if it was.
pub fn condemned(store: &Store, journal: &str, server: &str) -> Result<Option<String>, StoreError> {
    store.meta(&condemned_key(journal, server))
}

impl Engine {
    /// Tells the agent of `server` to check `svc` on its schedule from now on.
    pub(crate) async fn watch_health(
        &self,
        spec: &DeploymentSpec,
        fleet: &Fleet,
        svc: &ServiceSpec,
        server: &Server,
    ) -> Result<(), EngineError> {
        // A LOST agent cannot be told: the pass its return brings about tells it again.
        if self.is_lost(spec.name.as_str(), &server.id)? {
            return Ok(());
        }
        let ctx = self.service_context(spec, fleet, svc, server)?;
        let watch = HealthWatch {
            service: svc.name.to_string(),
            package_dir: service_package_dir(svc),
            capabilities: caps(svc),
            call: Box::new(HookCall::HealthCheck { ctx }),
            interval_ms: svc.health.interval_ms,
            timeout_ms: svc.health.timeout_ms,
        };
        let key = StepKey::service(&svc.name, &server.id, "watch-health");
        let request = AgentRequest::WatchHealth { watch };
        self.send_untracked(spec.name.as_str(), server, &key, request)
            .await
    }

    /// Records a health result the agent of `server` reported, writes an event when the
    /// status changed, and says what it calls for (always nothing unless `may_act`: another
    /// task works on the deployment). Results for a service that is not RUNNING on a RUNNING
    /// agent of this deployment are ignored.
    pub fn note_health(
        &self,
        spec: &DeploymentSpec,
        server: &str,
        result: HealthResult,
        may_act: bool,
    ) -> Result<HealthAction, EngineError> {
        let dep = spec.name.as_str();
        let result = result.within_bounds();
        let here = |s: &&ServiceSpec| {
            self.parts
                .store
                .server::<AgentState>(dep, server)
                .ok()
                .flatten()
                .is_some_and(|r| r.tier == s.tier.as_str())
        };
        let Some(svc) = spec.service(&result.service).filter(here) else {
            return Ok(HealthAction::Unwatch);
        };
        if !self.serving(dep, svc, server)? {
            return Ok(HealthAction::None);
        }
        let journal = self.journal_id(dep)?;
        let store = &self.parts.store;
        let key = record_key(&journal, server, svc.name.as_str());
        let before = health_of(store, &journal, server, svc.name.as_str())?;
        let now = now_ms();
        // The agent spaces checks an interval apart: closer results are not its schedule (a
        // flood must not count as `unhealthy-after` results in a row).
        let spacing = i64::try_from(svc.health.interval_ms / 2).unwrap_or(i64::MAX);
        if before
            .as_ref()
            .is_some_and(|b| now.saturating_sub(b.checked_at_ms) < spacing)
        {
            return Ok(HealthAction::None);
        }
        let mut rec = before.clone().unwrap_or(HealthRecord {
            status: result.status,
            message: String::new(),
            checked_at_ms: 0,
            critical_in_a_row: 0,
            restarts_since_ok: 0,
            restarts: 0,
            next_restart_at_ms: 0,
        });
        rec.record(result.status, result.message, now);
        if before.as_ref().is_none_or(|b| b.status != rec.status) {
            self.log_health_change(dep, svc, server, &rec);
        }
        let action = match may_act {
            true => self.health_action(spec, svc, server, &journal, &mut rec, now)?,
            false => HealthAction::None,
        };
        let text = serde_json::to_string(&rec)
            .map_err(|e| EngineError::Other(format!("encoding a health record: {e}")))?;
        store.set_meta(&key, &text)?;
        Ok(action)
    }

    /// Whether `svc` is RUNNING on `server`, a RUNNING server of its tier that is not
    /// condemned.
    fn serving(&self, dep: &str, svc: &ServiceSpec, server: &str) -> Result<bool, EngineError> {
        let store = &self.parts.store;
        let up = store
            .server::<AgentState>(dep, server)?
            .is_some_and(|r| r.tier == svc.tier.as_str() && r.agent_state == AgentState::Running);
        let running = store
            .service_instance::<ServiceState>(dep, svc.name.as_str(), server)?
            .is_some_and(|i| i.state == ServiceState::Running);
        let journal = self.journal_id(dep)?;
        Ok(up && running && condemned(store, &journal, server)?.is_none())
    }

    /// What `rec` calls for now (see [`HealthRecord::decide`]); a replacement condemns the
    /// server here.
    fn health_action(
        &self,
        spec: &DeploymentSpec,
        svc: &ServiceSpec,
        server: &str,
        journal: &str,
        rec: &mut HealthRecord,
        now: i64,
    ) -> Result<HealthAction, EngineError> {
        let recovery = spec
            .tier(svc.tier.as_str())
            .is_some_and(|t| t.recovery.enabled);
        let action = rec.decide(&svc.health, recovery, now);
        if action == HealthAction::Replace {
            let reason = format!(
                "{} CRITICAL {} times in a row after {} restart(s): {}",
                svc.name, rec.critical_in_a_row, rec.restarts_since_ok, rec.message
            );
            self.parts
                .store
                .set_meta(&condemned_key(journal, server), &reason)?;
            let message = format!("server {server} will be replaced: {reason}");
            self.health_log(spec.name.as_str(), svc, server, true, &message);
        }
        Ok(action)
    }

    /// Restarts `service` on `server` (its `stop`, then its `start` hook), outside the
    /// journal: a restart is decided again from the results if the control plane stops
    /// during one. `n` is the restart's number since the service was last OK.
    pub async fn restart_unhealthy(
        &self,
        spec: &DeploymentSpec,
        server: &str,
        service: &str,
        n: u32,
    ) -> Result<(), EngineError> {
        let dep = spec.name.as_str();
        let svc = spec
            .service(service)
            .ok_or_else(|| EngineError::Other(format!("no service {service} in {dep}")))?;
        let fleet = self.fleet(dep)?;
        let host = fleet
            .values()
            .flatten()
            .find(|s| s.id.to_string() == server)
            .ok_or_else(|| EngineError::Other(format!("no running server {server} in {dep}")))?;
        let journal = self.journal_id(dep)?;
        let total =
            health_of(&self.parts.store, &journal, server, service)?.map_or(n, |r| r.restarts);
        let message = format!(
            "restarting {service} on {server} (restart {n} of at most {}, with backoff): {} \
             times CRITICAL in a row",
            svc.health.restarts, svc.health.unhealthy_after
        );
        self.health_log(dep, svc, server, true, &message);
        let ctx = self.service_context(spec, &fleet, svc, host)?;
        for call in [
            HookCall::Stop { ctx: ctx.clone() },
            HookCall::Start { ctx: ctx.clone() },
        ] {
            let hook = call.name();
            let request = AgentRequest::Hook {
                call_id: format!("{journal}/health/{server}/{service}/restart-{total}/{hook}"),
                package_dir: service_package_dir(svc),
                capabilities: caps(svc),
                call: Box::new(call),
                rerun_failed: false,
            };
            let failed = |message: String| EngineError::Agent {
                step: format!("health/{server}/{service}/restart-{total}/{hook}"),
                server: server.to_string(),
                message,
            };
            let reply = self
                .parts
                .agents
                .call(dep, server, request, RESTART_CALL_LIMIT)
                .await
                .map_err(|e| failed(e.to_string()))?;
            match reply {
                AgentReply::Hook { report } => {
                    if let HookResult::Failed { kind, message, .. } = report.within_bounds().outcome
                    {
                        return Err(failed(format!("hook {hook} failed ({kind}): {message}")));
                    }
                }
                AgentReply::Error { message } => {
                    return Err(failed(cut(message, MAX_HEALTH_MESSAGE_BYTES)));
                }
                AgentReply::Done
                | AgentReply::Health { .. }
                | AgentReply::Supervision { .. }
                | AgentReply::Metrics { .. }
                | AgentReply::Log { .. } => {
                    return Err(failed(format!("agent answered {hook} without a report")));
                }
            }
        }
        let message = format!("{service} on {server} restarted (stop, start)");
        self.health_log(dep, svc, server, false, &message);
        Ok(())
    }

    /// Tells an agent started again on `server` (its checks died with its predecessor) to
    /// check again every service RUNNING there.
    pub async fn rewatch_health(&self, dep: &str, server: &str) -> Result<(), EngineError> {
        let store = &self.parts.store;
        let Some(row) = store.deployment::<stratus_model::state::DeploymentState>(dep)? else {
            return Ok(());
        };
        let mut spec = DeploymentSpec::from_str(&row.spec_toml, &row.spec_path)
            .map_err(|e| EngineError::Other(format!("reading the file of {dep}: {e}")))?;
        crate::apply::with_kept_ids(store, &mut spec)?;
        let fleet = self.fleet(dep)?;
        let Some(host) = fleet
            .values()
            .flatten()
            .find(|s| s.id.to_string() == server)
        else {
            return Ok(());
        };
        for inst in store.service_instances::<ServiceState>(dep)? {
            let running = inst.server_id == server && inst.state == ServiceState::Running;
            if let (true, Some(svc)) = (running, spec.service(&inst.service)) {
                self.watch_health(&spec, &fleet, svc, host).await?;
            }
        }
        Ok(())
    }

    /// Tells the agent of `server` to stop checking `service` (it left the deployment).
    pub async fn unwatch_health(
        &self,
        dep: &str,
        server: &str,
        service: &str,
    ) -> Result<(), EngineError> {
        let request = AgentRequest::UnwatchHealth {
            service: service.to_string(),
        };
        let reply = self
            .parts
            .agents
            .call(dep, server, request, UNWATCH_LIMIT)
            .await
            .map_err(|e| EngineError::Other(format!("unwatching {service} on {server}: {e}")))?;
        match reply {
            AgentReply::Error { message } => Err(EngineError::Other(format!(
                "unwatching {service} on {server}: {}",
                cut(message, MAX_HEALTH_MESSAGE_BYTES)
            ))),
            _ => Ok(()),
        }
    }

    /// Whether any live server of `spec` was condemned by its health (see `recovery.rs`).
    pub(crate) fn condemned_servers(
        &self,
        spec: &DeploymentSpec,
    ) -> Result<Vec<String>, EngineError> {
        let dep = spec.name.as_str();
        let journal = self.journal_id(dep)?;
        let store = &self.parts.store;
        let prefix = condemned_key(&journal, "");
        let marked: BTreeSet<String> = store
            .meta_under(&prefix)?
            .into_iter()
            .filter_map(|(key, _)| key.strip_prefix(&prefix).map(str::to_owned))
            .collect();
        if marked.is_empty() {
            return Ok(Vec::new());
        }
        Ok(store
            .servers::<AgentState>(dep)?
            .into_iter()
            .filter(|row| row.agent_state != AgentState::Terminated && marked.contains(&row.id))
            .map(|row| row.id)
            .collect())
    }

    fn log_health_change(&self, dep: &str, svc: &ServiceSpec, server: &str, rec: &HealthRecord) {
        let word = status_word(rec.status);
        let message = format!(
            "health of {} on {server}: {word}: {}",
            svc.name, rec.message
        );
        let bad = !matches!(rec.status, HealthStatus::Ok);
        self.health_log(dep, svc, server, bad, &message);
    }

    fn health_log(&self, dep: &str, svc: &ServiceSpec, server: &str, warn: bool, message: &str) {
        let subject = Subject {
            deployment: Some(dep),
            tier: Some(svc.tier.as_str()),
            server: Some(server),
            service: Some(svc.name.as_str()),
        };
        let logs = &self.parts.logs;
        if warn {
            logs.warn(Component::MonitorServer, subject, message);
        } else {
            logs.info(Component::MonitorServer, subject, message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> HealthRecord {
        HealthRecord {
            status: HealthStatus::Ok,
            message: String::new(),
            checked_at_ms: 0,
            critical_in_a_row: 0,
            restarts_since_ok: 0,
            restarts: 0,
            next_restart_at_ms: 0,
        }
    }

    const POLICY: HealthPolicy = HealthPolicy {
        interval_ms: 1_000,
        timeout_ms: 1_000,
        unhealthy_after: 2,
        restarts: 2,
    };

    /// Feeds `statuses` one second apart and returns every action that was not `None`, with
    /// the second it came at.
    fn run(
        rec: &mut HealthRecord,
        statuses: &[HealthStatus],
        recovery: bool,
    ) -> Vec<(i64, HealthAction)> {
        let mut out = Vec::new();
        for (i, s) in statuses.iter().enumerate() {
            let now = (i as i64 + 1) * 1_000;
            rec.record(*s, String::new(), now);
            match rec.decide(&POLICY, recovery, now) {
                HealthAction::None => {}
                a => out.push((now / 1_000, a)),
            }
        }
        out
    }

    use HealthStatus::{Critical as C, Ok as K, Unknown as U, Warning as W};

    #[test]
    fn critical_in_a_row_restarts_with_backoff_then_replaces() {
        let mut rec = fresh();
        let actions = run(&mut rec, &[C; 9], true);
        assert_eq!(
            actions,
            [
                (2, HealthAction::Restart { n: 1 }),
                // Two more CRITICAL results (3, 4) and the 1 s backoff are over at 4.
                (4, HealthAction::Restart { n: 2 }),
                // The 2 s backoff holds the streak of 5, 6 until 6; 6 is at the backoff's end.
                (6, HealthAction::Replace),
                (7, HealthAction::Replace),
                (8, HealthAction::Replace),
                (9, HealthAction::Replace),
            ]
        );
        assert_eq!((rec.restarts, rec.restarts_since_ok), (2, 2));
    }

    #[test]
    fn anything_but_critical_ends_the_streak_and_only_ok_forgets_the_restarts() {
        let mut rec = fresh();
        let actions = run(&mut rec, &[C, W, C, U, C, C], true);
        assert_eq!(actions, [(6, HealthAction::Restart { n: 1 })]);
        run(&mut rec, &[K], true);
        assert_eq!(
            (rec.restarts, rec.restarts_since_ok, rec.next_restart_at_ms),
            (1, 0, 0)
        );
    }

    #[test]
    fn without_recovery_restarts_go_on_with_a_doubling_backoff() {
        let mut rec = fresh();
        let actions = run(&mut rec, &[C; 12], false);
        let restart = |n| HealthAction::Restart { n };
        assert_eq!(
            actions,
            [
                (2, restart(1)),
                (4, restart(2)),
                (6, restart(3)),
                (10, restart(4))
            ]
        );
    }
}
