//! Launch, terminate, and resuming both after a control plane restart.

use super::deployment_file::{FileAccess, read_deployment_file};
use super::{App, AppError};
use stratus_engine::logs::{Component, Subject};
use stratus_model::spec::DeploymentSpec;
use stratus_model::state::{AgentState, DeploymentState};

impl App {
    /// Launches the deployment file at `file` (an absolute path); returns the deployment's name
    /// once a task works on it. Nothing is recorded or started when the file is refused.
    pub async fn launch(&self, file: &str) -> Result<String, AppError> {
        self.launch_as(file, FileAccess::Operator).await
    }

    /// [`App::launch`] of a file named by a caller with `access`.
    pub async fn launch_as(&self, file: &str, access: FileAccess) -> Result<String, AppError> {
        if access == FileAccess::Anyone {
            readable_by_anyone(std::path::Path::new(file)).await?;
        }
        let text = read_deployment_file(file, access).await?;
        let text = self.merge_control_providers(&text, file)?;
        let (spec, warnings) = validate_for_launch(&text, file).await?;
        if access == FileAccess::Anyone {
            for path in spec.local_paths() {
                readable_by_anyone(path).await?;
            }
        }
        let name = spec.name.to_string();
        if let Some(row) = self.store.deployment::<DeploymentState>(&name)? {
            match row.state {
                DeploymentState::Terminated => {}
                // Launching a failed deployment again resumes it: done steps are skipped.
                DeploymentState::Failed { .. } => {}
                // The same file again is nothing to do; launch reports it RUNNING.
                DeploymentState::Running if row.spec_toml == text => return Ok(name),
                DeploymentState::Pending | DeploymentState::Launching => {
                    // Already on its way (perhaps resumed after a restart): follow it.
                    if !self.working_on(&name).await {
                        self.record_warnings(&name, &warnings);
                        self.spawn_launch(spec).await;
                    }
                    return Ok(name);
                }
                other => {
                    return Err(AppError::Conflict {
                        deployment: name,
                        state: other.name().to_string(),
                        wanted: "change it with `stratus apply FILE`, or terminate it before \
                                 launching it again"
                            .into(),
                    });
                }
            }
        }
        self.check_launch_capacity(&spec)?;
        self.store
            .put_deployment(&name, file, &text, &DeploymentState::Launching)?;
        self.record_warnings(&name, &warnings);
        self.spawn_launch(spec).await;
        Ok(name)
    }

    /// Refused before the deployment is recorded or any server starts.
    fn check_launch_capacity(&self, spec: &DeploymentSpec) -> Result<(), AppError> {
        self.engine
            .room_to_launch(spec)?
            .map_err(AppError::Capacity)
    }

    /// Terminates deployment `name`; its servers' disks are removed unless `keep_disks`.
    pub async fn terminate(&self, name: &str, keep_disks: bool) -> Result<(), AppError> {
        let row = self.row(name)?;
        if row.state == DeploymentState::Terminated {
            return Err(AppError::Conflict {
                deployment: name.to_string(),
                state: row.state.name().to_string(),
                wanted: "there is nothing to terminate".into(),
            });
        }
        let spec = self.spec_of(&row)?;
        self.spawn_terminate(spec, Some(keep_disks)).await;
        Ok(())
    }

