//! The reconciler: brings a deployment's servers to every tier's target (see `targets.rs`).

use crate::engine::{Engine, EngineError};
use stratus_model::spec::DeploymentSpec;

impl Engine {
    /// Works until every tier of `spec` has its target count of running servers.
    pub async fn reconcile(&self, spec: &DeploymentSpec) -> Result<(), EngineError> {
        self.launch(spec).await
    }
}
