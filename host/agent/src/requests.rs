//! Carrying out one request from the control plane. Paths in requests are relative to the
//! server root and may not leave it; every file operation resolves beneath the root without
//! following a link, since plugins can plant links in the directories they write. Packages
//! and data sources come from the control plane's file endpoint by content address, never
//! from a path of its disk, and every byte is checked against its sha256 before use.

use crate::hooks::Hooks;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use stratus_cloud::files::MAX_DATA_SOURCE_BYTES;
use stratus_cloud::{
    AgentIdentity, Beneath, Expected, FetchedPackage, PackageRef, RemoteFiles, Secret,
};
use stratus_plugin_runtime::Package;
use stratus_protocol::{AgentReply, AgentRequest, PackageSource};

/// Where this agent fetches cloud files: the file endpoint the control plane named in its
/// last `Welcome` (its URL, and the client for it), reached with the certificate pinned in
/// the bootstrap.
#[derive(Default)]
pub(crate) struct FileSource(RwLock<Option<(String, RemoteFiles)>>);

impl FileSource {
    fn get(&self) -> Result<RemoteFiles, String> {
        let files = self.0.read().unwrap_or_else(|e| e.into_inner());
        files.as_ref().map(|(_, f)| f.clone()).ok_or_else(|| {
            "the control plane named no file endpoint; cannot fetch cloud files".to_string()
        })
    }

    fn url(&self) -> Option<String> {
        let files = self.0.read().unwrap_or_else(|e| e.into_inner());
        files.as_ref().map(|(url, _)| url.clone())
    }
}

impl Hooks {
    /// Takes the file endpoint a `Welcome` names (`None`: none), reached as this server with
    /// the certificate its bootstrap pins and the credential it presents now.
    pub(crate) fn learn_files_endpoint(&self, url: Option<String>) {
        let boot = &self.cfg.bootstrap;
        let files = url.and_then(|url| {
            let identity = AgentIdentity {
                deployment: boot.deployment.clone(),
                server_id: boot.server_id.clone(),
                credential: Secret::new(self.credentials.current()),
            };
            let tls = stratus_protocol::tls::pinned_client_config(&boot.fingerprint);
            RemoteFiles::new(&url, tls, identity)
                .inspect_err(|e| tracing::warn!(error = %e, "unusable file endpoint"))
                .ok()
                .map(|files| (url, files))
        });
        *self.files.0.write().unwrap_or_else(|e| e.into_inner()) = files;
    }

    /// Keeps `fresh` and presents it from now on, to the file endpoint too.
    fn replace_credential(&self, fresh: &str) -> Result<(), String> {
        self.credentials.replace(fresh)?;
        self.learn_files_endpoint(self.files.url());
        tracing::info!(
            "the launch credential was replaced; the new one is kept in agent/credential"
        );
        Ok(())
    }

    pub async fn handle(self: &Arc<Self>, req: AgentRequest) -> AgentReply {
        match self.handle_inner(req).await {
            Ok(reply) => reply,
            Err(message) => {
                tracing::warn!(%message, "request failed");
                AgentReply::Error { message }
            }
        }
    }

    async fn handle_inner(self: &Arc<Self>, req: AgentRequest) -> Result<AgentReply, String> {
        match req {
            AgentRequest::Ping => Ok(AgentReply::Done),
            AgentRequest::ReadLog { max_bytes } => {
                Ok(crate::agent_log::read_end(&self.cfg.root, max_bytes)?.into())
            }
            AgentRequest::ReplaceCredential { credential } => {
                self.replace_credential(&credential)?;
                Ok(AgentReply::Done)
            }
            AgentRequest::InstallPackage {
                dest,
                package,
                plugin,
            } => {
                self.install_package(&dest, &package, plugin).await?;
                tracing::info!(package = %package.name, %dest, "service package installed");
                Ok(AgentReply::Done)
            }
            AgentRequest::FetchFile {
                name,
                sha256,
                size,
                dest,
            } => {
                self.inside(&dest)?;
                if size > MAX_DATA_SOURCE_BYTES {
                    return Err(format!(
                        "object {name} is {size} bytes; at most {MAX_DATA_SOURCE_BYTES} are fetched"
                    ));
                }
                let expected = Expected {
                    object: name.clone(),
                    sha256,
                    size,
                };
                self.files
                    .get()?
                    .fetch_file(&expected, &self.root()?, Path::new(&dest))
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::info!(%name, %dest, size, "data source fetched from the file endpoint");
                Ok(AgentReply::Done)
            }
            AgentRequest::WriteFile {
                dest,
                contents,
                mode,
            } => {
                self.inside(&dest)?;
                self.root()?
                    .write_file(Path::new(&dest), contents.as_bytes(), mode)
                    .map_err(|e| e.to_string())?;
                Ok(AgentReply::Done)
            }
            // Erased, not just unlinked: a plugin may have given the file a second name.
            AgentRequest::RemoveFiles { paths } => {
                let root = self.root()?;
                for p in paths {
                    self.inside(&p)?;
                    root.erase_file(Path::new(&p)).map_err(|e| e.to_string())?;
                }
                Ok(AgentReply::Done)
            }
            AgentRequest::Hook {
                call_id,
                package_dir,
                capabilities,
                call,
                rerun_failed,
            } => {
                self.inside(&package_dir)?;
                Ok(self
                    .run_once(&call_id, &package_dir, capabilities, *call, rerun_failed)
                    .await)
            }
            AgentRequest::WatchHealth { watch } => {
                self.inside(&watch.package_dir)?;
                self.watch_health(watch)?;
                Ok(AgentReply::Done)
            }
            AgentRequest::UnwatchHealth { service } => {
                self.health.unwatch(&service);
                self.disk.forget(&service);
                Ok(AgentReply::Done)
            }
            AgentRequest::WatchMetrics { interval_ms } => {
                let every = self.metrics.set(interval_ms);
                tracing::info!(interval_ms = every.as_millis() as u64, "metrics reported");
                Ok(AgentReply::Done)
            }
            AgentRequest::Shutdown { grace_ms } => {
                // Checks of services being stopped would only report them CRITICAL.
                self.health.stop_all();
                let stopped = self
                    .supervisor
                    .stop_all(Duration::from_millis(grace_ms))
                    .await;
                tracing::info!(processes = stopped.len(), "shutdown requested");
                Ok(AgentReply::Done)
            }
        }
    }

