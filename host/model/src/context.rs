//! The typed `enstratus.cfg`: what hooks are given, mirrored one to one from `wit/types.wit`
//! so that the engine and the agent can build and ship contexts without linking wasmtime.

use serde::{Deserialize, Serialize};

/// A server as the orchestrator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub id: String,
    pub name: String,
    pub address: String,
}

/// A named port of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub name: String,
    pub private_port: u16,
    pub public_port: u16,
}

/// A generated credential; `password` is a secret and must never be logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub name: String,
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credential {
    // Debug output ends up in logs; the password must not.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Whether a dependency is on a service or on the data source it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DependencyKind {
    Service,
    DataSource,
}

/// A dependency, already running, with its facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    pub service: String,
    pub kind: DependencyKind,
    pub servers: Vec<ServerInfo>,
    pub ports: Vec<Port>,
    pub credentials: Vec<Credential>,
    pub database: Option<String>,
    pub settings: Vec<(String, String)>,
}

/// The data source a database service installs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSource {
    pub database: String,
    pub image_path: String,
}

/// Everything a service hook knows about its world.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceContext {
    pub deployment: String,
    pub tier: String,
    pub server: ServerInfo,
    pub service_id: String,
    pub service_name: String,
    /// Absolute host path; the sandbox sees the same path.
    pub service_dir: String,
    #[serde(default)]
    pub settings: Vec<(String, String)>,
    #[serde(default)]
    pub ports: Vec<Port>,
    #[serde(default)]
    pub credentials: Vec<Credential>,
    #[serde(default)]
    pub data_source: Option<DataSource>,
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
}

impl ServiceContext {
    /// Every secret value in the context, so that logs and outputs can be scrubbed of them.
    pub fn secrets(&self) -> Vec<String> {
        let own = self.credentials.iter();
        let deps = self.dependencies.iter().flat_map(|d| d.credentials.iter());
        own.chain(deps).map(|c| c.password.clone()).collect()
    }
}

/// Access a database must grant or revoke for one dependent service.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseGrant {
    pub service: String,
    pub database: String,
    pub user: String,
    pub password: String,
    pub addresses: Vec<String>,
}

impl std::fmt::Debug for DatabaseGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseGrant")
            .field("service", &self.service)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("addresses", &self.addresses)
            .finish()
    }
}

/// A node a load balancer balances over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyNode {
    pub server: ServerInfo,
    pub port: u16,
}

/// Health as a hook reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthStatus {
    Ok,
    Warning,
    Critical,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    pub status: HealthStatus,
    pub message: String,
}

/// What a configuration-management adapter is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmContext {
    pub deployment: String,
    pub tier: String,
    pub server: ServerInfo,
    pub server_root: String,
    pub work_dir: String,
    #[serde(default)]
    pub run_list: Vec<String>,
    #[serde(default)]
    pub settings: Vec<(String, String)>,
    #[serde(default)]
    pub credentials: Vec<Credential>,
}

/// What a CM run reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmReport {
    pub summary: String,
    pub produced: Vec<String>,
}

/// One hook invocation with its typed input: the unit of work an agent performs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "hook", rename_all = "kebab-case")]
pub enum HookCall {
    InstallService {
        ctx: ServiceContext,
    },
    InstallDataSource {
        ctx: ServiceContext,
    },
    Configure {
        ctx: ServiceContext,
    },
    Start {
        ctx: ServiceContext,
    },
    Stop {
        ctx: ServiceContext,
    },
    GrantDatabaseAccess {
        ctx: ServiceContext,
        grants: Vec<DatabaseGrant>,
    },
    RevokeDatabaseAccess {
        ctx: ServiceContext,
        grants: Vec<DatabaseGrant>,
    },
    HealthCheck {
        ctx: ServiceContext,
    },
    StartProxy {
        ctx: ServiceContext,
        nodes: Vec<ProxyNode>,
    },
    RemoveNodes {
        ctx: ServiceContext,
        nodes: Vec<ProxyNode>,
    },
    CmPrepare {
        ctx: CmContext,
    },
    CmRun {
        ctx: CmContext,
    },
}

