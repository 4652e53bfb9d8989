//! `disk-mb` while a service's processes run. The check after every hook cannot see what a
//! process spawned by a hook writes later, so every [`DISK_WATCH_INTERVAL`] the agent walks
//! the writable directories of each service that has supervised processes (the same walk,
//! with the same entry bound, as after a hook). A service over its limit has all its
//! processes killed (their cgroup leaves), and it is CRITICAL, with the reason, until a later
//! hook finds it within its limit again. What a process writes in one interval before it is
//! killed is the overshoot; its own log under `agent/processes` is bounded by rotation.

use crate::hooks::Hooks;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stratus_cloud::Beneath;
use stratus_model::context::HealthStatus;
use stratus_protocol::HealthResult;

/// How often the disk use of services with supervised processes is checked.
pub const DISK_WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Most entries counted in a plugin's directories in one walk; more fails the walk, so that a
/// plugin cannot make the check itself slow.
pub(crate) const MAX_DISK_ENTRIES: u64 = 1_000_000;

/// What a service may use, as its last hook call was granted.
#[derive(Debug, Clone)]
struct Budget {
    /// The supervisor's owner of the service's processes.
    owner: String,
    /// Its writable directories, relative to the server root.
    rels: Vec<PathBuf>,
    limit_mb: u64,
}

/// The services whose disk use is watched, keyed by service name, and the ones found over.
#[derive(Default)]
pub(crate) struct DiskWatch {
    budgets: Mutex<HashMap<String, Budget>>,
    over: Mutex<HashMap<String, String>>,
}

impl DiskWatch {
    /// Remembers `service`'s budget after one of its hooks ran.
    pub(crate) fn note(&self, service: &str, owner: String, rels: Vec<PathBuf>, limit_mb: u64) {
        let budget = Budget {
            owner,
            rels,
            limit_mb,
        };
        let mut budgets = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        budgets.insert(service.to_owned(), budget);
    }

    /// A hook found `service` within its limit: it is no longer held CRITICAL.
    pub(crate) fn within(&self, service: &str) {
        let mut over = self.over.lock().unwrap_or_else(|e| e.into_inner());
        over.remove(service);
    }

    /// Why `service` is held CRITICAL, if it is.
    pub(crate) fn over(&self, service: &str) -> Option<String> {
        let over = self.over.lock().unwrap_or_else(|e| e.into_inner());
        over.get(service).cloned()
    }

    /// `service` is no longer on this server.
    pub(crate) fn forget(&self, service: &str) {
        self.budgets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(service);
        self.within(service);
    }

    fn budgets(&self) -> Vec<(String, Budget)> {
        let budgets = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        budgets
            .iter()
            .map(|(s, b)| (s.clone(), b.clone()))
            .collect()
    }
}

/// Bytes used beneath `rels` of `root` (blocking: a directory walk).
pub(crate) fn usage(root: &Beneath, rels: &[PathBuf]) -> Result<u64, String> {
    let mut bytes = 0u64;
    for rel in rels {
        let dir = root.open_dir(rel).map_err(|e| e.to_string())?;
        bytes += dir
            .usage(MAX_DISK_ENTRIES)
            .map_err(|e| e.to_string())?
            .bytes;
    }
    Ok(bytes)
}

/// Checks every service with supervised processes each interval, forever.
pub(crate) async fn watch_disks(hooks: Arc<Hooks>) {
    loop {
        tokio::time::sleep(DISK_WATCH_INTERVAL).await;
        for (service, budget) in hooks.disk.budgets() {
            if hooks.supervisor.live_names(&budget.owner).is_empty() {
                continue;
            }
            if let Some(reason) = over_budget(&hooks, &budget).await {
                stop_service(&hooks, &service, &budget, reason).await;
            }
        }
    }
}

/// Why `budget` is exceeded, if it is; a walk that fails (too many entries) counts as over.
async fn over_budget(hooks: &Hooks, budget: &Budget) -> Option<String> {
    let root = match hooks.root() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "disk watch: cannot open the server root");
            return None;
        }
    };
    let rels = budget.rels.clone();
    let used = tokio::task::spawn_blocking(move || usage(&root, &rels))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    match used {
        Ok(bytes) if bytes <= budget.limit_mb << 20 => None,
        Ok(bytes) => Some(format!(
            "its writable directories use {} MiB, over its disk-mb limit of {} MiB",
            bytes.div_ceil(1 << 20),
            budget.limit_mb
        )),
        Err(e) => Some(format!("its disk use cannot be counted: {e}")),
    }
}

/// Kills every process of the service, holds it CRITICAL and reports that at once.
async fn stop_service(hooks: &Hooks, service: &str, budget: &Budget, reason: String) {
    let names = hooks.supervisor.live_names(&budget.owner);
    for name in &names {
        // No grace: a process over its disk budget is not asked to write its state out.
        if let Err(e) = hooks
            .supervisor
            .stop(&budget.owner, name, Duration::ZERO)
            .await
        {
            tracing::warn!(%service, name, error = %e, "disk watch: stopping a process failed");
        }
    }
    let message = format!(
        "{reason} (checked every {} s while its processes run); its processes were stopped: {}",
        DISK_WATCH_INTERVAL.as_secs(),
        names.join(", ")
    );
    tracing::warn!(%service, %message, "service over its disk limit");
    hooks
        .disk
        .over
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(service.to_owned(), message.clone());
    let result = HealthResult {
        service: service.to_owned(),
        status: HealthStatus::Critical,
        message,
        duration_ms: 0,
    };
    hooks.health.report(result);
}
