//! Terminate: a reconcile to nothing. Its change set (every server of every tier leaves,
//! whatever the tiers' `min`) is decided and journaled like any other, and applied by the same
//! departure as a scale-down (`retire.rs`): load balancers drop their nodes, databases revoke
//! the departing addresses, services stop in reverse dependency order, agents shut down and
//! servers and disks end. Every server ends even when a hook fails; the failures are reported
//! together. A terminate cut short resumes with the same change set and journal.

use crate::engine::{Engine, EngineError};
use crate::facts::Fleet;
use crate::logs::{Component, Subject};
use crate::reconcile::Changes;
use crate::retire::Departed;
use crate::targets::Goal;
use std::path::PathBuf;
use stratus_model::spec::DeploymentSpec;
use stratus_model::state::{AgentState, DeploymentEvent};
use stratus_model::step_key::StepKey;

/// Problems the closing warning lists (each was logged on its own already), so that a
/// terminate of thousands of failing servers does not write one enormous event.
const MAX_PROBLEMS_LISTED: usize = 10;

/// The journal's record of whether a deployment's terminate keeps its servers' disks, so that
/// a terminate resumed after a restart does what the operator asked.
fn keep_disks_key(dep: &str) -> String {
    format!("terminate/{dep}/keep-disks")
}

/// Where the disks of a deployment's last terminate were kept (read by `stratus terminate`).
pub fn kept_disks_key(dep: &str) -> String {
    format!("terminate/{dep}/kept-disks")
}

/// Why servers of a deployment's last terminate kept their disks, one line each (read by
/// `stratus terminate`); empty when every disk was ended.
pub fn disks_left_key(dep: &str) -> String {
    format!("terminate/{dep}/disks-left")
}

impl Engine {
    /// Terminates the deployment `spec` describes, removing its servers' disks unless
    /// `keep_disks`; returns the failures it met on the way.
    pub async fn terminate(
        &self,
        spec: &DeploymentSpec,
        keep_disks: bool,
    ) -> Result<Vec<String>, EngineError> {
        let key = keep_disks_key(spec.name.as_str());
        self.parts
            .store
            .set_meta(&key, if keep_disks { "true" } else { "false" })?;
        // Nothing kept or left yet by this terminate: an earlier one's answer must not show.
        for key in [kept_disks_key, disks_left_key] {
            self.parts.store.set_meta(&key(spec.name.as_str()), "")?;
        }
        self.terminate_as_recorded(spec).await
    }

    /// Resumes a terminate with the disk choice it was started with.
    pub async fn resume_terminate(
        &self,
        spec: &DeploymentSpec,
    ) -> Result<Vec<String>, EngineError> {
        self.terminate_as_recorded(spec).await
    }

    /// Reconciles to nothing, then records what was met and starts a new journal, so that a
    /// relaunch does every step again.
    async fn terminate_as_recorded(
        &self,
        spec: &DeploymentSpec,
    ) -> Result<Vec<String>, EngineError> {
        let dep = spec.name.as_str();
        let keep = self.kept_label(dep)?;
        self.configure_providers(spec)?;
        self.deployment_event(dep, DeploymentEvent::TerminateRequested)?;
        self.log_deployment(dep, "terminate requested: deployment STOPPING");
        let changes = self.pending_changes(spec, Goal::Nothing).await?;
        let ending = self.ending_ids(dep)?;
        let departed = match &changes {
            Some(c) => self.depart(spec, c, keep.as_deref()).await?,
            None => Departed::default(),
        };
        self.sweep_unrecorded(spec, changes.as_ref(), &ending)
            .await?;
        let problems = self.record_departure(dep, departed)?;
        // The new journal first: a TERMINATED deployment relaunched on the old one would skip
        // every step; a control plane stopped in between terminates again, finding nothing.
        self.new_journal(dep)?;
        self.deployment_event(dep, DeploymentEvent::AllStopped)?;
        self.log_deployment(dep, "deployment TERMINATED");
        Ok(problems)
    }

    /// Applies the change set to nothing, its disks kept under `keep` when given.
    async fn depart(
        &self,
        spec: &DeploymentSpec,
        changes: &Changes,
        keep: Option<&str>,
    ) -> Result<Departed, EngineError> {
        let mut departed = self.apply_changes(spec, changes, keep).await?;
        if keep.is_some() && departed.kept.is_none() {
            departed.kept = self.kept_before(spec.name.as_str(), changes)?;
        }
        Ok(departed)
    }

