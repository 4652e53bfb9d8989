//! The reconciler: compares each tier's target (see `targets.rs`) with the servers observed
//! (see `recovery.rs`), decides a journaled change set (see `scaling_plan.rs`), applies it
//! (servers leave, then new ones start), and brings every server through the launch pipeline.
//! The pipeline's steps are journaled per server with their inputs, so servers already done
//! are skipped and only what changed runs: the new servers' whole pipeline, grants for their
//! addresses, the load balancers' node sets, and dependents of a replaced server.
//!
//! A launch is a reconcile from nothing, terminate a reconcile to nothing (see `terminate.rs`);
//! scaling and recovery are changes of the target or of what is observed. A server lost during
//! a pass is waited for until its tier's grace, then replaced (or, with recovery off, named in
//! the failure). A server already LOST when a pass starts gets no departure hook and no grant:
//! the pass goes on without it, and once its agent is back another pass catches up.

use crate::engine::{Engine, EngineError};
use crate::facts::Fleet;
use crate::logs::{Component, Subject};
use crate::parallel;
use crate::recovery::clock;
use crate::retire::{Departed, Leaving};
use crate::retry::now_ms;
use crate::scaling_plan::{TierChange, tier_change};
use crate::steps::digest;
use crate::targets::Goal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use stratus_cloud::PackageRef;
use stratus_model::spec::DeploymentSpec;
use stratus_model::state::DeploymentEvent;
use stratus_model::step_key::StepKey;

/// One reconcile generation's decision, journaled so that a resumed control plane carries
/// on with the same servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    pub generation: u64,
    pub tiers: Vec<TierChange>,
    /// Terminate's change set: every server leaves, hooks failing on the way or not.
    #[serde(default, skip_serializing_if = "is_false")]
    pub to_nothing: bool,
}

/// Change sets before terminate was one are journaled without `to_nothing`, and keep their
/// digest.
fn is_false(b: &bool) -> bool {
    !b
}

/// What a pass's pipeline ran over, none of its servers LOST when it began: the fleet, and how
/// many agents had been found LOST when the pass began. The next pass decides no change set
/// and finds both the same: the pipeline would skip every journaled step and tell every agent
/// its health checks again, so it is not run (a launch ends one pass sooner). An agent lost
/// meanwhile, even if back already, may have missed a departure hook or what the pipeline
/// tells without a journal (its health checks), so then it runs.
struct Covered {
    fleet: Fleet,
    losses: u64,
}

/// How many agents were found LOST since the control plane started (any deployment's).
#[derive(Clone, Default)]
pub(crate) struct Losses(Arc<AtomicU64>);

