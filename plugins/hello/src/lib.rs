//! The smallest useful service plugin: renders `cfg/hello.conf` into `hello.conf` and records
//! every hook call in `hooks.log` so tests can count runs (scheduled health checks go to
//! `health.log` instead, so `hooks.log` stays the lifecycle's). Setting `write = "false"` makes `configure` touch no
//! files at all, which is what the sandbox-overhead benchmark measures.

use stratus_plugin_sdk::service::*;

struct Hello;

/// The template compiled in, used when `write = "false"` so configure does no IO at all.
const BUILTIN_TEMPLATE: &str = include_str!("../cfg/hello.conf");

/// `<service_dir>/cfg/hello.conf` when the package was unpacked there (the normal case), else
/// the template compiled in, so a bare `plugin call` on an empty directory still works.
fn template_text(ctx: &ServiceContext) -> Result<String, HookError> {
    let path = files::service_path(ctx, "cfg/hello.conf");
    if path.exists() {
        files::read_to_string(&path)
    } else {
        Ok(BUILTIN_TEMPLATE.to_string())
    }
}

/// Appends `line` to `<service_dir>/hooks.log`: one line per hook call.
fn record(ctx: &ServiceContext, line: &str) -> Result<(), HookError> {
    files::append_line(files::service_path(ctx, "hooks.log"), line)
}

fn record_grants(
    ctx: &ServiceContext,
    verb: &str,
    grants: &[DatabaseGrant],
) -> Result<(), HookError> {
    let log = files::service_path(ctx, "grants.log");
    for g in grants {
        // The password is deliberately absent: grants.log is a plain file anyone may read.
        let line = format!(
            "{verb} service={} database={} user={} addresses={}",
            g.service,
            g.database,
            g.user,
            g.addresses.join(",")
        );
        files::append_line(&log, &line)?;
    }
    Ok(())
}

impl Guest for Hello {
    fn install_service(ctx: ServiceContext) -> Result<(), HookError> {
        record(&ctx, "install-service")
    }

    fn install_data_source(ctx: ServiceContext) -> Result<(), HookError> {
        let line = match &ctx.data_source {
            Some(ds) => format!(
                "install-data-source database={} image={}",
                ds.database, ds.image_path
            ),
            None => "install-data-source none".to_string(),
        };
        stratus_plugin_sdk::info!("{line}");
        record(&ctx, &line)
    }

    fn configure(ctx: ServiceContext) -> Result<(), HookError> {
        // A default keeps `stratus plugin call plugins/hello configure` working without a context.
        let mut extra = Vec::new();
        if setting(&ctx, "greeting").is_none() {
            extra.push(("setting.greeting".to_string(), "hello".to_string()));
        }
        if setting(&ctx, "write") == Some("false") {
            template::render_with(BUILTIN_TEMPLATE, &extra, template::Escaping::None)?;
            return Ok(());
        }
        let text = template::render_with(&template_text(&ctx)?, &extra, template::Escaping::None)
            .map_err(|e| {
            HookError::fatal(format!("rendering cfg/hello.conf: {}", e.message))
        })?;
        let out = files::service_path(&ctx, "hello.conf");
        files::write(&out, text)?;
        log::info(&format!("wrote {}", out.display()));
        record(&ctx, "configure")
    }

    fn start(ctx: ServiceContext) -> Result<(), HookError> {
        record(&ctx, "start")
    }

    fn stop(ctx: ServiceContext) -> Result<(), HookError> {
        record(&ctx, "stop")
    }

    fn grant_database_access(
        ctx: ServiceContext,
        grants: Vec<DatabaseGrant>,
    ) -> Result<(), HookError> {
        record_grants(&ctx, "grant", &grants)?;
        record(&ctx, "grant-database-access")
    }

    fn revoke_database_access(
        ctx: ServiceContext,
        grants: Vec<DatabaseGrant>,
    ) -> Result<(), HookError> {
        record_grants(&ctx, "revoke", &grants)?;
        record(&ctx, "revoke-database-access")
    }

    fn health_check(ctx: ServiceContext) -> Result<HealthReport, HookError> {
        // Not in hooks.log: checks run on a schedule, and hooks.log counts lifecycle runs.
        files::append_line(files::service_path(&ctx, "health.log"), "health-check")?;
        let conf = files::service_path(&ctx, "hello.conf");
        Ok(if conf.exists() {
            HealthReport {
                status: HealthStatus::Ok,
                message: "hello.conf present".into(),
            }
        } else {
            HealthReport {
                status: HealthStatus::Critical,
                message: "hello.conf missing".into(),
            }
        })
    }
}

stratus_plugin_sdk::export_service!(Hello);
