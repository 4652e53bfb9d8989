//! `stratus apply`: a running deployment moves to a new version of its file. What the new
//! file no longer has is stopped first (grants of removed dependents revoked, their
//! services stopped last layer first), new bounds become the tiers' targets, and the
//! reconciler does the rest: steps whose inputs changed run again (a changed setting
//! re-runs `configure`, `stop` and `start` of exactly that service, and of its dependents
//! when the facts they see changed), added services and tiers go through the pipeline, and
//! servers of removed tiers end.

use crate::engine::{Engine, EngineError};
use crate::parallel;
use crate::targets::TierTarget;
use std::collections::{BTreeMap, BTreeSet};
use stratus_cloud::{CloudFiles, PackageRef};
use stratus_model::context::HookCall;
use stratus_model::spec::{DeploymentSpec, ServiceSpec};
use stratus_model::spec_diff::Change;
use stratus_model::state::{DeploymentEvent, ServiceEvent};
use stratus_model::step_key::{Phase, StepKey};

fn service_ids_key(journal: &str) -> String {
    format!("service-ids/{journal}")
}

/// Gives `spec` the service ids its deployment runs with (kept across applies, so that a
/// service added to the file cannot move another's directory); the file's own otherwise.
pub fn with_kept_ids(
    store: &stratus_store::Store,
    spec: &mut DeploymentSpec,
) -> Result<(), stratus_store::StoreError> {
    let journal = crate::steps::journal_of(store, spec.name.as_str())?;
    let kept: Option<BTreeMap<stratus_model::Name, stratus_model::ServiceId>> = store
        .meta(&service_ids_key(&journal))?
        .and_then(|t| serde_json::from_str(&t).ok());
    if let Some(ids) = kept {
        stratus_model::spec_diff::with_ids(spec, &ids);
    }
    Ok(())
}

fn applies_key(journal: &str) -> String {
    format!("apply/{journal}/count")
}

impl Engine {
    /// Services of `new` whose package contents differ from what this launch uploaded.
    pub async fn changed_packages(&self, new: &DeploymentSpec) -> Result<Vec<Change>, EngineError> {
        let journal = self.journal_id(new.name.as_str())?;
        let uploaded: BTreeMap<String, PackageRef> = match self
            .parts
            .store
            .step(&journal, &StepKey::Upload.to_string())?
            .and_then(|row| row.outcome)
        {
            Some(outcome) => serde_json::from_value(outcome)
                .map_err(|e| EngineError::Other(format!("journaled upload: {e}")))?,
            None => return Ok(Vec::new()),
        };
        let mut changed = Vec::new();
        for svc in new.services.values() {
            let Some(before) = uploaded.get(&format!("service-{}", svc.name)) else {
                continue;
            };
            let now = CloudFiles::content_digest(&svc.package.path.resolved, true)
                .await
                .map_err(|e| EngineError::Other(format!("package of service {}: {e}", svc.name)))?;
            if now != before.digest {
                changed.push(Change::PackageChanged {
                    service: svc.name.clone(),
                    what: "package",
                });
            }
        }
        Ok(changed)
    }

    /// The part of an apply that needs the running file `old`: removed services stopped,
    /// and `changes`' new bounds stored as targets. The caller then records `new` as the
    /// deployment's file and calls [`Engine::reconcile`] with it.
    pub async fn prepare_apply(
        &self,
        old: &DeploymentSpec,
        new: &DeploymentSpec,
        changes: &[Change],
    ) -> Result<(), EngineError> {
        let dep = old.name.as_str();
        self.deployment_event(dep, DeploymentEvent::ScaleRequested)?;
        for c in changes {
            self.log_deployment(dep, &format!("apply: {c}"));
        }
        let removed: Vec<&ServiceSpec> = old
            .services
            .values()
            .filter(|s| !new.services.contains_key(&s.name))
            .collect();
        if !removed.is_empty() {
            let journal = self.journal_id(dep)?;
            let key = applies_key(&journal);
            let n = self
                .parts
                .store
                .meta(&key)?
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            self.retire_services(old, &removed, n).await?;
            self.parts.store.set_meta(&key, &n.to_string())?;
        }
        self.store_new_bounds(old, new, changes)
    }

    /// Records `spec`'s service ids as the ones its deployment runs with.
    pub fn keep_service_ids(&self, spec: &DeploymentSpec) -> Result<(), EngineError> {
        let journal = self.journal_id(spec.name.as_str())?;
        let ids = stratus_model::spec_diff::ids_of(spec);
        let json = serde_json::to_string(&ids)
            .map_err(|e| EngineError::Other(format!("service ids: {e}")))?;
        self.parts
            .store
            .set_meta(&service_ids_key(&journal), &json)?;
        Ok(())
    }

    /// A tier whose target was set by `stratus scale` keeps its count, moved into the new
    /// bounds; one that never was follows the file (its `min`).
    fn store_new_bounds(
        &self,
        old: &DeploymentSpec,
        new: &DeploymentSpec,
        changes: &[Change],
    ) -> Result<(), EngineError> {
        let current = self.targets(old)?;
        for c in changes {
            let Change::Bounds { tier, to, .. } = c else {
                continue;
            };
            let Some(was) = current.get(tier.as_str()) else {
                continue;
            };
            let from_file = old.tier(tier.as_str()).map(TierTarget::of_spec) == Some(*was);
            if from_file {
                continue;
            }
            let target = was.changed(tier.as_str(), None, Some(to.0), Some(to.1))?;
            self.set_target(new, tier.as_str(), target)?;
        }
        Ok(())
    }

    /// Revokes what `removed` services were granted, then stops them on every server of
    /// their tier, last layer first, and forgets their instances.
    async fn retire_services(
        &self,
        old: &DeploymentSpec,
        removed: &[&ServiceSpec],
        n: u64,
    ) -> Result<(), EngineError> {
        let dep = old.name.as_str();
        let fleet = &self.fleet(dep)?;
        let names: BTreeSet<&str> = removed.iter().map(|s| s.name.as_str()).collect();
        let databases = old
            .services
            .values()
            .filter(|s| s.data_source.is_some() && !names.contains(s.name.as_str()));
        for db in databases {
            let revoked = |service: &str, _: &str| names.contains(service);
            self.revoke_access(old, fleet, db, &BTreeSet::new(), revoked)
                .await?;
        }
        let mut layers = stratus_model::plan::Plan::new(old).layers;
        layers.reverse();
        for layer in layers {
            let services = layer
                .iter()
                .filter(|name| names.contains(name.as_str()))
                .filter_map(|name| old.service(name.as_str()));
            for svc in services {
                let servers = fleet.get(svc.tier.as_str()).cloned().unwrap_or_default();
                parallel::all(servers.iter().map(|server| async move {
                    let ctx = self.service_context(old, fleet, svc, server)?;
                    let key =
                        StepKey::service(&svc.name, &server.id, "stop").in_phase(Phase::Apply(n));
                    self.service_hook(old, svc, server, &key, HookCall::Stop { ctx })
                        .await?;
                    self.service_event(dep, svc, &server.id, ServiceEvent::Stopped)?;
                    let store = &self.parts.store;
                    store.delete_service_instance(
                        dep,
                        svc.name.as_str(),
                        &server.id.to_string(),
                    )?;
                    Ok::<_, EngineError>(())
                }))
                .await?;
            }
        }
        Ok(())
    }
}
