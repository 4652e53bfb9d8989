//! Carrying out one request from the control plane. Paths in requests are relative to the
//! server root and may not leave it.

use crate::hooks::Hooks;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;
use stratus_cloud::{CloudFiles, PackageRef};
use stratus_protocol::{AgentReply, AgentRequest};

impl Hooks {
    pub async fn handle(&self, req: AgentRequest) -> AgentReply {
        match self.handle_inner(req).await {
            Ok(reply) => reply,
            Err(message) => {
                tracing::warn!(%message, "request failed");
                AgentReply::Error { message }
            }
        }
    }

    async fn handle_inner(&self, req: AgentRequest) -> Result<AgentReply, String> {
        match req {
            AgentRequest::Ping => Ok(AgentReply::Done),
            AgentRequest::InstallPackage { dest, package } => {
                let rel = dest.clone();
                let dest = self.inside(&dest)?;
                let files = CloudFiles::local(&package.store).map_err(|e| e.to_string())?;
                let r = PackageRef {
                    name: package.name.clone(),
                    digest: package.digest.clone(),
                    files: package.files,
                };
                files
                    .fetch_package(&r, &dest)
                    .await
                    .map_err(|e| e.to_string())?;
                // The sealed copy that `service:` programs run from: outside every preopen,
                // so no plugin can rewrite it.
                let sealed = self.inside(&format!("{}/{rel}", crate::hooks::SEALED))?;
                let _ = std::fs::remove_dir_all(&sealed);
                files
                    .fetch_package(&r, &sealed)
                    .await
                    .map_err(|e| e.to_string())?;
                self.forget_plugin(&dest).await;
                tracing::info!(package = %package.name, dest = %dest.display(), "service package installed");
                Ok(AgentReply::Done)
            }
            AgentRequest::FetchFile { store, key, dest } => {
                let dest = self.inside(&dest)?;
                let files = CloudFiles::local(&store).map_err(|e| e.to_string())?;
                files
                    .fetch_file(&key, &dest)
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::info!(%key, dest = %dest.display(), "file fetched from cloud files");
                Ok(AgentReply::Done)
            }
            AgentRequest::WriteFile {
                dest,
                contents,
                mode,
            } => {
                let dest = self.inside(&dest)?;
                write_with_mode(&dest, contents.as_bytes(), mode)
                    .map_err(|e| format!("{}: {e}", dest.display()))?;
                Ok(AgentReply::Done)
            }
            AgentRequest::RemoveFiles { paths } => {
                for p in paths {
                    let p = self.inside(&p)?;
                    match std::fs::remove_file(&p) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(format!("{}: {e}", p.display())),
                    }
                }
                Ok(AgentReply::Done)
            }
            AgentRequest::Hook {
                call_id,
                package_dir,
                capabilities,
                call,
            } => {
                self.inside(&package_dir)?;
                Ok(self
                    .run_once(&call_id, &package_dir, capabilities, *call)
                    .await)
            }
            AgentRequest::Shutdown { grace_ms } => {
                let stopped = self
                    .supervisor
                    .stop_all(Duration::from_millis(grace_ms))
                    .await;
                tracing::info!(processes = stopped.len(), "shutdown requested");
                Ok(AgentReply::Done)
            }
        }
    }

    /// `rel` under the server root; absolute paths and `..` are refused.
    fn inside(&self, rel: &str) -> Result<PathBuf, String> {
        let p = Path::new(rel);
        if p.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(format!(
                "path {rel} is not a plain relative path inside the server"
            ));
        }
        Ok(self.cfg.root.join(p))
    }
}

fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    // An existing file keeps its old mode on open; set it explicitly.
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(bytes)
}