impl HookCall {
    /// The hook's name as WIT spells it, e.g. `grant-database-access`.
    pub fn name(&self) -> &'static str {
        match self {
            HookCall::InstallService { .. } => "install-service",
            HookCall::InstallDataSource { .. } => "install-data-source",
            HookCall::Configure { .. } => "configure",
            HookCall::Start { .. } => "start",
            HookCall::Stop { .. } => "stop",
            HookCall::GrantDatabaseAccess { .. } => "grant-database-access",
            HookCall::RevokeDatabaseAccess { .. } => "revoke-database-access",
            HookCall::HealthCheck { .. } => "health-check",
            HookCall::StartProxy { .. } => "start-proxy",
            HookCall::RemoveNodes { .. } => "remove-nodes",
            HookCall::CmPrepare { .. } => "prepare",
            HookCall::CmRun { .. } => "run",
        }
    }

    /// The world whose component exports this hook.
    pub fn world(&self) -> World {
        match self {
            HookCall::StartProxy { .. } | HookCall::RemoveNodes { .. } => World::Proxy,
            HookCall::CmPrepare { .. } | HookCall::CmRun { .. } => World::Cm,
            _ => World::Service,
        }
    }

    /// The context of a service or proxy hook; `None` for a CM hook.
    pub fn service_context(&self) -> Option<&ServiceContext> {
        match self {
            HookCall::CmPrepare { .. } | HookCall::CmRun { .. } => None,
            HookCall::InstallService { ctx }
            | HookCall::InstallDataSource { ctx }
            | HookCall::Configure { ctx }
            | HookCall::Start { ctx }
            | HookCall::Stop { ctx }
            | HookCall::HealthCheck { ctx }
            | HookCall::GrantDatabaseAccess { ctx, .. }
            | HookCall::RevokeDatabaseAccess { ctx, .. }
            | HookCall::StartProxy { ctx, .. }
            | HookCall::RemoveNodes { ctx, .. } => Some(ctx),
        }
    }

    /// [`HookCall::service_context`], mutable.
    fn service_context_mut(&mut self) -> Option<&mut ServiceContext> {
        match self {
            HookCall::CmPrepare { .. } | HookCall::CmRun { .. } => None,
            HookCall::InstallService { ctx }
            | HookCall::InstallDataSource { ctx }
            | HookCall::Configure { ctx }
            | HookCall::Start { ctx }
            | HookCall::Stop { ctx }
            | HookCall::HealthCheck { ctx }
            | HookCall::GrantDatabaseAccess { ctx, .. }
            | HookCall::RevokeDatabaseAccess { ctx, .. }
            | HookCall::StartProxy { ctx, .. }
            | HookCall::RemoveNodes { ctx, .. } => Some(ctx),
        }
    }

    /// What the engine journals a hook call by: a step whose view changed runs again.
    /// - A load balancer learns the servers it balances through `start-proxy` and
    ///   `remove-nodes`, so the servers and settings of `balanced` (the service its tier
    ///   balances) are left out: a tier scaling behind it, or a setting of the balanced
    ///   service changing, does not reconfigure it (its ports do).
    /// - `install-service` installs the package (whose contents the download step is keyed
    ///   by), so settings and dependencies are left out: changing a setting re-runs
    ///   `configure`, `stop` and `start`, not the installation.
    pub fn journal_view(&self, balanced: Option<&str>) -> HookCall {
        let mut call = self.clone();
        let install = matches!(call, HookCall::InstallService { .. });
        let ctx = call.service_context_mut();
        let Some(ctx) = ctx else {
            return call;
        };
        if install {
            ctx.settings.clear();
            ctx.dependencies.clear();
        }
        if let Some(service) = balanced {
            for d in ctx.dependencies.iter_mut().filter(|d| d.service == service) {
                d.servers.clear();
                d.settings.clear();
            }
        }
        call
    }

    /// The context of a CM hook; `None` for a service or proxy hook.
    pub fn cm_context(&self) -> Option<&CmContext> {
        match self {
            HookCall::CmPrepare { ctx } | HookCall::CmRun { ctx } => Some(ctx),
            _ => None,
        }
    }

    /// Every secret in the call's input.
    pub fn secrets(&self) -> Vec<String> {
        // Every call carries exactly one of the two contexts.
        let mut s = match self.cm_context() {
            Some(cm) => cm.credentials.iter().map(|c| c.password.clone()).collect(),
            None => self
                .service_context()
                .map(ServiceContext::secrets)
                .unwrap_or_default(),
        };
        if let HookCall::GrantDatabaseAccess { grants, .. }
        | HookCall::RevokeDatabaseAccess { grants, .. } = self
        {
            s.extend(grants.iter().map(|g| g.password.clone()));
        }
        s
    }

    /// Parses a hook name as given on the command line together with its JSON input.
    pub fn world_of(hook: &str) -> Option<World> {
        match hook {
            "install-service"
            | "install-data-source"
            | "configure"
            | "start"
            | "stop"
            | "grant-database-access"
            | "revoke-database-access"
            | "health-check" => Some(World::Service),
            "start-proxy" | "remove-nodes" => Some(World::Proxy),
            "prepare" | "run" => Some(World::Cm),
            _ => None,
        }
    }
}

/// The WIT worlds a plugin component can implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    Service,
    Proxy,
    Cm,
    /// A scaling rule (`wit/scaler.wit`): no hooks, no host functions, no grants.
    Scaler,
    /// A cloud driver (`wit/cloud-driver.wit`): run by the control plane; outgoing HTTP to
    /// the origins the operator's provider settings grant is its only capability.
    CloudDriver,
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            World::Service => "service",
            World::Proxy => "proxy",
            World::Cm => "cm",
            World::Scaler => "scaler",
            World::CloudDriver => "cloud-driver",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(json: serde_json::Value) -> HookCall {
        serde_json::from_value(json).expect("a hook call")
    }

    fn server() -> serde_json::Value {
        serde_json::json!({"id": "app-1", "name": "shop-app-1", "address": "127.0.0.5"})
    }

    fn credential(password: &str) -> serde_json::Value {
        serde_json::json!([{"name": "admin", "user": "root", "password": password}])
    }

    #[test]
    fn each_call_carries_the_context_of_its_world() {
        let grant = call(serde_json::json!({
            "hook": "grant-database-access",
            "ctx": {"deployment": "shop", "tier": "db", "server": server(), "service_id": "7",
                    "service_name": "db", "service_dir": "/s/7", "credentials": credential("pw-own")},
            "grants": [{"service": "app", "database": "shop", "user": "app",
                        "password": "pw-grant", "addresses": []}],
        }));
        assert_eq!(grant.service_context().unwrap().service_name, "db");
        assert!(grant.cm_context().is_none());
        assert_eq!(grant.secrets(), ["pw-own", "pw-grant"]);

        let run = call(serde_json::json!({
            "hook": "cm-run",
            "ctx": {"deployment": "shop", "tier": "app", "server": server(), "server_root": "/r",
                    "work_dir": "/w", "credentials": credential("pw-cm")},
        }));
        assert_eq!(run.cm_context().unwrap().work_dir, "/w");
        assert!(run.service_context().is_none());
        assert_eq!(run.secrets(), ["pw-cm"]);
    }
}
