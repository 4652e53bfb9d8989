//! The three-tier example's application service: renders `greeter.toml` from the context (its
//! own address and `http` port, the data-source dependency's address, port, credential and
//! database) and runs the greeter binary shipped in the package (`bin/greeter`) under the
//! supervisor.

use stratus_plugin_sdk::service::*;

struct App;

/// Supervisor name of the greeter process.
const PROCESS: &str = "greeter";
/// The greeter binary inside the service directory (allowed as `service:bin/greeter`).
const BINARY: &str = "bin/greeter";
/// Used when the package's `cfg/` was not unpacked (a bare `plugin call`).
const BUILTIN_TEMPLATE: &str = include_str!("../cfg/greeter.toml");
/// How long `start` waits for the port; below the manifest's 20 s hook timeout.
const START_WAIT_MS: u32 = 15_000;

/// The port the greeter listens on: the one named `http`, else the first.
fn http_port(ctx: &ServiceContext) -> Result<u16, HookError> {
    let port = ctx
        .ports
        .iter()
        .find(|p| p.name == "http")
        .or(ctx.ports.first());
    port.map(|p| p.private_port)
        .ok_or_else(|| HookError::fatal("the app service declares no port (expected `http`)"))
}

/// Template variables beyond the context's: `db.*` from the data-source dependency, and the
/// `http` port (or the first) as `port.http.private`.
fn extra_vars(ctx: &ServiceContext) -> Result<Vec<(String, String)>, HookError> {
    let dep = ctx
        .dependencies
        .iter()
        .find(|d| d.kind == DependencyKind::DataSource)
        .ok_or_else(|| HookError::fatal("the app service has no data-source dependency"))?;
    let missing = |what: &str| HookError::fatal(format!("dependency {}: no {what}", dep.service));
    let server = dep.servers.first().ok_or_else(|| missing("server"))?;
    let port = dep
        .ports
        .iter()
        .find(|p| p.name == "mysql")
        .or(dep.ports.first());
    let port = port.ok_or_else(|| missing("port"))?;
    let cred = dep
        .credentials
        .first()
        .ok_or_else(|| missing("credential"))?;
    let database = dep.database.as_ref().ok_or_else(|| missing("database"))?;
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    Ok(vec![
        pair("port.http.private", &http_port(ctx)?.to_string()),
        pair("db.host", &server.address),
        pair("db.port", &port.public_port.to_string()),
        pair("db.user", &cred.user),
        pair("db.password", &cred.password),
        pair("db.name", database),
    ])
}

fn binary_present(ctx: &ServiceContext) -> Result<(), HookError> {
    let bin = files::service_path(ctx, BINARY);
    if bin.is_file() {
        Ok(())
    } else {
        Err(HookError::fatal(format!(
            "{} is missing: the package must ship the greeter binary",
            bin.display()
        )))
    }
}

fn running(name: &str) -> Option<u32> {
    match host::query_process(name) {
        host::ProcessState::Running(pid) => Some(pid),
        _ => None,
    }
}

impl Guest for App {
    fn install_service(ctx: ServiceContext) -> Result<(), HookError> {
        binary_present(&ctx)
    }

    fn install_data_source(_ctx: ServiceContext) -> Result<(), HookError> {
        Ok(())
    }

    fn configure(ctx: ServiceContext) -> Result<(), HookError> {
        let path = files::service_path(&ctx, "cfg/greeter.toml");
        let template = if path.exists() {
            files::read_to_string(&path)?
        } else {
            BUILTIN_TEMPLATE.to_string()
        };
        // The template splices every value into a TOML string.
        let escaping = template::Escaping::TomlString;
        let text = template::render_with(&template, &extra_vars(&ctx)?, escaping)
            .map_err(|e| HookError::fatal(format!("rendering cfg/greeter.toml: {}", e.message)))?;
        let out = files::service_path(&ctx, "greeter.toml");
        files::write(&out, text)?;
        log::info(&format!("wrote {}", out.display()));
        Ok(())
    }

    fn start(ctx: ServiceContext) -> Result<(), HookError> {
        binary_present(&ctx)?;
        let port = http_port(&ctx)?;
        if running(PROCESS).is_none() {
            let spec = host::ProcessSpec {
                name: PROCESS.into(),
                program: files::service_path(&ctx, BINARY).display().to_string(),
                args: vec![
                    "--config".into(),
                    files::service_path(&ctx, "greeter.toml")
                        .display()
                        .to_string(),
                ],
                env: vec![],
                working_dir: None,
            };
            let pid = host::spawn(&spec).map_err(HookError::fatal)?;
            log::info(&format!("started greeter (pid {pid})"));
        }
        let up = host::wait_for_port(&ctx.server.address, port, START_WAIT_MS)
            .map_err(HookError::fatal)?;
        if up {
            return Ok(());
        }
        // Exited: its log (the supervisor's) says why, e.g. a bad config or a taken port.
        Err(match host::query_process(PROCESS) {
            host::ProcessState::Exited(code) => HookError::fatal(format!(
                "greeter exited (code {code:?}) before {}:{port} accepted; see its process log",
                ctx.server.address
            )),
            _ => HookError::retryable(format!(
                "greeter is running but {}:{port} does not accept connections yet",
                ctx.server.address
            )),
        })
    }

    fn stop(_ctx: ServiceContext) -> Result<(), HookError> {
        host::stop_process(PROCESS, 5_000).map_err(HookError::fatal)
    }

    fn grant_database_access(_: ServiceContext, _: Vec<DatabaseGrant>) -> Result<(), HookError> {
        Ok(())
    }

    fn revoke_database_access(_: ServiceContext, _: Vec<DatabaseGrant>) -> Result<(), HookError> {
        Ok(())
    }

    fn health_check(ctx: ServiceContext) -> Result<HealthReport, HookError> {
        let port = http_port(&ctx)?;
        let (status, message) = match running(PROCESS) {
            None => (HealthStatus::Critical, "greeter is not running".to_string()),
            Some(pid) => match host::wait_for_port(&ctx.server.address, port, 1_000) {
                Ok(true) => (
                    HealthStatus::Ok,
                    format!("greeter (pid {pid}) accepts on port {port}"),
                ),
                Ok(false) => (
                    HealthStatus::Critical,
                    format!("greeter (pid {pid}) runs but port {port} does not accept"),
                ),
                Err(e) => (HealthStatus::Unknown, e),
            },
        };
        Ok(HealthReport { status, message })
    }
}

stratus_plugin_sdk::export_service!(App);
