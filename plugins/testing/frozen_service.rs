// The hooks of the frozen-contract test plugins (legacy-0.1.0, future-0.2.0), included by
// each: `generate!` reads the including crate's own `wit/`, and each crate sets `BUILT_FOR`.

wit_bindgen::generate!({ world: "service", path: "wit" });

use exports::stratus::plugin::service_hooks::Guest;
use stratus::plugin::host::{Level, log};
use stratus::plugin::types::{
    DatabaseGrant, HealthReport, HealthStatus, HookError, ServiceContext,
};

struct Frozen;

impl Guest for Frozen {
    fn install_service(_: ServiceContext) -> Result<(), HookError> {
        Ok(())
    }
    fn install_data_source(_: ServiceContext) -> Result<(), HookError> {
        Ok(())
    }
    fn configure(ctx: ServiceContext) -> Result<(), HookError> {
        log(
            Level::Info,
            &format!("built for stratus:plugin@{BUILT_FOR}"),
        );
        let path = std::path::Path::new(&ctx.service_dir).join("version.txt");
        std::fs::write(&path, BUILT_FOR).map_err(|e| HookError {
            message: format!("writing {}: {e}", path.display()),
            retryable: false,
        })
    }
    fn start(_: ServiceContext) -> Result<(), HookError> {
        Ok(())
    }
    fn stop(_: ServiceContext) -> Result<(), HookError> {
        Ok(())
    }
    fn grant_database_access(_: ServiceContext, _: Vec<DatabaseGrant>) -> Result<(), HookError> {
        Ok(())
    }
    fn revoke_database_access(_: ServiceContext, _: Vec<DatabaseGrant>) -> Result<(), HookError> {
        Ok(())
    }
    fn health_check(_: ServiceContext) -> Result<HealthReport, HookError> {
        Ok(HealthReport {
            status: HealthStatus::Ok,
            message: BUILT_FOR.into(),
        })
    }
}

export!(Frozen);