    /// The label kept disks go under (the launch they belong to, stable across a resume), or
    /// `None` when this terminate removes them.
    fn kept_label(&self, dep: &str) -> Result<Option<String>, EngineError> {
        let store = &self.parts.store;
        if store.meta(&keep_disks_key(dep))?.as_deref() != Some("true") {
            return Ok(None);
        }
        let epoch = store.meta(&format!("epoch/{dep}"))?;
        Ok(Some(epoch.unwrap_or_else(|| "1".to_string())))
    }

    /// Where the disks `changes` kept are, from the journaled ends of its servers: those that
    /// ended before a control plane restart are not ended again.
    fn kept_before(&self, dep: &str, changes: &Changes) -> Result<Option<PathBuf>, EngineError> {
        let journal = self.journal_id(dep)?;
        for id in changes.tiers.iter().flat_map(|t| &t.remove) {
            let key = StepKey::End(id.clone()).to_string();
            let outcome = self
                .parts
                .store
                .step(&journal, &key)?
                .and_then(|r| r.outcome);
            if let Some(Some(path)) =
                outcome.and_then(|o| serde_json::from_value::<Option<PathBuf>>(o).ok())
            {
                return Ok(path.parent().map(PathBuf::from));
            }
        }
        Ok(None)
    }

    /// The ids of `dep`'s servers being ended (an earlier end could not finish).
    pub(crate) fn ending_ids(&self, dep: &str) -> Result<Vec<String>, EngineError> {
        let rows = self.parts.store.servers::<AgentState>(dep)?;
        Ok(rows
            .into_iter()
            .filter(|r| r.agent_state == AgentState::Ending)
            .map(|r| r.id)
            .collect())
    }

    /// Ends the servers a launch that terminate stopped may have started without recording
    /// them; the servers `changes` ended (or left, with their disk) and those that were being
    /// ended (`ending`, ended by the same departure) are not touched.
    async fn sweep_unrecorded(
        &self,
        spec: &DeploymentSpec,
        changes: Option<&Changes>,
        ending: &[String],
    ) -> Result<(), EngineError> {
        let dep = spec.name.as_str();
        let providers = self.providers_of(spec)?;
        let leaving: Vec<String> = changes
            .into_iter()
            .flat_map(|c| &c.tiers)
            .flat_map(|t| &t.remove)
            .map(ToString::to_string)
            .chain(ending.iter().cloned())
            .collect();
        let rows = self.parts.store.servers::<AgentState>(dep)?;
        let known: Vec<String> = rows
            .into_iter()
            .filter(|r| r.handle.is_some() && leaving.contains(&r.id))
            .map(|r| r.id)
            .collect();
        for provider in providers {
            for id in provider.end_unrecorded(dep, &known).await {
                self.log_deployment(
                    dep,
                    &format!("ended server {id}, which was starting when terminate began"),
                );
            }
        }
        Ok(())
    }

    /// Records for `stratus terminate` which disks were left and where kept ones are; returns
    /// every failure met, also reported together as one warning.
    fn record_departure(&self, dep: &str, departed: Departed) -> Result<Vec<String>, EngineError> {
        let store = &self.parts.store;
        if !departed.disks_left.is_empty() {
            store.set_meta(&disks_left_key(dep), &departed.disks_left.join("\n"))?;
        }
        if let Some(dir) = &departed.kept {
            let dir = dir.display().to_string();
            store.set_meta(&kept_disks_key(dep), &dir)?;
            self.log_deployment(dep, &format!("server disks kept under {dir}"));
        }
        let mut problems = departed.problems;
        problems.extend(departed.disks_left);
        if !problems.is_empty() {
            let subject = Subject {
                deployment: Some(dep),
                ..Subject::default()
            };
            let listed = &problems[..problems.len().min(MAX_PROBLEMS_LISTED)];
            let mut message = format!(
                "terminate ended every server but met {} problem(s): {}",
                problems.len(),
                listed.join("; ")
            );
            if problems.len() > listed.len() {
                message.push_str(&format!("; and {} more", problems.len() - listed.len()));
            }
            let logs = &self.parts.logs;
            logs.warn(Component::MonitorDeployment, subject, &message);
        }
        Ok(problems)
    }

    /// The live servers of a deployment, by tier (not those being ended: they left).
    pub fn fleet(&self, dep: &str) -> Result<Fleet, EngineError> {
        let mut fleet = Fleet::new();
        for row in self.parts.store.servers::<AgentState>(dep)? {
            if matches!(row.agent_state, AgentState::Terminated | AgentState::Ending) {
                continue;
            }
            let Some(server) = self.server_of(&row)? else {
                continue;
            };
            fleet.entry(row.tier.clone()).or_default().push(server);
        }
        for servers in fleet.values_mut() {
            servers.sort_by_key(|s| s.id.index);
        }
        Ok(fleet)
    }
}
