//! `stratus apply FILE`: moves a running deployment to a new version of its file. The
//! changes are shown first (and only shown with `--dry-run`); changes a running deployment
//! cannot take (a new package: rolling updates do not exist yet; a service moved between
//! tiers; a tier's launch configuration) are refused, naming the change, before anything
//! happens. Then the engine stops what the file no longer has and reconciles to the rest.

use super::deployment_file::{FileAccess, read_deployment_file};
use super::lifecycle::validate_for_launch;
use super::{App, AppError};
use stratus_model::spec::DeploymentSpec;
use stratus_model::spec_diff::{self, Change};
use stratus_model::state::DeploymentState;

/// What an apply changes, one line per change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyPlan {
    pub deployment: String,
    pub changes: Vec<String>,
}

impl App {
    /// Applies the deployment file at `file` (an absolute path) to its running deployment.
    pub async fn apply(&self, file: &str, dry_run: bool) -> Result<ApplyPlan, AppError> {
        let text = read_deployment_file(file, FileAccess::Operator).await?;
        let text = self.merge_control_providers(&text, file)?;
        let (mut new, warnings) = validate_for_launch(&text, file).await?;
        let name = new.name.to_string();
        let row = self.row(&name)?;
        let settled = matches!(
            row.state,
            DeploymentState::Running | DeploymentState::Degraded { .. }
        );
        if !settled || self.working_on(&name).await {
            return Err(AppError::Conflict {
                deployment: name,
                state: row.state.name().to_string(),
                wanted: "apply the file once it is RUNNING".into(),
            });
        }
        let old = self.spec_of(&row)?;
        spec_diff::carry_ids(&old, &mut new);
        let mut changes = spec_diff::diff(&old, &new);
        changes.extend(self.engine.changed_packages(&new).await?);
        if let Some(reason) = changes.iter().find_map(Change::refusal) {
            return Err(AppError::CannotApply {
                deployment: name,
                reason,
            });
        }
        self.check_apply_capacity(&old, &new)?;
        let plan = ApplyPlan {
            deployment: name.clone(),
            changes: changes.iter().map(ToString::to_string).collect(),
        };
        if dry_run || changes.is_empty() {
            return Ok(plan);
        }
        self.record_warnings(&name, &warnings);
        self.engine.scaling_requested(&name)?;
        self.spawn_apply(old, new, changes, file.to_string(), text)
            .await;
        Ok(plan)
    }

    /// Servers the new file's tiers need beyond the ones running now.
    fn check_apply_capacity(
        &self,
        old: &DeploymentSpec,
        new: &DeploymentSpec,
    ) -> Result<(), AppError> {
        let dep = old.name.as_str();
        let fleet = self.engine.fleet(dep)?;
        let targets = self.engine.targets(old)?;
        let mut extra = std::collections::BTreeMap::new();
        for tier in new.tiers.values() {
            let have = fleet.get(tier.name.as_str()).map_or(0, Vec::len) as u64;
            let count = targets
                .get(tier.name.as_str())
                .map_or(tier.min, |t| t.count)
                .clamp(tier.min, tier.max);
            extra.insert(tier.name.to_string(), u64::from(count).saturating_sub(have));
        }
        self.engine
            .check_capacity_for(new, &extra, "applied")?
            .map_err(AppError::Capacity)
    }

    /// Runs the apply as the deployment's task: the engine's preparation with the running
    /// file, then the new file recorded (with the service ids it runs with) and reconciled.
    async fn spawn_apply(
        &self,
        old: DeploymentSpec,
        new: DeploymentSpec,
        changes: Vec<Change>,
        file: String,
        text: String,
    ) {
        let (engine, store) = (self.engine.clone(), self.store.clone());
        let name = new.name.to_string();
        let key = name.clone();
        let mut tasks = self.tasks.lock().await;
        let handle = tokio::spawn(async move {
            let work = async {
                engine.prepare_apply(&old, &new, &changes).await?;
                store.put_deployment(&name, &file, &text, &DeploymentState::Scaling)?;
                engine.keep_service_ids(&new)?;
                engine.reconcile(&new).await
            };
            if let Err(e) = work.await {
                tracing::warn!(deployment = %name, error = %e, "apply failed");
            }
        });
        tasks.insert(key, handle);
    }
}
