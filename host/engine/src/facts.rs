//! The facts a server cannot know a priori, assembled into typed contexts (the successor of
//! `enstratus.cfg`): its own address, its dependencies' servers, ports and credentials, the
//! grants a database must make and the nodes a load balancer balances.

use crate::engine::{Engine, EngineError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use stratus_model::ServerId;
use stratus_model::context::{
    CmContext, Credential, DataSource, DatabaseGrant, Dependency, DependencyKind, ProxyNode,
    ServerInfo, ServiceContext,
};
use stratus_model::spec::{DeploymentSpec, ServiceSpec};

/// A launched server as the engine remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    pub id: ServerId,
    pub name: String,
    pub tier: String,
    pub address: String,
    /// The server's filesystem root as its agent sees it (from its provider).
    pub root: String,
}

impl Server {
    pub fn info(&self) -> ServerInfo {
        ServerInfo {
            id: self.id.to_string(),
            name: self.name.clone(),
            address: self.address.clone(),
        }
    }

    /// `/mnt/services/a<id>` inside this server's root.
    pub fn service_dir(&self, service: &ServiceSpec) -> String {
        format!("{}/mnt/services/a{}", self.root, service.id)
    }
}

/// The servers of a deployment by tier, in id order.
pub type Fleet = BTreeMap<String, Vec<Server>>;

/// Database user name a dependent service gets: its service name with `-` made `_`.
pub fn db_user(service: &str) -> String {
    service.replace('-', "_")
}

impl Engine {
    /// A secret kept by key management, generated on first use.
    pub(crate) fn secret(&self, name: &str) -> Result<String, EngineError> {
        self.parts
            .keys
            .get_or_generate(name)
            .map(|s| s.expose().to_string())
            .map_err(|e| EngineError::Other(format!("key management: {e}")))
    }

    fn own_credentials(
        &self,
        spec: &DeploymentSpec,
        svc: &ServiceSpec,
    ) -> Result<Vec<Credential>, EngineError> {
        svc.credentials
            .iter()
            .map(|c| {
                let password = self.secret(&format!("{}/{}/{}", spec.name, svc.name, c))?;
                Ok(Credential {
                    name: c.to_string(),
                    user: db_user(c.as_str()),
                    password,
                })
            })
            .collect()
    }

    /// The credential a dependent service uses on a database it depends on.
    pub(crate) fn grant_credential(
        &self,
        spec: &DeploymentSpec,
        database: &str,
        dependent: &str,
    ) -> Result<Credential, EngineError> {
        let password = self.secret(&format!("{}/{}/grant-{}", spec.name, database, dependent))?;
        Ok(Credential {
            name: dependent.to_string(),
            user: db_user(dependent),
            password,
        })
    }

    /// The context of `svc` on `server`.
    pub fn service_context(
        &self,
        spec: &DeploymentSpec,
        fleet: &Fleet,
        svc: &ServiceSpec,
        server: &Server,
    ) -> Result<ServiceContext, EngineError> {
        let service_dir = server.service_dir(svc);
        let mut dependencies = Vec::new();
        for dep in dependencies_of(spec, svc) {
            let Some(d) = spec.service(&dep.0) else {
                continue;
            };
            let servers = fleet
                .get(d.tier.as_str())
                .map(|s| s.iter().map(Server::info).collect())
                .unwrap_or_default();
            let (credentials, database) = match dep.1 {
                DependencyKind::DataSource => (
                    vec![self.grant_credential(spec, d.name.as_str(), svc.name.as_str())?],
                    d.data_source.as_ref().map(|ds| ds.database.clone()),
                ),
                DependencyKind::Service => (Vec::new(), None),
            };
            dependencies.push(Dependency {
                service: d.name.to_string(),
                kind: dep.1,
                servers,
                ports: d.ports.iter().map(|p| p.to_context()).collect(),
                credentials,
                database,
                settings: d
                    .settings
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            });
        }
        let data_source = svc.data_source.as_ref().map(|ds| DataSource {
            database: ds.database.clone(),
            image_path: format!("{service_dir}/{}", data_source_file(ds)),
        });
        Ok(ServiceContext {
            deployment: spec.name.to_string(),
            tier: svc.tier.to_string(),
            server: server.info(),
            service_id: svc.id.to_string(),
            service_name: svc.name.to_string(),
            service_dir,
            settings: svc
                .settings
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ports: svc.ports.iter().map(|p| p.to_context()).collect(),
            credentials: self.own_credentials(spec, svc)?,
            data_source,
            dependencies,
        })
    }

