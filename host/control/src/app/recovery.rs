//! Auto-recovery's trigger: every running deployment's lost servers are noted (the
//! deployment turns DEGRADED, saying which and what will happen), and once a lost server is
//! gone (beyond its tier's grace, or ended) a reconcile replaces it. The reconciler itself
//! does the work and retries a failing replacement with backoff.

use super::App;
use std::time::Duration;
use stratus_engine::logs::{Component, Subject};
use stratus_model::state::DeploymentState;

/// How often running deployments are looked at.
pub const RECOVERY_POLL: Duration = Duration::from_millis(500);

impl App {
    /// Runs for as long as the control plane does.
    pub async fn watch_losses(self) {
        loop {
            tokio::time::sleep(RECOVERY_POLL).await;
            self.note_losses().await;
        }
    }

    async fn note_losses(&self) {
        let Ok(rows) = self.store.deployments::<DeploymentState>() else {
            return;
        };
        for row in rows {
            let live = matches!(
                row.state,
                DeploymentState::Running | DeploymentState::Degraded { .. }
            );
            if !live || self.working_on(&row.name).await {
                continue;
            }
            let Ok(spec) = self.spec_of(&row) else {
                continue;
            };
            match self.engine.note_losses(&spec).await {
                Ok(true) => self.spawn_reconcile(spec).await,
                Ok(false) => {}
                Err(e) => {
                    let subject = Subject {
                        deployment: Some(&row.name),
                        ..Subject::default()
                    };
                    let message = format!("watching for lost servers: {e}");
                    self.logs
                        .warn(Component::MonitorDeployment, subject, &message);
                }
            }
        }
    }
}
