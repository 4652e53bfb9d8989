//! The providers' capacity, held against a launch or a scale-up before any server of it
//! starts: each tier's new servers count against the provider the tier names.

use crate::engine::{Engine, EngineError};
use std::collections::BTreeMap;
use std::sync::Arc;
use stratus_model::spec::DeploymentSpec;
use stratus_provider::{Capacity, CloudProvider, thousands};

/// A provider has no room for the servers a launch or scale-up needs; nothing was started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "deployment {deployment} needs {} servers, {} has room for {} \
     (max-servers {}, {} in use); nothing was {done}",
    thousands(*.needed), provider_phrase(.provider), thousands(.capacity.left()),
    thousands(.capacity.max), thousands(.capacity.used)
)]
pub struct NoRoom {
    pub deployment: String,
    /// The provider's name, as the tiers give it.
    pub provider: String,
    /// Servers the request would start on it.
    pub needed: u64,
    pub capacity: Capacity,
    /// What was refused, in the past tense: `launched`, `scaled`.
    pub done: &'static str,
}

/// `the local provider`, `provider `here``.
fn provider_phrase(name: &str) -> String {
    if name == stratus_provider::LOCAL {
        "the local provider".to_string()
    } else {
        format!("provider `{name}`")
    }
}

impl Engine {
    /// Refuses to launch `spec` when its tiers' `min` add up to more servers than their
    /// providers have room for (`max-servers` less the servers each holds); servers the
    /// deployment already has (a failed launch tried again) count as there.
    pub fn room_to_launch(&self, spec: &DeploymentSpec) -> Result<Result<(), NoRoom>, EngineError> {
        let fleet = self.fleet(spec.name.as_str())?;
        let extra = spec
            .tiers
            .values()
            .map(|t| {
                let have = fleet.get(t.name.as_str()).map_or(0, Vec::len) as u64;
                (t.name.to_string(), u64::from(t.min).saturating_sub(have))
            })
            .collect();
        self.check_capacity_for(spec, &extra, "launched")
    }

    /// Whether the providers of `spec`'s tiers have room for `extra` more servers per tier (a
    /// scale-up's new servers); tiers on one provider count together. The outer error is
    /// failing to ask a provider.
    pub fn check_capacity_for(
        &self,
        spec: &DeploymentSpec,
        extra: &BTreeMap<String, u64>,
        done: &'static str,
    ) -> Result<Result<(), NoRoom>, EngineError> {
        self.configure_providers(spec)?;
        let mut per_provider: Vec<(Arc<dyn CloudProvider>, String, u64)> = Vec::new();
        for (tier, n) in extra.iter().filter(|(_, n)| **n > 0) {
            let Some(t) = spec.tier(tier) else { continue };
            let provider = self.tier_provider(spec, t)?;
            match per_provider
                .iter_mut()
                .find(|(p, _, _)| stratus_provider::same(p, &provider))
            {
                Some((_, _, sum)) => *sum += n,
                None => per_provider.push((provider, t.launch.provider.to_string(), *n)),
            }
        }
        for (provider, name, needed) in per_provider {
            let capacity = provider.capacity().map_err(|e| EngineError::Provider {
                step: "capacity".into(),
                message: e.to_string(),
            })?;
            if needed > capacity.left() {
                return Ok(Err(NoRoom {
                    deployment: spec.name.to_string(),
                    provider: name,
                    needed,
                    capacity,
                    done,
                }));
            }
        }
        Ok(Ok(()))
    }
}
