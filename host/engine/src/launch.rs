//! The launch, step by step (DESIGN.md §2): scale every tier from 0 to min, prepare and run
//! configuration management, install the service packages, configure services in dependency
//! order with grants for their dependents, join the load balancers' nodes. RUNNING at the end.

use crate::engine::{Engine, EngineError};
use crate::facts::{Fleet, Server, data_source_file, proxy_nodes};
use crate::logs::{Component, Subject};
use crate::steps::digest;
use futures::future::try_join_all;
use std::collections::BTreeMap;
use std::time::Duration;
use stratus_cloud::PackageRef;
use stratus_model::context::HookCall;
use stratus_model::spec::{DeploymentSpec, ServiceSpec, TierSpec};
use stratus_model::state::{AgentEvent, AgentState, DeploymentEvent, ServiceEvent};
use stratus_protocol::{AgentRequest, PackageSource};
use stratus_provider::LaunchRequest;
use stratus_store::ServerRow;

/// How long an agent may take from process start to handshake.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(60);

impl Engine {
    /// Launches `spec` (or resumes its launch) until it is RUNNING.
    pub async fn launch(&self, spec: &DeploymentSpec) -> Result<(), EngineError> {
        let dep = spec.name.as_str();
        let result = self.launch_steps(spec).await;
        match &result {
            Ok(()) => {
                self.deployment_event(dep, DeploymentEvent::AllServicesRunning)?;
                self.log_deployment(dep, "deployment RUNNING");
            }
            Err(e) => {
                let reason = e.to_string();
                self.deployment_event(dep, DeploymentEvent::Failed(reason.clone()))?;
                self.parts.logs.error(
                    Component::MonitorDeployment,
                    Subject {
                        deployment: Some(dep),
                        ..Subject::default()
                    },
                    &format!("deployment FAILED: {reason}"),
                );
            }
        }
        result
    }

    async fn launch_steps(&self, spec: &DeploymentSpec) -> Result<(), EngineError> {
        let dep = spec.name.as_str();
        self.log_deployment(dep, "launch initiated: deployment LAUNCHING");
        let packages = self.upload_packages(spec).await?;
        let fleet = &self.scale_up(spec).await?;
        self.run_cm(spec, fleet, &packages).await?;
        self.install_services(spec, fleet, &packages).await?;
        for layer in stratus_model::plan::Plan::new(spec).layers {
            try_join_all(layer.iter().map(|name| async move {
                let svc = spec.service(name.as_ref()).ok_or_else(|| {
                    EngineError::Other(format!("plan names unknown service {name}"))
                })?;
                self.configure_service(spec, fleet, svc).await
            }))
            .await?;
        }
        self.start_proxies(spec, fleet).await?;
        Ok(())
    }

    pub(crate) fn log_deployment(&self, dep: &str, message: &str) {
        self.parts.logs.info(
            Component::MonitorDeployment,
            Subject {
                deployment: Some(dep),
                ..Subject::default()
            },
            message,
        );
    }

    /// Step 0: every package, data source and CM adapter goes into cloud files once.
    async fn upload_packages(
        &self,
        spec: &DeploymentSpec,
    ) -> Result<BTreeMap<String, PackageRef>, EngineError> {
        let dep = spec.name.as_str();
        let mut wanted: BTreeMap<String, std::path::PathBuf> = BTreeMap::new();
        for svc in spec.services.values() {
            wanted.insert(
                format!("service-{}", svc.name),
                svc.package.path.resolved.clone(),
            );
        }
        for unit in crate::cm::units(spec) {
            wanted.insert(unit.package_key.clone(), unit.package.clone());
            if let (Some(key), Some(files)) = (&unit.files_key, &unit.files) {
                wanted.insert(key.clone(), files.clone());
            }
        }
        let input = digest(&wanted);
        self.step(dep, "cloud-files/upload", &input, async {
            let mut out = BTreeMap::new();
            for (name, path) in &wanted {
                let r = self
                    .parts
                    .files
                    .put_package(&format!("{dep}-{name}"), path)
                    .await
                    .map_err(|e| EngineError::Other(format!("cloud files: {e}")))?;
                out.insert(name.clone(), r);
            }
            for svc in spec.services.values() {
                if let Some(ds) = &svc.data_source {
                    self.parts
                        .files
                        .put_file(&data_source_key(dep, svc), &ds.image.resolved)
                        .await
                        .map_err(|e| EngineError::Other(format!("cloud files: {e}")))?;
                }
            }
            Ok(out)
        })
        .await
    }