impl Losses {
    pub(crate) fn noted(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    fn count(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Failed passes (each after a backoff: 2 s, 4 s, 8 s…) before the deployment is FAILED.
pub const MAX_FAILED_PASSES: u32 = 4;
/// Longest wait between failed passes.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often a pass waiting for a lost server looks again.
const LOST_POLL: Duration = Duration::from_millis(250);

fn generation_key(journal: &str) -> String {
    format!("reconcile/{journal}/generation")
}

fn applied_key(journal: &str) -> String {
    format!("reconcile/{journal}/applied")
}

fn next_index_key(journal: &str, tier: &str) -> String {
    format!("reconcile/{journal}/next/{tier}")
}

/// A number kept in the store's `meta`, 0 when absent.
fn meta_number(store: &stratus_store::Store, key: &str) -> Result<u64, EngineError> {
    Ok(store.meta(key)?.and_then(|v| v.parse().ok()).unwrap_or(0))
}

impl Engine {
    /// Brings `spec` to every tier's target: SCALING while it works, RUNNING after, FAILED
    /// with the reason when it cannot get there.
    pub async fn reconcile(&self, spec: &DeploymentSpec) -> Result<(), EngineError> {
        let dep = spec.name.as_str();
        self.deployment_event(dep, DeploymentEvent::ScaleRequested)?;
        let result = self.reconcile_steps(spec, true).await;
        self.settle(dep, &result)?;
        result
    }

    /// Records that a scaling event (scale, apply, recovery) was asked for: SCALING from now,
    /// so whoever follows the deployment does not mistake the state before it for the end.
    pub fn scaling_requested(&self, dep: &str) -> Result<(), EngineError> {
        self.deployment_event(dep, DeploymentEvent::ScaleRequested)?;
        Ok(())
    }

    /// Records where a launch or reconcile ended: RUNNING, or FAILED with the reason.
    pub(crate) fn settle(
        &self,
        dep: &str,
        result: &Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        match result {
            Ok(()) => {
                self.deployment_event(dep, DeploymentEvent::ScaleDone)?;
                self.deployment_event(dep, DeploymentEvent::AllServicesRunning)?;
                self.log_deployment(dep, "deployment RUNNING");
            }
            Err(e) => {
                let reason = e.to_string();
                self.deployment_event(dep, DeploymentEvent::Failed(reason.clone()))?;
                let subject = Subject {
                    deployment: Some(dep),
                    ..Subject::default()
                };
                let message = format!("deployment FAILED: {reason}");
                self.parts
                    .logs
                    .error(Component::MonitorDeployment, subject, &message);
            }
        }
        Ok(())
    }

    /// Uploads the packages, then runs passes until one changes nothing. A failed pass runs
    /// again after a backoff when a server was lost during it, or always when `persistent`
    /// (scaling and recovery: a replacement that fails is tried again); a launch fails at once.
    pub(crate) async fn reconcile_steps(
        &self,
        spec: &DeploymentSpec,
        persistent: bool,
    ) -> Result<(), EngineError> {
        self.configure_providers(spec)?;
        let packages = self.upload_packages(spec).await?;
        let mut applied = Vec::new();
        let mut failures = 0u32;
        let mut covered = None;
        loop {
            match self
                .reconcile_pass(spec, &packages, &mut applied, &mut covered)
                .await
            {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    covered = None;
                    failures += 1;
                    let again = self.outwait_losses(spec).await? || persistent;
                    if failures >= MAX_FAILED_PASSES || !again {
                        return Err(e);
                    }
                    self.log_deployment(
                        spec.name.as_str(),
                        &format!("reconcile pass {failures} failed, trying again: {e}"),
                    );
                    let backoff = Duration::from_secs(1 << failures.min(5)).min(MAX_BACKOFF);
                    tokio::time::sleep(backoff).await;
                }
            }
        }
        self.report_replacements(spec, &applied);
        Ok(())
    }

    /// One pass: the pending change set applied (if any, and added to `applied` at once, so
    /// a replacement is reported even when a later loss fails this pass's pipeline), then
    /// every server through the pipeline, unless the last pass's pipeline `covered` this
    /// fleet already. Returns whether a change set was applied.
    async fn reconcile_pass(
        &self,
        spec: &DeploymentSpec,
        packages: &BTreeMap<String, PackageRef>,
        applied: &mut Vec<Changes>,
        covered: &mut Option<Covered>,
    ) -> Result<bool, EngineError> {
        let dep = spec.name.as_str();
        // Counted before the change set: a server lost while it is applied skips its
        // departure hooks (a database's revoke), which the next pass's pipeline catches up.
        let losses = self.losses.count();
        self.note_skipping(dep)?;
        let changes = self.pending_changes(spec, Goal::Targets).await?;
        let changed = changes.is_some();
        if let Some(c) = changes {
            self.apply_changes(spec, &c, None).await?;
            stratus_telemetry::change_set_applied();
            applied.push(c);
        }
        let fleet = self.fleet(dep)?;
        if !changed
            && covered
                .as_ref()
                .is_some_and(|c| c.fleet == fleet && c.losses == self.losses.count())
        {
            return Ok(false);
        }
        *covered = None;
        // A pipeline that skips a LOST server's hooks covers less than its fleet.
        let complete = self.lost_ids(dep)?.is_empty();
        self.pipeline(spec, &fleet, packages).await?;
        *covered = complete.then_some(Covered { fleet, losses });
        Ok(changed)
    }

    /// Steps 3–8 of the launch over `fleet`: CM, install, configure in dependency order,
    /// load balancers. Steps done before with the same inputs are skipped.
    async fn pipeline(
        &self,
        spec: &DeploymentSpec,
        fleet: &Fleet,
        packages: &BTreeMap<String, PackageRef>,
    ) -> Result<(), EngineError> {
        self.run_cm(spec, fleet, packages).await?;
        self.install_services(spec, fleet, packages).await?;
        for layer in stratus_model::plan::Plan::new(spec).layers {
            parallel::all(layer.iter().map(|name| async move {
                let svc = spec.service(name.as_ref()).ok_or_else(|| {
                    EngineError::Other(format!("plan names unknown service {name}"))
                })?;
                self.configure_service(spec, fleet, svc).await
            }))
            .await?;
        }
        self.start_proxies(spec, fleet).await
    }

    /// The change set to apply towards `goal`: one decided but not applied yet (a control
    /// plane stopped in between; going to nothing, only a terminate's), else a new one if some
    /// tier is off the goal, else `None`.
    pub(crate) async fn pending_changes(
        &self,
        spec: &DeploymentSpec,
        goal: Goal,
    ) -> Result<Option<Changes>, EngineError> {
        let dep = spec.name.as_str();
        let journal = self.journal_id(dep)?;
        let store = &self.parts.store;
        let generation = meta_number(store, &generation_key(&journal))?;
        if let Some(changes) = self.unapplied(&journal, generation)?
            && (goal == Goal::Targets || changes.to_nothing)
        {
            return Ok(Some(changes));
        }
        let tiers = self.tier_changes(spec, goal, &journal).await?;
        if tiers.is_empty() {
            return Ok(None);
        }
        let decided = Changes {
            generation: generation + 1,
            tiers,
            to_nothing: goal == Goal::Nothing,
        };
        let key = StepKey::Changes(decided.generation);
        let changes = self
            .step(dep, &key, &digest(&decided), async { Ok(decided.clone()) })
            .await?;
        for t in &changes.tiers {
            if let Some(last) = t.add.iter().map(|id| id.index).max() {
                let key = next_index_key(&journal, t.tier.as_str());
                store.set_meta(&key, &(u64::from(last) + 1).to_string())?;
            }
        }
        store.set_meta(&generation_key(&journal), &changes.generation.to_string())?;
        Ok(Some(changes))
    }

    /// Change set `generation` when it was decided and not applied.
    fn unapplied(&self, journal: &str, generation: u64) -> Result<Option<Changes>, EngineError> {
        let store = &self.parts.store;
        if generation <= meta_number(store, &applied_key(journal))? {
            return Ok(None);
        }
        let key = StepKey::Changes(generation).to_string();
        let Some(outcome) = store.step(journal, &key)?.and_then(|row| row.outcome) else {
            return Ok(None);
        };
        serde_json::from_value(outcome)
            .map(Some)
            .map_err(|e| EngineError::Other(format!("journaled change set: {e}")))
    }

    /// Every tier's change towards `goal`, from what is observed; servers of a tier the file
    /// no longer has all leave.
    async fn tier_changes(
        &self,
        spec: &DeploymentSpec,
        goal: Goal,
        journal: &str,
    ) -> Result<Vec<TierChange>, EngineError> {
        let wanted = self.wanted(spec, goal)?;
        let observed = self.observe(spec).await?;
        let mut tiers = Vec::new();
        for tier in spec.tiers.values() {
            let next = meta_number(
                &self.parts.store,
                &next_index_key(journal, tier.name.as_str()),
            )?;
            let next = u32::try_from(next.max(1)).unwrap_or(u32::MAX);
            let target = wanted.get(tier.name.as_str()).copied().unwrap_or(tier.min);
            let servers = observed
                .get(tier.name.as_str())
                .map_or(&[][..], Vec::as_slice);
            tiers.extend(tier_change(&tier.name, target, servers, next));
        }
        for (tier, servers) in &observed {
            let Ok(name) = stratus_model::Name::new(tier) else {
                continue;
            };
            if spec.tier(tier).is_none() {
                tiers.extend(tier_change(&name, 0, servers, 1));
            }
        }
        Ok(tiers)
    }

    /// Servers leave (dependents told first), then the new ones start and handshake; disks
    /// of servers going to nothing are kept under the label `keep` when given.
    pub(crate) async fn apply_changes(
        &self,
        spec: &DeploymentSpec,
        changes: &Changes,
        keep: Option<&str>,
    ) -> Result<Departed, EngineError> {
        let dep = spec.name.as_str();
        for t in &changes.tiers {
            let subject = Subject {
                deployment: Some(dep),
                tier: Some(t.tier.as_str()),
                ..Subject::default()
            };
            let message = format!("scaling event: {}", t.describe());
            self.parts
                .logs
                .info(Component::MonitorScalingEvent, subject, &message);
        }
        // Surplus servers leave before new ones come; a gone server is replaced before it is
        // ended, so its replacement gets a new address while the old one is still held.
        // Going to nothing, every server leaves at once, in one dependency order.
        let first = match changes.to_nothing {
            true => Leaving::All,
            false => Leaving::Surplus,
        };
        let mut departed = self.retire(spec, changes, first, keep).await?;
        let mut adds = Vec::new();
        for t in &changes.tiers {
            if let Some(tier) = spec.tier(t.tier.as_str()) {
                adds.extend(t.add.iter().map(|id| (tier, id.index)));
            }
        }
        parallel::all(
            adds.into_iter()
                .map(|(tier, n)| self.launch_server(spec, tier, n)),
        )
        .await?;
        if !changes.to_nothing {
            let gone = self.retire(spec, changes, Leaving::Gone, keep).await?;
            departed.problems.extend(gone.problems);
        }
        let journal = self.journal_id(dep)?;
        self.parts
            .store
            .set_meta(&applied_key(&journal), &changes.generation.to_string())?;
        Ok(departed)
    }

    /// After a failed pass: waits while a lost server is within its grace. `true` when the
    /// pass should run again (every lost server came back or is gone and will be replaced),
    /// `false` when nothing was lost (the failure stands); an error names a server lost in a
    /// tier whose recovery is off.
    async fn outwait_losses(&self, spec: &DeploymentSpec) -> Result<bool, EngineError> {
        if self.lost_servers(spec).await?.is_empty() {
            return Ok(false);
        }
        loop {
            let lost = self.lost_servers(spec).await?;
            if let Some(l) = lost.iter().find(|l| l.gone && !l.recovery) {
                return Err(EngineError::Other(format!(
                    "server {} lost at {}: its agent did not come back within {} s, and \
                     its tier has recovery off",
                    l.id,
                    clock(l.since_ms),
                    l.grace_ms / 1000
                )));
            }
            if lost.iter().all(|l| l.gone) {
                return Ok(true);
            }
            tokio::time::sleep(LOST_POLL).await;
        }
    }

    /// One event per replaced server: when it was lost, what replaced it, how long it took.
    fn report_replacements(&self, spec: &DeploymentSpec, applied: &[Changes]) {
        let dep = spec.name.as_str();
        for t in applied.iter().flat_map(|c| &c.tiers) {
            for (old, new) in t.gone.iter().zip(&t.add) {
                stratus_telemetry::server_replaced();
                let since = self
                    .parts
                    .store
                    .meta(&crate::recovery::lost_at_key(dep, &old.to_string()))
                    .ok()
                    .flatten()
                    .and_then(|v| v.parse::<i64>().ok());
                // A condemned server's agent closes only as it is ended: it was never lost.
                let condemned = self.journal_id(dep).ok().is_some_and(|j| {
                    crate::health::condemned(&self.parts.store, &j, &old.to_string())
                        .is_ok_and(|c| c.is_some())
                });
                let message = match since {
                    _ if condemned => format!("{old} replaced by {new} for its health, RUNNING"),
                    Some(ms) => format!(
                        "{old} lost at {}, replaced by {new}, RUNNING after {:.1} s",
                        clock(ms),
                        (now_ms() - ms) as f64 / 1000.0
                    ),
                    None => format!("{old} replaced by {new}, RUNNING"),
                };
                let subject = Subject {
                    deployment: Some(dep),
                    tier: Some(t.tier.as_str()),
                    ..Subject::default()
                };
                self.parts
                    .logs
                    .info(Component::MonitorScalingEvent, subject, &message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_set_journaled_before_terminate_was_one_reads_back_and_keeps_its_digest() {
        let old = serde_json::json!({ "generation": 3, "tiers": [] });
        let changes: Changes = serde_json::from_value(old.clone()).unwrap();
        assert!(!changes.to_nothing);
        assert_eq!(serde_json::to_value(&changes).unwrap(), old);
        let to_nothing = Changes {
            to_nothing: true,
            ..changes
        };
        let json = serde_json::to_value(&to_nothing).unwrap();
        assert_eq!(json["to_nothing"], true);
        assert_eq!(serde_json::from_value::<Changes>(json).unwrap(), to_nothing);
    }
}
