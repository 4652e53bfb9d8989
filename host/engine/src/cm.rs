//! Steps 3–4 of the launch: configuration management. A tier's launch configuration names a
//! CM adapter (Chef, Puppet, Ansible … as cm-world components) and/or a script personality
//! (components run in order). Each becomes a *unit* run on every new server: its component and
//! input files are fetched from cloud files into its work dir `var/lib/stratus/cm/<unit>/`
//! (outside the agent-private `agent/`, which no grant covers), its credentials are written
//! there with mode 0600 for this server only, `prepare` and `run` are called, and the
//! credential files are erased afterwards, whatever the outcome.

use crate::engine::{Engine, EngineError};
use crate::facts::{Fleet, Server};
use crate::logs::{Component, Subject};
use crate::parallel;
use std::collections::BTreeMap;
use std::path::PathBuf;
use stratus_cloud::PackageRef;
use stratus_model::context::HookCall;
use stratus_model::spec::DeploymentSpec;
use stratus_model::step_key::StepKey;
use stratus_protocol::{AgentRequest, HookResult};

/// One CM component to run on the servers of a tier.
#[derive(Debug, Clone)]
pub struct CmUnit {
    pub tier: String,
    /// Directory name under [`CM_WORK`] and the adapter name the context carries.
    pub name: String,
    pub package: PathBuf,
    pub package_key: String,
    pub files: Option<PathBuf>,
    pub files_key: Option<String>,
    pub run_list: Vec<String>,
    pub settings: BTreeMap<String, String>,
    /// The operator's `run-as` narrowing of the adapter.
    pub run_as: Option<stratus_model::plugin::capabilities::RunAs>,
}

/// Every CM unit of the deployment, per tier in run order: the adapter first, then the
/// personality's components.
pub fn units(spec: &DeploymentSpec) -> Vec<CmUnit> {
    let mut out = Vec::new();
    for tier in spec.tiers.values() {
        if let Some(cm) = &tier.launch.cm {
            out.push(CmUnit {
                tier: tier.name.to_string(),
                name: cm.adapter.to_string(),
                package: cm.package.path.resolved.clone(),
                package_key: format!("cm-{}", tier.name),
                files: cm.files.as_ref().map(|f| f.resolved.clone()),
                files_key: cm.files.as_ref().map(|_| format!("cm-files-{}", tier.name)),
                run_list: cm.run_list.clone(),
                settings: cm.settings.clone(),
                run_as: cm.run_as,
            });
        }
        let personality = tier
            .launch
            .personality
            .as_ref()
            .and_then(|p| spec.personalities.get(p));
        if let Some(p) = personality {
            for (i, component) in p.components.iter().enumerate() {
                let name = format!("{}-{}", p.name, i + 1);
                out.push(CmUnit {
                    tier: tier.name.to_string(),
                    name: name.clone(),
                    package: component.path.resolved.clone(),
                    package_key: format!("personality-{name}"),
                    files: None,
                    files_key: None,
                    run_list: Vec::new(),
                    settings: BTreeMap::new(),
                    // Never root, even if the component changed since validation refused it.
                    run_as: Some(stratus_model::plugin::capabilities::RunAs::ProgramUser),
                });
            }
        }
    }
    out
}

/// Where CM units' work dirs live, relative to the server root.
pub const CM_WORK: &str = "var/lib/stratus/cm";

/// A unit's work dir relative to the server root.
pub fn work_dir(unit: &str) -> String {
    format!("{CM_WORK}/{unit}")
}

/// A secret as a PEM-armoured key file, the form CM tools expect their credentials in.
fn pem(secret: &str) -> String {
    format!("-----BEGIN STRATUS KEY-----\n{secret}\n-----END STRATUS KEY-----\n")
}

impl Engine {
    /// Runs every CM unit on every server of its tier; the units of one server run in order,
    /// servers in parallel.
    pub(crate) async fn run_cm(
        &self,
        spec: &DeploymentSpec,
        fleet: &Fleet,
        packages: &BTreeMap<String, PackageRef>,
    ) -> Result<(), EngineError> {
        let units = units(spec);
        let jobs = fleet.values().flatten().map(|server| {
            let mine: Vec<&CmUnit> = units.iter().filter(|u| u.tier == server.tier).collect();
            async move {
                for unit in mine {
                    self.run_unit(spec, server, unit, packages).await?;
                }
                Ok::<_, EngineError>(())
            }
        });
        parallel::all(jobs).await?;
        Ok(())
    }

    async fn run_unit(
        &self,
        spec: &DeploymentSpec,
        server: &Server,
        unit: &CmUnit,
        packages: &BTreeMap<String, PackageRef>,
    ) -> Result<(), EngineError> {
        let dep = spec.name.as_str();
        let base = work_dir(&unit.name);
        let step = |action: &'static str| StepKey::Cm {
            server: server.id.clone(),
            unit: unit.name.clone(),
            action: action.into(),
        };
        let ctx = self.cm_context(spec, server, &unit.name, &unit.run_list, &unit.settings)?;
        let fetch = AgentRequest::InstallPackage {
            dest: format!("{base}/package"),
            package: self.package_source(&packages[&unit.package_key]).await?,
            plugin: true,
        };
        self.agent_request(dep, server, &step("fetch"), fetch)
            .await?;
        if let Some(key) = &unit.files_key {
            let files = AgentRequest::InstallPackage {
                dest: format!("{base}/files"),
                package: self.package_source(&packages[key]).await?,
                plugin: false,
            };
            self.agent_request(dep, server, &step("fetch-files"), files)
                .await?;
        }
        let credential_files: Vec<String> = ctx
            .credentials
            .iter()
            .map(|c| format!("{base}/{}.pem", c.name))
            .collect();
        for (c, dest) in ctx.credentials.iter().zip(&credential_files) {
            // Not journaled: the file must exist for whichever run of prepare/run happens now.
            let write = AgentRequest::WriteFile {
                dest: dest.clone(),
                contents: pem(&c.password),
                mode: 0o600,
            };
            self.send_untracked(dep, server, &step("credentials"), write)
                .await?;
        }
        let package_dir = format!("{base}/package");
        let mut result = Ok(());
        for (hook, call) in [
            ("prepare", HookCall::CmPrepare { ctx: ctx.clone() }),
            ("run", HookCall::CmRun { ctx: ctx.clone() }),
        ] {
            match self
                .hook(
                    dep,
                    server,
                    &step(hook),
                    &package_dir,
                    unit.run_as
                        .map(|r| serde_json::json!({ "run-as": r.to_string() })),
                    call,
                )
                .await
            {
                Ok(report) => {
                    if let HookResult::Cm { report } = &report.outcome {
                        self.parts.logs.info(
                            Component::ConfigurationWorker,
                            Subject {
                                deployment: Some(dep),
                                tier: Some(&server.tier),
                                server: Some(&server.id.to_string()),
                                ..Subject::default()
                            },
                            &format!(
                                "configuration management {} on {}: {}",
                                unit.name, server.id, report.summary
                            ),
                        );
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        // Credentials are erased after the run, as enStratus did, even when it failed.
        let erase = AgentRequest::RemoveFiles {
            paths: credential_files,
        };
        self.send_untracked(dep, server, &step("erase-credentials"), erase)
            .await?;
        result
    }
}
