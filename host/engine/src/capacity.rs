//! The provider's capacity, held against a launch before any server of it starts.

use crate::engine::{Engine, EngineError};
use stratus_model::spec::DeploymentSpec;
use stratus_provider::thousands;

impl Engine {
    /// Refuses to launch `spec` when its tiers' `min` add up to more servers than the provider
    /// has room for (its `max-servers` less the servers it holds); servers the deployment
    /// already has (a failed launch tried again) count as there.
    pub fn check_capacity(&self, spec: &DeploymentSpec) -> Result<(), EngineError> {
        let dep = spec.name.as_str();
        let wanted: u64 = spec.tiers.values().map(|t| u64::from(t.min)).sum();
        let have = self.fleet(dep)?.values().map(Vec::len).sum::<usize>() as u64;
        let needed = wanted.saturating_sub(have);
        let cap = self
            .parts
            .provider
            .capacity()
            .map_err(|e| EngineError::Provider {
                step: "capacity".into(),
                message: e.to_string(),
            })?;
        if needed <= cap.left() {
            return Ok(());
        }
        Err(EngineError::Other(format!(
            "deployment {dep} needs {} servers, the local provider has room for {} \
             (max-servers {}, {} in use); nothing was launched",
            thousands(needed),
            thousands(cap.left()),
            thousands(cap.max),
            thousands(cap.used),
        )))
    }
}
