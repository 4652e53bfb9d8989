//! The application layer: what an operator can ask of the control plane (launch, scale,
//! terminate, status, events), with typed errors. The line protocol calls it today and an HTTP
//! API can call it next; neither holds any of this logic.
//!
//! - `app/error.rs`: [`AppError`] and its [`ErrorKind`](stratus_protocol::ErrorKind).
//! - `app/lifecycle.rs`: launch, terminate and resume.
//! - `app/scale.rs`: changing a tier's target.
//! - `app/recovery.rs`: replacing lost servers.
//! - `app/health.rs`: recording health results, restarting unhealthy services.
//! - `app/apply.rs`: moving a running deployment to a new version of its file.
//! - `app/agent_log.rs`: a server's agent log, asked of its agent.

mod agent_log;
mod apply;
mod autoscale;
mod deployment_file;
mod error;
mod health;
mod lifecycle;
mod recovery;
mod scale;
mod settling;
mod world_readable;

pub use agent_log::AgentLog;
pub use autoscale::{SCALING_POLL, ScalerRules};
pub use deployment_file::{FileAccess, MAX_DEPLOYMENT_FILE_BYTES};
pub use error::AppError;

use crate::status::{self, StatusView};
use std::collections::HashMap;
use std::sync::Arc;
use stratus_engine::Engine;
use stratus_engine::logs::Logs;
use stratus_model::spec::DeploymentSpec;
use stratus_model::state::DeploymentState;
use stratus_store::{DeploymentRow, EventRow, Store};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// Most events one `events` call returns, so no answer grows without bound.
pub const MAX_EVENTS_PER_CALL: usize = 1000;

/// The control plane's work, shared by every connection; cheap to clone.
#[derive(Clone)]
pub struct App {
    engine: Engine,
    store: Store,
    logs: Logs,
    /// The task working on each deployment (launch, reconcile or terminate).
    tasks: Arc<Mutex<HashMap<String, JoinHandle<()>>>>,
    /// Held while a target is read, changed and stored, so two scale requests at once cannot
    /// both start from the same target and lose one change.
    targets: Arc<Mutex<()>>,
    /// The CPU and memory windows of every server (see `metrics.rs`).
    metrics: crate::metrics::Metrics,
    /// What the scaling-rule passes remember between them.
    settling: settling::Settling,
    /// Runs custom `scaler` components; `None` where the binary gave none.
    scalers: Option<Arc<dyn ScalerRules>>,
    /// The configuration file's providers, which deployments may name (`config.rs`).
    control_providers: Arc<crate::config::ControlProviders>,
}

impl App {
    pub fn new(engine: Engine, store: Store, logs: Logs) -> App {
        App {
            engine,
            store,
            logs,
            tasks: Arc::default(),
            targets: Arc::default(),
            metrics: crate::metrics::Metrics::default(),
            settling: settling::Settling::default(),
            scalers: None,
            control_providers: Arc::default(),
        }
    }

    /// The same, letting deployments name `providers` (the configuration file's).
    pub fn with_control_providers(mut self, providers: crate::config::ControlProviders) -> App {
        self.control_providers = Arc::new(providers);
        self
    }

    /// The same, running tiers' custom scaling rules with `scalers`.
    pub fn with_scalers(mut self, scalers: Arc<dyn ScalerRules>) -> App {
        self.scalers = Some(scalers);
        self
    }

    /// The configuration file's providers, which deployments may name without declaring.
    pub fn control_providers(&self) -> &crate::config::ControlProviders {
        &self.control_providers
    }

    /// Deployment `text` from `file` with the configuration's providers its tiers name.
    fn merge_control_providers(&self, text: &str, file: &str) -> Result<String, AppError> {
        (self.control_providers)
            .merged(text, std::path::Path::new(file))
            .map_err(AppError::InvalidFile)
    }

    /// The servers' metrics windows, which scaling rules read and the dispatcher feeds.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// Every deployment, or only `name` (which must exist).
    pub fn status(&self, name: Option<&str>) -> Result<StatusView, AppError> {
        if let Some(name) = name {
            self.row(name)?;
        }
        Ok(status::status(&self.store, name)?)
    }

    /// Up to `limit` (at most [`MAX_EVENTS_PER_CALL`]) events after `after_id`, oldest first,
    /// of deployment `name` (which must exist) or of all.
    pub fn events(
        &self,
        name: Option<&str>,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<EventRow>, AppError> {
        if let Some(name) = name {
            self.row(name)?;
        }
        let limit = limit.min(MAX_EVENTS_PER_CALL);
        Ok(self.store.events_since(after_id, name, limit)?)
    }

    /// Whether a task still works on some deployment.
    pub async fn busy(&self) -> bool {
        self.tasks.lock().await.values().any(|h| !h.is_finished())
    }

    /// The recorded deployment `name`.
    fn row(&self, name: &str) -> Result<DeploymentRow<DeploymentState>, AppError> {
        self.store
            .deployment::<DeploymentState>(name)?
            .ok_or_else(|| AppError::NotFound {
                deployment: name.to_string(),
            })
    }

    /// The deployment file `row` was launched with.
    fn spec_of(&self, row: &DeploymentRow<DeploymentState>) -> Result<DeploymentSpec, AppError> {
        let mut spec = DeploymentSpec::from_str(&row.spec_toml, &row.spec_path)
            .map_err(AppError::InvalidFile)?;
        stratus_engine::apply::with_kept_ids(&self.store, &mut spec)?;
        Ok(spec)
    }

    /// Whether a task works on `name` now.
    async fn working_on(&self, name: &str) -> bool {
        let tasks = self.tasks.lock().await;
        tasks.get(name).is_some_and(|h| !h.is_finished())
    }
}
