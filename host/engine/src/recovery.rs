//! What the reconciler observes of a deployment's servers: which are serving, which lost
//! their agent and since when, and which are gone (lost beyond their tier's grace, or ended
//! as far as the provider knows). Gone servers are what auto-recovery replaces.

use crate::engine::{Engine, EngineError};
use crate::parallel;
use crate::retry::now_ms;
use crate::scaling_plan::Observed;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stratus_model::ServerId;
use stratus_model::spec::DeploymentSpec;
use stratus_model::state::AgentState;
use stratus_store::ServerRow;

/// A server whose agent is LOST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub id: ServerId,
    /// Unix milliseconds when its agent was last seen.
    pub since_ms: i64,
    /// Beyond its tier's grace or ended: the reconciler replaces it (or, with recovery off,
    /// the deployment cannot reach its target).
    pub gone: bool,
    /// Its tier replaces gone servers.
    pub recovery: bool,
    pub grace_ms: u64,
}

impl Lost {
    /// `app-1 lost at 14:03:07`.
    pub fn describe(&self) -> String {
        format!("{} lost at {}", self.id, clock(self.since_ms))
    }
}

/// `HH:MM:SS` UTC of a Unix millisecond time.
pub fn clock(ms: i64) -> String {
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// How long a RUNNING server's processes must look ended, over two looks, before it counts as
/// LOST and ended: one look at `/proc` can miss a live agent (a read that fails while the
/// process changes), and counting it ended would replace a server that serves. A server whose
/// connection already dropped is LOST, and one look that it ended is enough.
pub const ENDED_CONFIRM: Duration = Duration::from_millis(400);

/// How often a RUNNING server is asked after: its agent's connection already tells within a
/// pass when it drops, so the provider's look is only the backstop for a server that ended
/// while its connection seemed up (or never came back after a restart). Asking each of a
/// thousand servers twice a second was most of an idle control plane's work.
pub const RUNNING_LOOK_EVERY: Duration = Duration::from_secs(2);

/// How many servers the providers are asked about at once. Over SSH or a cloud API each answer
/// takes a round trip, and one from an unreachable host the whole connect timeout: asked one
/// after another, every unreachable host added its timeout to every pass. Below sshd's default
/// `MaxStartups` (10), so slots of one machine are not refused logins; a cloud driver lets
/// fewer of its own calls run at once.
pub const ASKED_AT_ONCE: usize = 8;

/// When each (deployment, server) was first seen ended, while it still looks so, and when each
/// RUNNING server was last looked at.
#[derive(Clone, Default)]
pub(crate) struct EndedSeen {
    ended: Arc<Mutex<HashMap<(String, String), Instant>>>,
    looked: Arc<Mutex<HashMap<(String, String), Instant>>>,
}

impl EndedSeen {
    /// Whether a RUNNING server is due for a look: once every [`RUNNING_LOOK_EVERY`], and at
    /// every pass while it looks ended (the second look confirms it).
    fn due(&self, dep: &str, server: &str) -> bool {
        let key = (dep.to_string(), server.to_string());
        if lock(&self.ended).contains_key(&key) {
            return true;
        }
        let mut looked = lock(&self.looked);
        if looked.len() >= 4096 {
            looked.retain(|_, t| t.elapsed() < RUNNING_LOOK_EVERY);
        }
        match looked.get(&key) {
            Some(t) if t.elapsed() < RUNNING_LOOK_EVERY => false,
            _ => {
                looked.insert(key, Instant::now());
                true
            }
        }
    }

    /// Whether the server looks ended now and did so `ENDED_CONFIRM` ago already.
    fn confirmed(&self, dep: &str, server: &str, ended_now: bool) -> bool {
        let mut seen = lock(&self.ended);
        let key = (dep.to_string(), server.to_string());
        if !ended_now {
            seen.remove(&key);
            return false;
        }
        // Servers that ended for good are never looked at again: forget old entries in bulk.
        if seen.len() >= 4096 {
            seen.retain(|_, t| t.elapsed() < Duration::from_secs(60));
        }
        let first = *seen.entry(key).or_insert_with(Instant::now);
        first.elapsed() >= ENDED_CONFIRM
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn lost_at_key(dep: &str, server: &str) -> String {
    format!("lost-at/{dep}/{server}")
}

impl Engine {
    /// The servers of `spec` whose agents are LOST, in id order.
    pub async fn lost_servers(&self, spec: &DeploymentSpec) -> Result<Vec<Lost>, EngineError> {
        let dep = spec.name.as_str();
        let now = now_ms();
        let rows: Vec<_> = self
            .parts
            .store
            .servers::<AgentState>(dep)?
            .into_iter()
            .filter(|row| self.to_ask_after(dep, row))
            .collect();
        // Collected first: a closure making borrowing futures, held across the await, would
        // make the pass's future not `Send` (a limit of the compiler's lifetime checks).
        let looks: Vec<_> = rows.iter().map(|row| self.looks_ended(dep, row)).collect();
        let ended = parallel::at_most(ASKED_AT_ONCE, looks).await;
        // Every row is seen to; the first failure is returned after.
        let (mut lost, mut failed) = (Vec::new(), None);
        for (row, ended) in rows.iter().zip(ended) {
            match self.lost_one(spec, row, ended, now) {
                Ok(found) => lost.extend(found),
                Err(e) => _ = failed.get_or_insert(e),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        lost.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(lost)
    }

    /// Asks the provider whether `row`'s server ended. A server whose connection is up (or not
    /// back yet after a control plane restart) must look ended twice, [`ENDED_CONFIRM`] apart,
    /// counted from each answer (not from the slowest answer of the pass); one whose connection
    /// dropped is taken at its word.
    async fn looks_ended(&self, dep: &str, row: &ServerRow<AgentState>) -> bool {
        // A provider that cannot tell (unreachable) leaves the server to its grace.
        let looks_ended = self.presence(row).await.is_gone();
        if row.agent_state == AgentState::Running {
            self.ended_seen.confirmed(dep, &row.id, looks_ended)
        } else {
            looks_ended
        }
    }

    /// Whether the provider is to be asked whether `row`'s server still exists.
    fn to_ask_after(&self, dep: &str, row: &ServerRow<AgentState>) -> bool {
        // An ended server is never lost, and asking the provider about it costs a scan of
        // every process: rows of ended servers pile up with each scaling event. One being
        // ended is not lost either: it left, and was replaced if it had to be.
        if matches!(row.agent_state, AgentState::Terminated | AgentState::Ending) {
            return false;
        }
        row.agent_state != AgentState::Running || self.ended_seen.due(dep, &row.id)
    }

    /// `row`'s server as LOST, if it is, given whether it ended (as [`Self::looks_ended`]).
    fn lost_one(
        &self,
        spec: &DeploymentSpec,
        row: &ServerRow<AgentState>,
        ended: bool,
        now: i64,
    ) -> Result<Option<Lost>, EngineError> {
        let dep = spec.name.as_str();
        // A server that ended while no control plane watched its connection (the agent
        // never came back after a restart) is lost all the same.
        if row.agent_state == AgentState::Running && ended {
            let event = stratus_model::state::AgentEvent::Lost;
            self.agent_event(dep, &row.id, event)?;
        } else if row.agent_state != AgentState::Lost {
            return Ok(None);
        }
        let Ok(id) = row.id.parse::<ServerId>() else {
            return Ok(None);
        };
        let recovery = spec
            .tier(row.tier.as_str())
            .map(|t| t.recovery)
            .unwrap_or_default();
        let since_ms = self
            .parts
            .store
            .meta(&lost_at_key(dep, &row.id))?
            .and_then(|t| t.parse().ok())
            .unwrap_or(now);
        let expired = now.saturating_sub(since_ms) >= recovery.grace_ms as i64;
        Ok(Some(Lost {
            id,
            since_ms,
            gone: expired || ended,
            recovery: recovery.enabled,
            grace_ms: recovery.grace_ms,
        }))
    }

    /// Every live server of `spec` by tier, with whether it is gone.
    pub(crate) async fn observe(
        &self,
        spec: &DeploymentSpec,
    ) -> Result<BTreeMap<String, Vec<Observed>>, EngineError> {
        let dep = spec.name.as_str();
        let lost = self.lost_servers(spec).await?;
        // A server whose service stayed CRITICAL through its restarts is gone too (health.rs).
        let condemned = self.condemned_servers(spec)?;
        let mut out: BTreeMap<String, Vec<Observed>> = BTreeMap::new();
        for row in self.parts.store.servers::<AgentState>(dep)? {
            // A server being ended left its tier already: it is no part of its count.
            if matches!(row.agent_state, AgentState::Terminated | AgentState::Ending) {
                continue;
            }
            let Ok(id) = row.id.parse::<ServerId>() else {
                continue;
            };
            let lost_here = lost.iter().find(|l| l.id == id);
            let gone =
                lost_here.is_some_and(|l| l.gone && l.recovery) || condemned.contains(&row.id);
            let lost = lost_here.is_some() && !gone;
            out.entry(row.tier.clone())
                .or_default()
                .push(Observed { id, gone, lost });
        }
        Ok(out)
    }

    /// The ids of `dep`'s servers whose agent is LOST now.
    pub(crate) fn lost_ids(&self, dep: &str) -> Result<BTreeSet<String>, EngineError> {
        let rows = self.parts.store.servers::<AgentState>(dep)?;
        Ok(rows
            .into_iter()
            .filter(|r| r.agent_state == AgentState::Lost)
            .map(|r| r.id)
            .collect())
    }

    /// Whether `server`'s agent is LOST now: no hook is called on it.
    pub(crate) fn is_lost(&self, dep: &str, server: &ServerId) -> Result<bool, EngineError> {
        let row = self
            .parts
            .store
            .server::<AgentState>(dep, &server.to_string())?;
        Ok(row.is_some_and(|r| r.agent_state == AgentState::Lost))
    }

    /// Notes whether a pass is running while some server is LOST, so that its hooks were
    /// skipped: once every agent is back, a pass catches up on them.
    pub(crate) fn note_skipping(&self, dep: &str) -> Result<(), EngineError> {
        let skipping = !self.lost_ids(dep)?.is_empty();
        let key = skipped_key(&self.journal_id(dep)?);
        let value = if skipping { "true" } else { "" };
        self.parts.store.set_meta(&key, value)?;
        Ok(())
    }

    /// Whether a pass skipped hooks of a server that was LOST then.
    fn skipped(&self, dep: &str) -> Result<bool, EngineError> {
        let key = skipped_key(&self.journal_id(dep)?);
        Ok(self.parts.store.meta(&key)?.as_deref() == Some("true"))
    }
}

/// Set while the last pass ran with a LOST server (see [`Engine::note_skipping`]).
fn skipped_key(journal: &str) -> String {
    format!("reconcile/{journal}/skipped-lost")
}

impl Engine {
    /// Brings a RUNNING or DEGRADED deployment's state in line with its lost servers:
    /// DEGRADED (with which servers and what happens to them) while any is lost, RUNNING again
    /// when all are back, and tries again the ends of servers that could not be ended (see
    /// `end/deferred.rs`). Returns whether a reconcile is due: to replace gone servers, or to
    /// catch up on hooks skipped while an agent that is back was lost.
    pub async fn note_losses(&self, spec: &DeploymentSpec) -> Result<bool, EngineError> {
        use stratus_model::state::{DeploymentEvent, DeploymentState};
        let dep = spec.name.as_str();
        let Some(row) = self.parts.store.deployment::<DeploymentState>(dep)? else {
            return Ok(false);
        };
        if !matches!(
            row.state,
            DeploymentState::Running | DeploymentState::Degraded { .. }
        ) {
            return Ok(false);
        }
        self.retry_ends(spec).await?;
        let lost = self.lost_servers(spec).await?;
        // A condemned server being ended was replaced already.
        let ending = self.ending_ids(dep)?;
        let condemned = self
            .condemned_servers(spec)?
            .iter()
            .any(|id| !ending.contains(id));
        if lost.is_empty() {
            if self
                .deployment_event(dep, DeploymentEvent::Recovered)?
                .is_some()
            {
                self.log_deployment(dep, "deployment RUNNING: every lost agent is back");
            }
            let skipped = self.skipped(dep)?;
            if skipped {
                let message = "catching up on hooks skipped while an agent was lost";
                self.log_deployment(dep, message);
            }
            return Ok(condemned || skipped);
        }
        let reason = lost
            .iter()
            .map(|l| {
                let fate = match (l.recovery, l.gone) {
                    (true, true) => "being replaced".to_string(),
                    (true, false) => format!("replaced if not back within {} s", l.grace_ms / 1000),
                    (false, _) => "not replaced: its tier has recovery off".to_string(),
                };
                format!("{} ({fate})", l.describe())
            })
            .collect::<Vec<_>>()
            .join("; ");
        let same = matches!(&row.state, DeploymentState::Degraded { reason: r } if *r == reason);
        if !same
            && self
                .deployment_event(dep, DeploymentEvent::Degraded(reason.clone()))?
                .is_some()
        {
            let subject = crate::logs::Subject {
                deployment: Some(dep),
                ..crate::logs::Subject::default()
            };
            let message = format!("deployment DEGRADED: {reason}");
            self.parts
                .logs
                .warn(crate::logs::Component::MonitorDeployment, subject, &message);
        }
        Ok(condemned || lost.iter().any(|l| l.gone && l.recovery))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn clock_shows_utc_time_of_day() {
        assert_eq!(super::clock(0), "00:00:00");
        assert_eq!(super::clock(86_400_000 + 3_723_000), "01:02:03");
    }
}
