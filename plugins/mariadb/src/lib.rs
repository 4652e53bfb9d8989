//! MariaDB as a Stratus database service: a data directory and the supervised `mariadbd`
//! live in the service directory; grants are by the dependents' IP addresses.

mod admin;
mod client;
mod datadir;
mod layout;
mod server;
mod sql;

use client::Target;
use layout::Layout;
use stratus_plugin_sdk::service::*;

struct MariaDb;

/// The template compiled in, used when the package's `cfg/` is not in the service directory.
const BUILTIN_TEMPLATE: &str = include_str!("../cfg/master.cnf");
const TEMPLATE: &str = "cfg/master.cnf";
const GRANT_TIMEOUT_MS: u32 = 30_000;

/// The running server's admin connection, or a retryable error while it is down.
fn admin(l: &Layout) -> Result<std::path::PathBuf, HookError> {
    if !server::is_running() {
        return Err(HookError::retryable(
            "mariadbd is not running; start the service before changing grants",
        ));
    }
    Ok(l.socket())
}

impl Guest for MariaDb {
    fn install_service(ctx: ServiceContext) -> Result<(), HookError> {
        let dir = Layout::of(&ctx).dir;
        std::fs::create_dir_all(&dir).map_err(|e| files::io_error("creating", &dir, &e))?;
        stratus_plugin_sdk::info!("mariadb service directory {}", dir.display());
        Ok(())
    }

    fn install_data_source(ctx: ServiceContext) -> Result<(), HookError> {
        datadir::install_data_source(&ctx)
    }

    fn configure(ctx: ServiceContext) -> Result<(), HookError> {
        let l = Layout::of(&ctx);
        let path = files::service_path(&ctx, TEMPLATE);
        let text = if path.exists() {
            files::read_to_string(&path)?
        } else {
            BUILTIN_TEMPLATE.to_string()
        };
        sql::address(&ctx.server.address)?;
        layout::socket_arg(&l.socket())?;
        // The listening port is chosen by rule (named `mysql`, else the first), not by name.
        let extra = vec![("mariadb.port".to_string(), layout::port(&ctx).to_string())];
        let cnf = template::render_with(&text, &extra, template::Escaping::None).map_err(|e| {
            HookError::fatal(format!("rendering {}: {}", path.display(), e.message))
        })?;
        l.make_tmpdir()?;
        l.make_private_dir()?;
        files::write(l.my_cnf(), cnf)?;
        stratus_plugin_sdk::info!("wrote {}", l.my_cnf().display());
        Ok(())
    }

    fn start(ctx: ServiceContext) -> Result<(), HookError> {
        server::start(&ctx)
    }

    fn stop(_ctx: ServiceContext) -> Result<(), HookError> {
        server::stop()
    }

    fn grant_database_access(
        ctx: ServiceContext,
        grants: Vec<DatabaseGrant>,
    ) -> Result<(), HookError> {
        for_each_grant(&ctx, &grants, |g| {
            let what = format!(
                "granting `{}` on `{}` to {}",
                g.user,
                g.database,
                g.addresses.join(",")
            );
            Ok((what, sql::grant(g)?))
        })
    }

    fn revoke_database_access(
        ctx: ServiceContext,
        grants: Vec<DatabaseGrant>,
    ) -> Result<(), HookError> {
        for_each_grant(&ctx, &grants, |g| {
            let what = format!("revoking `{}` from {}", g.user, g.addresses.join(","));
            Ok((what, sql::revoke(g)?))
        })
    }

    fn health_check(ctx: ServiceContext) -> Result<HealthReport, HookError> {
        Ok(server::health(&ctx))
    }
}

/// Runs the SQL `statement` builds for each grant, as the admin over the server's socket. An empty
/// list does nothing, even while the server is down.
fn for_each_grant(
    ctx: &ServiceContext,
    grants: &[DatabaseGrant],
    statement: impl Fn(&DatabaseGrant) -> Result<(String, String), HookError>,
) -> Result<(), HookError> {
    if grants.is_empty() {
        return Ok(());
    }
    let l = Layout::of(ctx);
    let socket = admin(&l)?;
    let login = l.admin_cnf();
    let target = Target {
        login: &login,
        socket: &socket,
        database: None,
        timeout_ms: GRANT_TIMEOUT_MS,
    };
    for g in grants {
        let (what, sql) = statement(g)?;
        client::run(&target, &what, sql, &[&g.password])?;
        stratus_plugin_sdk::info!("{what}: done");
    }
    Ok(())
}

stratus_plugin_sdk::export_service!(MariaDb);
