//! The launch, step by step (see docs/architecture.md): scale every tier from 0 to min, prepare and run
//! configuration management, install the service packages, configure services in dependency
//! order with grants for their dependents, join the load balancers' nodes. RUNNING at the end.

use crate::engine::{Engine, EngineError};
use crate::logs::{Component, Subject};
use crate::steps::digest;
use std::collections::BTreeMap;
use stratus_cloud::PackageRef;
use stratus_model::spec::{DeploymentSpec, ServiceSpec};
use stratus_model::step_key::StepKey;

impl Engine {
    /// Launches `spec` (or resumes its launch) until it is RUNNING: a reconcile from nothing.
    pub async fn launch(&self, spec: &DeploymentSpec) -> Result<(), EngineError> {
        let dep = spec.name.as_str();
        self.configure_providers(spec)?;
        self.log_deployment(dep, "launch initiated: deployment LAUNCHING");
        let result = self.reconcile_steps(spec, false).await;
        self.settle(dep, &result)?;
        result
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
    pub(crate) async fn upload_packages(
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
        let files_keys: std::collections::BTreeSet<String> = crate::cm::units(spec)
            .into_iter()
            .filter_map(|u| u.files_key)
            .collect();
        // The step's inputs are the packages' contents, not just their paths: a package fixed
        // after a failed launch is uploaded and installed anew when the operator launches again.
        let mut contents = Vec::with_capacity(wanted.len());
        for (name, path) in &wanted {
            let plugin = !files_keys.contains(name);
            let d = stratus_cloud::CloudFiles::content_digest(path, plugin)
                .await
                .map_err(|e| EngineError::Other(format!("cloud files: {e}")))?;
            contents.push((name, path, d));
        }
        let input = digest(&contents);
        let uploaded = self.upload_step(spec, &wanted, &files_keys, &input).await?;
        let labels = wanted
            .keys()
            .map(|k| {
                (
                    k.clone(),
                    k.strip_prefix("service-").unwrap_or(k).to_string(),
                )
            })
            .collect();
        self.compile_packages(dep, &uploaded, &files_keys, &labels)
            .await?;
        Ok(uploaded)
    }

    /// The journaled upload of step 0.
    async fn upload_step(
        &self,
        spec: &DeploymentSpec,
        wanted: &BTreeMap<String, std::path::PathBuf>,
        files_keys: &std::collections::BTreeSet<String>,
        input: &str,
    ) -> Result<BTreeMap<String, PackageRef>, EngineError> {
        let dep = spec.name.as_str();
        self.step(dep, &StepKey::Upload, input, async {
            let mut out = BTreeMap::new();
            for (name, path) in wanted {
                let files = &self.parts.files;
                let key = format!("{dep}-{name}");
                // CM input files are payload; everything else must be a plugin package.
                let r = if files_keys.contains(name) {
                    files.put_files(&key, path).await
                } else {
                    files.put_package(&key, path).await
                }
                .map_err(|e| EngineError::Other(format!("cloud files: {e}")))?;
                // Only this deployment's servers may fetch it from the file endpoint.
                files
                    .grant_package(dep, &r)
                    .await
                    .map_err(|e| EngineError::Other(format!("cloud files: {e}")))?;
                out.insert(name.clone(), r);
            }
            for svc in spec.services.values() {
                if let Some(ds) = &svc.data_source {
                    let files = &self.parts.files;
                    let file = files
                        .put_file(&data_source_key(dep, svc), &ds.image.resolved)
                        .await
                        .map_err(|e| EngineError::Other(format!("cloud files: {e}")))?;
                    files
                        .grant_file(dep, &file)
                        .await
                        .map_err(|e| EngineError::Other(format!("cloud files: {e}")))?;
                }
            }
            Ok(out)
        })
        .await
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
    if let Some(v) = c.processes {
        put("processes", v.into());
    }
    if let Some(v) = c.disk_mb {
        put("disk-mb", v.into());
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
        ("program-env", &c.program_env),
    ] {
        if let Some(list) = list {
            put(key, serde_json::json!(list));
        }
    }
    (!m.is_empty()).then_some(serde_json::Value::Object(m))
}