    /// Picks up where a previous control plane stopped: agents may reconnect, launches and
    /// terminations in flight continue from their journal.
    pub async fn resume(&self) {
        let Ok(rows) = self.store.deployments::<DeploymentState>() else {
            return;
        };
        for row in rows {
            self.expect_agents(&row.name).await;
            let subject = Subject {
                deployment: Some(&row.name),
                ..Subject::default()
            };
            let spec = match self.spec_of(&row) {
                Ok(spec) => spec,
                Err(e) => {
                    let message = format!("cannot resume: {e}");
                    self.logs
                        .error(Component::MonitorDeployment, subject, &message);
                    continue;
                }
            };
            match row.state {
                DeploymentState::Pending | DeploymentState::Launching => {
                    let message = "resuming launch after control plane restart";
                    self.logs
                        .info(Component::MonitorDeployment, subject, message);
                    self.spawn_launch(spec).await;
                }
                DeploymentState::Scaling => {
                    let message = "resuming scaling after control plane restart";
                    self.logs
                        .info(Component::MonitorDeployment, subject, message);
                    self.spawn_reconcile(spec).await;
                }
                DeploymentState::Stopping => {
                    // Its journaled change set to nothing and disk choice carry on.
                    let message = "resuming terminate after control plane restart";
                    self.logs
                        .info(Component::MonitorDeployment, subject, message);
                    self.spawn_terminate(spec, None).await;
                }
                _ => {}
            }
        }
    }

    /// Lets the agents of `deployment`'s live servers dial back in.
    async fn expect_agents(&self, deployment: &str) {
        let servers = self
            .store
            .servers::<AgentState>(deployment)
            .unwrap_or_default();
        for s in servers {
            if s.agent_state != AgentState::Terminated {
                self.engine
                    .parts()
                    .agents
                    .expect(deployment, &s.id, s.credential_digest.clone())
                    .await;
            }
        }
    }

    async fn spawn_launch(&self, spec: DeploymentSpec) {
        let engine = self.engine.clone();
        let name = spec.name.to_string();
        let handle = tokio::spawn(async move {
            let _ = engine.launch(&spec).await;
        });
        self.tasks.lock().await.insert(name, handle);
    }

    /// Terminates `spec`'s deployment; `keep_disks` is `None` for a resumed terminate, which
    /// keeps to the choice it was started with.
    async fn spawn_terminate(&self, spec: DeploymentSpec, keep_disks: Option<bool>) {
        let engine = self.engine.clone();
        let name = spec.name.to_string();
        let previous = self.tasks.lock().await.remove(&name);
        let handle = tokio::spawn(async move {
            // A launch or reconcile still running is stopped first: terminate wins.
            if let Some(p) = previous {
                p.abort();
                let _ = p.await;
            }
            let _ = match keep_disks {
                Some(keep) => engine.terminate(&spec, keep).await,
                None => engine.resume_terminate(&spec).await,
            };
        });
        self.tasks.lock().await.insert(name, handle);
    }

    /// Launch validation's warnings (e.g. programs that run arbitrary code) become events.
    pub(super) fn record_warnings(&self, name: &str, warnings: &[stratus_model::SpecError]) {
        for w in warnings {
            let subject = Subject {
                deployment: Some(name),
                ..Subject::default()
            };
            self.logs
                .warn(Component::ConfigurationWorker, subject, &w.to_string());
        }
    }
}

/// The launch checks of a deployment file (every package held against its manifest), off the
/// async threads because they read package archives. Nothing is created when they fail.
pub(super) async fn validate_for_launch(
    text: &str,
    file: &str,
) -> Result<(DeploymentSpec, Vec<stratus_model::SpecError>), AppError> {
    let (text, file) = (text.to_string(), file.to_string());
    tokio::task::spawn_blocking(move || DeploymentSpec::from_str_for_launch(&text, &file))
        .await
        .map_err(|e| AppError::Internal(format!("validating the deployment file: {e}")))?
        .map_err(AppError::InvalidFile)
}

/// Refuses `path` unless every user of this machine may read it (world_readable.rs).
async fn readable_by_anyone(path: &std::path::Path) -> Result<(), AppError> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || super::world_readable::check(&owned))
        .await
        .map_err(|e| AppError::Internal(format!("checking {}: {e}", path.display())))?
        .map_err(|reason| AppError::Unreadable {
            file: path.display().to_string(),
            message: format!(
                "{reason}; over the HTTP API a deployment file and everything it names must be \
                 readable by every user of this machine (or upload them as a tar.gz)"
            ),
        })
}
