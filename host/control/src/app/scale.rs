//! `scale`: a new target for one tier (count and/or bounds), checked, stored, and reconciled to.

use super::{App, AppError};
use stratus_engine::logs::{Component, Subject};
use stratus_engine::targets::{TargetError, TierTarget};
use stratus_model::spec::DeploymentSpec;

/// States whose deployment can take a new target: the reconciler is (or may be) at work on it.
/// By name, so states the engine adds that are alike (`DEGRADED`) need no change here.
const SCALABLE_STATES: [&str; 3] = ["RUNNING", "SCALING", "DEGRADED"];

impl App {
    /// Gives tier `tier` of deployment `name` a new target: `count` servers and/or new bounds
    /// `min..max` (a count left out is the current one moved into the bounds). Returns the old
    /// and the new target once a task reconciles to it. Nothing changes when it is refused.
    pub async fn scale(
        &self,
        name: &str,
        tier: &str,
        count: Option<u32>,
        min: Option<u32>,
        max: Option<u32>,
    ) -> Result<(TierTarget, TierTarget), AppError> {
        let _changing = self.targets.lock().await;
        self.scale_locked(name, tier, None, count, min, max).await
    }

    /// A scaling rule's decision: tier `tier` goes to `count` servers only if its target is
    /// still `expected` (the one the votes were cast on); `announce` (the decision with its
    /// vote) is written first. Returns whether it was taken.
    pub(super) async fn scale_from(
        &self,
        name: &str,
        tier: &str,
        expected: TierTarget,
        count: u32,
        announce: &str,
    ) -> Result<bool, AppError> {
        let _changing = self.targets.lock().await;
        let announce = Some((expected, announce));
        let scaled = self
            .scale_locked(name, tier, announce, Some(count), None, None)
            .await;
        match scaled {
            Ok(_) => Ok(true),
            Err(AppError::Stale) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// [`App::scale`] with the targets lock held; with `announce`, refused as stale unless the
    /// tier's target is the one given, and the message written before the request.
    async fn scale_locked(
        &self,
        name: &str,
        tier: &str,
        announce: Option<(TierTarget, &str)>,
        count: Option<u32>,
        min: Option<u32>,
        max: Option<u32>,
    ) -> Result<(TierTarget, TierTarget), AppError> {
        let row = self.row(name)?;
        let state = row.state.name();
        if !SCALABLE_STATES.contains(&state) {
            return Err(AppError::Conflict {
                deployment: name.to_string(),
                state: state.to_string(),
                wanted: "only a RUNNING deployment can be scaled".into(),
            });
        }
        let spec = self.spec_of(&row)?;
        let old = *self
            .engine
            .targets(&spec)?
            .get(tier)
            .ok_or_else(|| unknown_tier(name, tier))?;
        if announce.is_some_and(|(expected, _)| expected != old) {
            return Err(AppError::Stale);
        }
        let new = old
            .changed(tier, count, min, max)
            .map_err(AppError::Target)?;
        self.check_scale_capacity(&spec, tier, new)?;
        let subject = Subject {
            deployment: Some(name),
            tier: Some(tier),
            ..Subject::default()
        };
        if let Some((_, message)) = announce {
            self.logs
                .info(Component::MonitorScalingEvent, subject.clone(), message);
        }
        self.engine.set_target(&spec, tier, new)?;
        let message = format!(
            "scale requested: tier {tier} target {} of {}..{} -> {} of {}..{}",
            old.count, old.min, old.max, new.count, new.min, new.max
        );
        self.logs
            .info(Component::MonitorScalingEvent, subject, &message);
        self.spawn_reconcile(spec).await;
        Ok((old, new))
    }

    /// Refuses a target whose new servers the provider has no room for.
    fn check_scale_capacity(
        &self,
        spec: &DeploymentSpec,
        tier: &str,
        new: TierTarget,
    ) -> Result<(), AppError> {
        let have = self
            .engine
            .fleet(spec.name.as_str())?
            .get(tier)
            .map_or(0, Vec::len) as u64;
        let extra = u64::from(new.count).saturating_sub(have);
        let extra = std::collections::BTreeMap::from([(tier.to_string(), extra)]);
        self.engine
            .check_capacity_for(spec, &extra, "scaled")?
            .map_err(AppError::Capacity)
    }

    /// Runs the reconciler for `spec` as its deployment's task, after the task working on it
    /// now (an earlier reconcile) ends, so two never work on one deployment at once.
    pub(super) async fn spawn_reconcile(&self, spec: DeploymentSpec) {
        let engine = self.engine.clone();
        let name = spec.name.to_string();
        let mut tasks = self.tasks.lock().await;
        let previous = tasks.remove(&name);
        let handle = tokio::spawn(async move {
            if let Some(p) = previous {
                let _ = p.await;
            }
            let _ = engine.reconcile(&spec).await;
        });
        tasks.insert(name, handle);
    }
}

fn unknown_tier(deployment: &str, tier: &str) -> AppError {
    AppError::Target(TargetError::UnknownTier {
        deployment: deployment.to_string(),
        tier: tier.to_string(),
    })
}