    /// Steps 1–2: one scaling event per tier (0 → min); servers start and agents handshake.
    async fn scale_up(&self, spec: &DeploymentSpec) -> Result<Fleet, EngineError> {
        let tiers = try_join_all(spec.tiers.values().map(|tier| async move {
            let dep = spec.name.as_str();
            let subject = Subject {
                deployment: Some(dep),
                tier: Some(tier.name.as_str()),
                ..Subject::default()
            };
            self.parts.logs.info(
                Component::MonitorScalingEvent,
                subject.clone(),
                &format!("scaling event: tier {} 0 -> {}", tier.name, tier.min),
            );
            let servers =
                try_join_all((1..=tier.min).map(|n| self.launch_server(spec, tier, n))).await?;
            self.parts.logs.info(
                Component::MonitorScalingEvent,
                subject,
                &format!(
                    "scaling event done: tier {} has {} server(s)",
                    tier.name,
                    servers.len()
                ),
            );
            Ok::<_, EngineError>((tier.name.to_string(), servers))
        }))
        .await?;
        Ok(tiers.into_iter().collect())
    }

    async fn launch_server(
        &self,
        spec: &DeploymentSpec,
        tier: &TierSpec,
        n: u32,
    ) -> Result<Server, EngineError> {
        let dep = spec.name.as_str();
        let id = format!("{}-{n}", tier.name);
        let name = format!("{dep}-{}-{n}", tier.name);
        let key = format!("server/{id}/launch");
        let subject = Subject {
            deployment: Some(dep),
            tier: Some(tier.name.as_str()),
            server: Some(&id),
            ..Subject::default()
        };
        let server = self
            .step(dep, &key, &digest(&(&id, &tier.launch.provider)), async {
                // A launch cut short may have left a live agent: adopt it instead of a twin.
                if let Some(row) = self.parts.store.server::<AgentState>(dep, &id)?
                    && let Some(pid) = row.pid
                    && self.parts.provider.is_alive(&launched_of(&row, pid))
                {
                    return Ok(server_from_row(&row, pid));
                }
                self.parts.logs.info(
                    Component::ScalingWorker,
                    subject.clone(),
                    &format!(
                        "launching server {name} on provider {}",
                        tier.launch.provider
                    ),
                );
                let credential = stratus_cloud::random_token();
                let credential_digest = stratus_cloud::digest(&credential);
                let credential = credential.expose().to_string();
                self.parts
                    .agents
                    .expect(dep, &id, credential_digest.clone())
                    .await;
                let launched = self
                    .parts
                    .provider
                    .launch(LaunchRequest {
                        deployment: dep.to_string(),
                        server_id: id.clone(),
                        server_name: name.clone(),
                        control_addr: self.parts.control_addr,
                        credential,
                        agent_args: self.parts.agent_args.clone(),
                    })
                    .await
                    .map_err(|e| EngineError::Provider {
                        step: key.clone(),
                        message: e.to_string(),
                    })?;
                let server = Server {
                    id: id.clone(),
                    name: name.clone(),
                    tier: tier.name.to_string(),
                    address: launched.address.to_string(),
                    root: launched.root.to_string_lossy().into_owned(),
                    pid: launched.pid,
                };
                self.parts.store.upsert_server(&ServerRow {
                    deployment: dep.to_string(),
                    id: id.clone(),
                    tier: tier.name.to_string(),
                    name: name.clone(),
                    address: server.address.clone(),
                    root: server.root.clone(),
                    pid: Some(server.pid),
                    agent_state: AgentState::Starting,
                    credential_digest,
                })?;
                self.parts.logs.info(
                    Component::MonitorServer,
                    subject.clone(),
                    &format!(
                        "discovered server {name} at {} (pid {}): agent STARTING",
                        server.address, server.pid
                    ),
                );
                Ok(server)
            })
            .await?;
        if let Some(row) = self.parts.store.server::<AgentState>(dep, &id)? {
            self.parts
                .agents
                .expect(dep, &id, row.credential_digest)
                .await;
        }
        self.parts
            .agents
            .wait_connected(dep, &id, HANDSHAKE_LIMIT)
            .await
            .map_err(|source| EngineError::Link {
                step: format!("server/{id}/handshake"),
                source,
            })?;
        self.agent_event(dep, &id, AgentEvent::Handshake)?;
        self.parts
            .logs
            .info(Component::MonitorServer, subject, "agent RUNNING");
        for svc in spec.services_of(tier.name.as_str()) {
            self.service_created(dep, svc, &id)?;
        }
        Ok(server)
    }