    /// Grants database service `db` must make: one per dependent on its data source, for
    /// exactly the dependent's server addresses.
    pub fn grants_for(
        &self,
        spec: &DeploymentSpec,
        fleet: &Fleet,
        db: &ServiceSpec,
    ) -> Result<Vec<DatabaseGrant>, EngineError> {
        let Some(ds) = &db.data_source else {
            return Ok(Vec::new());
        };
        let mut grants = Vec::new();
        for dependent in spec.services.values() {
            let uses = dependent
                .depends_on
                .iter()
                .any(|d| d.service == db.name && d.kind == DependencyKind::DataSource);
            if !uses {
                continue;
            }
            let cred = self.grant_credential(spec, db.name.as_str(), dependent.name.as_str())?;
            let addresses = fleet
                .get(dependent.tier.as_str())
                .map(|s| s.iter().map(|s| s.address.clone()).collect())
                .unwrap_or_default();
            grants.push(DatabaseGrant {
                service: dependent.name.to_string(),
                database: ds.database.clone(),
                user: cred.user,
                password: cred.password,
                addresses,
            });
        }
        Ok(grants)
    }

    /// The CM context of a server of a tier with a CM launch configuration.
    pub fn cm_context(
        &self,
        spec: &DeploymentSpec,
        server: &Server,
        adapter: &str,
        run_list: &[String],
        settings: &BTreeMap<String, String>,
    ) -> Result<CmContext, EngineError> {
        let password = self.secret(&format!("{}/cm/{}/{}", spec.name, adapter, server.id))?;
        Ok(CmContext {
            deployment: spec.name.to_string(),
            tier: server.tier.clone(),
            server: server.info(),
            server_root: server.root.clone(),
            work_dir: format!("{}/{}", server.root, crate::cm::work_dir(adapter)),
            run_list: run_list.to_vec(),
            settings: settings
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            credentials: vec![Credential {
                name: "validation".into(),
                user: server.name.clone(),
                password,
            }],
        })
    }
}

/// The nodes a load-balancer tier balances: every server of the balanced service's tier, on
/// the balance port's private port.
pub fn proxy_nodes(
    spec: &DeploymentSpec,
    fleet: &Fleet,
    balanced: &str,
    port: &str,
) -> Vec<ProxyNode> {
    let Some(svc) = spec.service(balanced) else {
        return Vec::new();
    };
    let port = svc
        .ports
        .iter()
        .find(|p| p.name.as_str() == port)
        .map(|p| p.private)
        .unwrap_or(0);
    fleet
        .get(svc.tier.as_str())
        .map(|servers| {
            servers
                .iter()
                .map(|s| ProxyNode {
                    server: s.info(),
                    port,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Declared dependencies plus the implicit one of a load balancer's services on what it balances.
pub fn dependencies_of(spec: &DeploymentSpec, svc: &ServiceSpec) -> Vec<(String, DependencyKind)> {
    let mut deps: Vec<(String, DependencyKind)> = svc
        .depends_on
        .iter()
        .map(|d| (d.service.to_string(), d.kind))
        .collect();
    if let Some(tier) = spec.tier(svc.tier.as_str())
        && let Some(b) = &tier.balances
        && !deps.iter().any(|(s, _)| s == b.service.as_str())
    {
        deps.push((b.service.to_string(), DependencyKind::Service));
    }
    deps
}

/// File name of a data source image inside the service directory.
pub fn data_source_file(ds: &stratus_model::spec::DataSourceSpec) -> String {
    ds.image
        .resolved
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "datasource".into())
}