    /// Installs a package twice: the sealed copy the agent loads the plugin and runs
    /// `service:` programs from, in the agent-private area outside every preopen, and the
    /// plugin's own copy at `dest`. A `plugin`'s own copy has every file but its component,
    /// which the plugin has no use for and whose megabytes would count against its disk.
    async fn install_package(
        &self,
        dest: &str,
        package: &PackageSource,
        plugin: bool,
    ) -> Result<(), String> {
        self.inside(dest)?;
        let r = PackageRef {
            name: package.name.clone(),
            digest: package.digest.clone(),
            files: package.files,
            manifest: package.manifest.clone(),
        };
        // Fetched and verified whole before either copy is written.
        let fetched = self
            .files
            .get()?
            .fetch_package(&r)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(package = %r.name, files = r.files, "package fetched from the file endpoint");
        let root = self.root()?;
        let sealed_rel = crate::hooks::sealed_of(dest);
        let sealed = self.inside(&sealed_rel)?;
        // No plugin is loaded meanwhile: it would pair one install's manifest or digest with
        // another's files, or be remembered after being forgotten here.
        let _installing = self.installing.write().await;
        self.forget_plugin(&sealed).await;
        match std::fs::remove_dir_all(&sealed) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", sealed.display())),
        }
        let target = root
            .create_dir_all(Path::new(&sealed_rel))
            .map_err(|e| e.to_string())?;
        fetched.write_to(&target).map_err(|e| e.to_string())?;
        let component = plugin.then(|| component_of(&sealed, &fetched)).flatten();
        let mine = root
            .create_dir_all(Path::new(dest))
            .map_err(|e| e.to_string())?;
        let Some((package, rel, sha256)) = component else {
            fetched.write_to(&mine).map_err(|e| e.to_string())?;
            return Ok(());
        };
        self.verified_package(&sealed, package, sha256).await;
        fetched
            .write_except(&mine, Some(&rel))
            .map_err(|e| e.to_string())?;
        // One left by an earlier install would still count against the plugin's disk; a
        // plugin that made a directory of that name keeps it.
        let _ = mine.remove_file(Path::new(&rel));
        Ok(())
    }

    /// The server root, under which every request's paths resolve without following links.
    pub(crate) fn root(&self) -> Result<Beneath, String> {
        Beneath::open(&self.cfg.root).map_err(|e| e.to_string())
    }

    /// `rel` under the server root (see [`inside`]).
    fn inside(&self, rel: &str) -> Result<PathBuf, String> {
        inside(&self.cfg.root, rel)
    }
}

/// `rel` under `root`; absolute paths, `..`, `.` and the root itself (an empty path) are
/// refused.
fn inside(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let p = Path::new(rel);
    let mut parts = p.components().peekable();
    if parts.peek().is_none() || parts.any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!(
            "path {rel:?} is not a plain relative path inside the server"
        ));
    }
    Ok(root.join(p))
}

/// The package sealed at `sealed`, its component's path as the manifest names it, and the
/// SHA-256 the component was verified against as it arrived; `None` if its `plugin.toml` does
/// not parse or names no fetched file (the hook that loads it then says why).
fn component_of(sealed: &Path, fetched: &FetchedPackage) -> Option<(Package, String, String)> {
    let package = Package::open(sealed).ok()?;
    let rel = package.component_path.strip_prefix(sealed).ok()?;
    let rel = rel.to_str()?.to_owned();
    let sha256 = fetched.sha256_of(&rel)?.to_owned();
    Some((package, rel, sha256))
}

#[cfg(test)]
mod tests {
    use super::inside;
    use std::path::Path;

    #[test]
    fn only_plain_relative_paths_below_the_root_are_inside() {
        let root = Path::new("/srv/root");
        assert_eq!(inside(root, "mnt/a/b").unwrap(), root.join("mnt/a/b"));
        for bad in ["", ".", "./", "..", "a/../b", "/etc", "/"] {
            let err = inside(root, bad).unwrap_err();
            assert!(err.contains("not a plain relative path"), "{bad:?}: {err}");
        }
    }
}