    pub(crate) fn package_source(&self, pkg: &PackageRef) -> PackageSource {
        PackageSource {
            store: self.parts.cloud_files_dir.to_string_lossy().into_owned(),
            name: pkg.name.clone(),
            digest: pkg.digest.clone(),
            files: pkg.files,
        }
    }

    /// Step 5: every service package of a tier onto every server of the tier, then
    /// `install-service`.
    async fn install_services(
        &self,
        spec: &DeploymentSpec,
        fleet: &Fleet,
        packages: &BTreeMap<String, PackageRef>,
    ) -> Result<(), EngineError> {
        let dep = spec.name.as_str();
        let mut jobs = Vec::new();
        for svc in spec.services.values() {
            let pkg = &packages[&format!("service-{}", svc.name)];
            for server in fleet.get(svc.tier.as_str()).into_iter().flatten() {
                jobs.push(async move {
                    let work = async {
                        self.service_event(dep, svc, &server.id, ServiceEvent::Start)?;
                        self.agent_request(
                            dep,
                            server,
                            &format!("service/{}/{}/download", svc.name, server.id),
                            AgentRequest::InstallPackage {
                                dest: service_package_dir(svc),
                                package: self.package_source(pkg),
                            },
                        )
                        .await?;
                        let ctx = self.service_context(spec, fleet, svc, server)?;
                        let key = format!("service/{}/{}/install-service", svc.name, server.id);
                        self.hook(
                            dep,
                            server,
                            &key,
                            &service_package_dir(svc),
                            caps(svc),
                            HookCall::InstallService { ctx },
                        )
                        .await?;
                        Ok::<_, EngineError>(())
                    };
                    self.failing_marks_service(dep, svc, server, work.await)
                });
            }
        }
        try_join_all(jobs).await?;
        Ok(())
    }

    /// Steps 6–7 for one service: data source, grants on the databases it uses, configure,
    /// stop, start on every server of its tier.
    async fn configure_service(
        &self,
        spec: &DeploymentSpec,
        fleet: &Fleet,
        svc: &ServiceSpec,
    ) -> Result<(), EngineError> {
        let dep = spec.name.as_str();
        let servers = fleet.get(svc.tier.as_str()).cloned().unwrap_or_default();
        // Grants first, so that a dependent can connect the moment it starts.
        for d in svc
            .depends_on
            .iter()
            .filter(|d| d.kind == stratus_model::context::DependencyKind::DataSource)
        {
            let Some(db) = spec.service(d.service.as_str()) else {
                continue;
            };
            self.grant_access(spec, fleet, db).await?;
        }
        try_join_all(servers.iter().map(|server| async move {
            let work = self.configure_on(spec, fleet, svc, server);
            self.failing_marks_service(dep, svc, server, work.await)
        }))
        .await?;
        Ok(())
    }

    /// Steps 6–7 of one service on one server.
    async fn configure_on(
        &self,
        spec: &DeploymentSpec,
        fleet: &Fleet,
        svc: &ServiceSpec,
        server: &Server,
    ) -> Result<(), EngineError> {
        let dep = spec.name.as_str();
        {
            let ctx = self.service_context(spec, fleet, svc, server)?;
            let base = format!("service/{}/{}", svc.name, server.id);
            if let Some(ds) = &svc.data_source {
                self.agent_request(
                    dep,
                    server,
                    &format!("{base}/fetch-data-source"),
                    AgentRequest::FetchFile {
                        store: self.parts.cloud_files_dir.to_string_lossy().into_owned(),
                        key: data_source_key(dep, svc),
                        dest: format!("mnt/services/a{}/{}", svc.id, data_source_file(ds)),
                    },
                )
                .await?;
                self.hook(
                    dep,
                    server,
                    &format!("{base}/install-data-source"),
                    &service_package_dir(svc),
                    caps(svc),
                    HookCall::InstallDataSource { ctx: ctx.clone() },
                )
                .await?;
            }
            for (hook, call) in [
                ("configure", HookCall::Configure { ctx: ctx.clone() }),
                ("stop", HookCall::Stop { ctx: ctx.clone() }),
                ("start", HookCall::Start { ctx: ctx.clone() }),
            ] {
                self.hook(
                    dep,
                    server,
                    &format!("{base}/{hook}"),
                    &service_package_dir(svc),
                    caps(svc),
                    call,
                )
                .await?;
            }
            self.service_event(dep, svc, &server.id, ServiceEvent::Started)?;
            Ok(())
        }
    }

    /// A failed step leaves its service FAILED with the reason, then passes the error on.
    pub(crate) fn failing_marks_service(
        &self,
        dep: &str,
        svc: &ServiceSpec,
        server: &Server,
        result: Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        if let Err(e) = &result {
            self.service_event(dep, svc, &server.id, ServiceEvent::Failed(e.to_string()))?;
        }
        result
    }

