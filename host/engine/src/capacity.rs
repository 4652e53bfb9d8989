//! The provider's capacity, held against a launch or a scale-up before any server of it starts.

use crate::engine::{Engine, EngineError};
use stratus_model::spec::DeploymentSpec;
use stratus_provider::{Capacity, thousands};

/// The provider has no room for the servers a launch or scale-up needs; nothing was started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "deployment {deployment} needs {} servers, the local provider has room for {} \
     (max-servers {}, {} in use); nothing was {done}",
    thousands(*.needed), thousands(.capacity.left()), thousands(.capacity.max),
    thousands(.capacity.used)
)]
pub struct NoRoom {
    pub deployment: String,
    /// Servers the request would start.
    pub needed: u64,
    pub capacity: Capacity,
    /// What was refused, in the past tense: `launched`, `scaled`.
    pub done: &'static str,
}

impl Engine {
    /// Refuses to launch `spec` when its tiers' `min` add up to more servers than the provider
    /// has room for (its `max-servers` less the servers it holds); servers the deployment
    /// already has (a failed launch tried again) count as there.
    pub fn check_capacity(&self, spec: &DeploymentSpec) -> Result<(), EngineError> {
        let dep = spec.name.as_str();
        let wanted: u64 = spec.tiers.values().map(|t| u64::from(t.min)).sum();
        let have = self.fleet(dep)?.values().map(Vec::len).sum::<usize>() as u64;
        match self.check_capacity_for(dep, wanted.saturating_sub(have), "launched")? {
            Ok(()) => Ok(()),
            Err(no_room) => Err(EngineError::Other(no_room.to_string())),
        }
    }

    /// Whether the provider has room for `extra` more servers of `dep` (a scale-up's new
    /// servers); the outer error is failing to ask the provider.
    pub fn check_capacity_for(
        &self,
        dep: &str,
        extra: u64,
        done: &'static str,
    ) -> Result<Result<(), NoRoom>, EngineError> {
        let capacity = self
            .parts
            .provider
            .capacity()
            .map_err(|e| EngineError::Provider {
                step: "capacity".into(),
                message: e.to_string(),
            })?;
        if extra <= capacity.left() {
            return Ok(Ok(()));
        }
        Ok(Err(NoRoom {
            deployment: dep.to_string(),
            needed: extra,
            capacity,
            done,
        }))
    }
}
