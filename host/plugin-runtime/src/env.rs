//! What the caller (agent or `stratus plugin call`) supplies for one hook call.

use crate::capabilities::{Capabilities, DirKind};
use crate::supervisor::Supervisor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use stratus_model::context::HookCall;

/// Host directories a plugin may be granted, by kind. Each is preopened at the same absolute
/// path inside the sandbox.
pub type DirMap = BTreeMap<DirKind, PathBuf>;

/// The directories a call's own context names: the service directory for service and proxy
/// hooks, the work directory and the server's `<root>/etc` for CM hooks. The server root
/// itself is never one of them: it holds the agent-private `agent/`.
pub fn dirs_of(call: &HookCall) -> DirMap {
    let mut m = DirMap::new();
    if let Some(ctx) = call.cm_context() {
        m.insert(DirKind::ServerConfig, server_config_dir(&ctx.server_root));
        m.insert(DirKind::WorkDir, PathBuf::from(&ctx.work_dir));
    }
    if let Some(ctx) = call.service_context() {
        m.insert(DirKind::Service, PathBuf::from(&ctx.service_dir));
    }
    m
}

/// The server's configuration directory a `server-config` grant opens: `<root>/etc`.
pub fn server_config_dir(server_root: &str) -> PathBuf {
    Path::new(server_root).join("etc")
}

/// Fields attached to every log line of the call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    pub deployment: String,
    pub tier: String,
    pub server: String,
    pub service: String,
}

impl Labels {
    /// Labels taken from the call's context.
    pub fn of(call: &HookCall) -> Labels {
        if let Some(ctx) = call.cm_context() {
            return Labels {
                deployment: ctx.deployment.clone(),
                tier: ctx.tier.clone(),
                server: ctx.server.id.clone(),
                service: String::new(),
            };
        }
        call.service_context()
            .map(|ctx| Labels {
                deployment: ctx.deployment.clone(),
                tier: ctx.tier.clone(),
                server: ctx.server.id.clone(),
                service: ctx.service_name.clone(),
            })
            .unwrap_or_default()
    }
}

/// Everything a hook call needs from its caller.
#[derive(Clone)]
pub struct CallEnv {
    pub dirs: DirMap,
    /// This server's address; network grants for host `self` resolve to it.
    pub server_address: String,
    pub supervisor: Supervisor,
    /// Capabilities as narrowed by the operator; `None` = the manifest's.
    pub capabilities: Option<Capabilities>,
    /// Strings to scrub from everything the call returns or logs (the call's own
    /// credentials are always added).
    pub secrets: Vec<String>,
    pub labels: Labels,
    /// A copy of the installed package outside every directory the plugin can write. Programs
    /// granted as `service:<path>` run from this copy, so a plugin that rewrites its service
    /// directory cannot get native code of its own executed. `None` runs them from the
    /// service directory (`stratus plugin call`, where the author owns both).
    pub sealed_package: Option<PathBuf>,
}

impl std::fmt::Debug for CallEnv {
    // The secrets themselves must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallEnv")
            .field("dirs", &self.dirs)
            .field("server_address", &self.server_address)
            .field("supervisor", &self.supervisor)
            .field("capabilities", &self.capabilities)
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .field("labels", &self.labels)
            .field("sealed_package", &self.sealed_package)
            .finish()
    }
}

impl CallEnv {
    /// Supervised processes are grouped by this owner: the service name, else the plugin's.
    pub fn owner(&self, plugin: &str) -> String {
        let raw = if self.labels.service.is_empty() {
            plugin
        } else {
            &self.labels.service
        };
        raw.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let env = CallEnv {
            dirs: DirMap::new(),
            server_address: "127.0.0.1".into(),
            supervisor: Supervisor::new("/nonexistent".into()),
            capabilities: None,
            secrets: vec!["hunter2".into()],
            labels: Labels::default(),
            sealed_package: None,
        };
        let text = format!("{env:?}");
        assert!(
            !text.contains("hunter2") && text.contains("<1 redacted>"),
            "{text}"
        );
    }
}