    /// `grant-database-access` on every server of `db` for all its data-source dependents.
    async fn grant_access(
        &self,
        spec: &DeploymentSpec,
        fleet: &Fleet,
        db: &ServiceSpec,
    ) -> Result<(), EngineError> {
        let dep = spec.name.as_str();
        let grants = self.grants_for(spec, fleet, db)?;
        let servers = fleet.get(db.tier.as_str()).cloned().unwrap_or_default();
        try_join_all(servers.iter().map(|server| {
            let grants = grants.clone();
            async move {
                let ctx = self.service_context(spec, fleet, db, server)?;
                let key = format!("service/{}/{}/grant-database-access", db.name, server.id);
                self.hook(
                    dep,
                    server,
                    &key,
                    &service_package_dir(db),
                    caps(db),
                    HookCall::GrantDatabaseAccess { ctx, grants },
                )
                .await
                .map(|_| ())
            }
        }))
        .await?;
        Ok(())
    }

    /// Step 8: each load balancer's services learn exactly the balanced nodes.
    async fn start_proxies(&self, spec: &DeploymentSpec, fleet: &Fleet) -> Result<(), EngineError> {
        let dep = spec.name.as_str();
        let mut jobs = Vec::new();
        for tier in spec.tiers.values() {
            let Some(b) = &tier.balances else { continue };
            let nodes = proxy_nodes(spec, fleet, b.service.as_str(), b.port.as_str());
            for svc in spec.services_of(tier.name.as_str()) {
                for server in fleet.get(tier.name.as_str()).into_iter().flatten() {
                    let nodes = nodes.clone();
                    jobs.push(async move {
                        let ctx = self.service_context(spec, fleet, svc, server)?;
                        let key = format!("service/{}/{}/start-proxy", svc.name, server.id);
                        self.hook(
                            dep,
                            server,
                            &key,
                            &service_package_dir(svc),
                            caps(svc),
                            HookCall::StartProxy { ctx, nodes },
                        )
                        .await
                        .map(|_| ())
                    });
                }
            }
        }
        try_join_all(jobs).await?;
        Ok(())
    }
}

/// Where a service's package lives, relative to the server root.
pub fn service_package_dir(svc: &ServiceSpec) -> String {
    format!("mnt/services/a{}", svc.id)
}

/// The cloud-files key of a service's data source image.
pub fn data_source_key(dep: &str, svc: &ServiceSpec) -> String {
    format!("data-sources/{dep}/{}", svc.name)
}

/// The operator's narrowing of a service's capabilities, in the plugin runtime's
/// `CapabilityOverride` shape (kebab-case keys; a directory is `dir` or `dir:access`).
pub(crate) fn caps(svc: &ServiceSpec) -> Option<serde_json::Value> {
    let c = &svc.capabilities;
    let mut m = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        m.insert(k.to_string(), v);
    };
    if let Some(v) = c.memory_mb {
        put("memory-mb", v.into());
    }
    if let Some(v) = c.timeout_ms {
        put("timeout-ms", v.into());
    }
    if let Some(v) = c.output_bytes {
        put("output-bytes", v.into());
    }
    if let Some(dirs) = &c.dirs {
        let grants = dirs
            .iter()
            .map(|d| {
                let (dir, access) = d.split_once(':').unwrap_or((d.as_str(), "read-write"));
                serde_json::json!({ "dir": dir, "access": access })
            })
            .collect();
        put("dirs", serde_json::Value::Array(grants));
    }
    for (key, list) in [
        ("programs", &c.programs),
        ("network", &c.network),
        ("env", &c.env),
    ] {
        if let Some(list) = list {
            put(key, serde_json::json!(list));
        }
    }
    (!m.is_empty()).then_some(serde_json::Value::Object(m))
}

/// The provider's view of a server recorded in the store.
pub(crate) fn launched_of(
    row: &ServerRow<AgentState>,
    pid: u32,
) -> stratus_provider::LaunchedServer {
    stratus_provider::LaunchedServer {
        server_id: row.id.clone(),
        address: row.address.parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST),
        root: row.root.clone().into(),
        pid,
    }
}

pub(crate) fn server_from_row(row: &ServerRow<AgentState>, pid: u32) -> Server {
    Server {
        id: row.id.clone(),
        name: row.name.clone(),
        tier: row.tier.clone(),
        address: row.address.clone(),
        root: row.root.clone(),
        pid,
    }
}
