//! Step 5 of the launch: service packages from cloud files onto every server of their tier,
//! then `install-service`.

use crate::engine::{Engine, EngineError};
use crate::facts::Fleet;
use crate::launch::service_package_dir;
use crate::parallel;
use std::collections::BTreeMap;
use stratus_cloud::PackageRef;
use stratus_model::context::HookCall;
use stratus_model::spec::DeploymentSpec;
use stratus_model::state::ServiceEvent;
use stratus_model::step_key::StepKey;
use stratus_protocol::{AgentRequest, PackageSource};

impl Engine {
    /// What an agent needs to fetch `pkg` from the file endpoint: content addresses only.
    pub(crate) async fn package_source(
        &self,
        pkg: &PackageRef,
    ) -> Result<PackageSource, EngineError> {
        let manifest = self
            .parts
            .files
            .manifest_address(pkg)
            .await
            .map_err(|e| EngineError::Other(format!("cloud files: {e}")))?;
        Ok(PackageSource {
            name: pkg.name.clone(),
            digest: pkg.digest.clone(),
            files: pkg.files,
            manifest: manifest.as_str().to_string(),
        })
    }

    /// Step 5: every service package of a tier onto every server of the tier, then
    /// `install-service`.
    pub(crate) async fn install_services(
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
                            &StepKey::service(&svc.name, &server.id, "download"),
                            AgentRequest::InstallPackage {
                                dest: service_package_dir(svc),
                                package: self.package_source(pkg).await?,
                                plugin: true,
                            },
                        )
                        .await?;
                        let ctx = self.service_context(spec, fleet, svc, server)?;
                        let key = StepKey::service(&svc.name, &server.id, "install-service");
                        self.service_hook(
                            spec,
                            svc,
                            server,
                            &key,
                            HookCall::InstallService { ctx },
                        )
                        .await?;
                        Ok::<_, EngineError>(())
                    };
                    self.failing_marks_service(dep, svc, server, work.await)
                });
            }
        }
        parallel::all(jobs).await?;
        Ok(())
    }
}
