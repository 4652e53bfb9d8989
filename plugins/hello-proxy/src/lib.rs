//! A load balancer that balances nothing: `start-proxy` writes the nodes it was given to
//! `nodes.txt` (one `name address:port` line each) so tests and operators can see exactly what
//! a real proxy plugin would be told. Its own service hooks are recorded in `hooks.log`, its
//! scheduled health checks in `health.log`.

use stratus_plugin_sdk::proxy::*;

struct HelloProxy;

fn record(ctx: &ServiceContext, line: &str) -> Result<(), HookError> {
    files::append_line(files::service_path(ctx, "hooks.log"), line)
}

fn node_lines(nodes: &[ProxyNode]) -> String {
    nodes
        .iter()
        .map(|n| format!("{} {}:{}\n", n.server.name, n.server.address, n.port))
        .collect()
}

impl ServiceGuest for HelloProxy {
    fn install_service(ctx: ServiceContext) -> Result<(), HookError> {
        record(&ctx, "install-service")
    }
    fn install_data_source(ctx: ServiceContext) -> Result<(), HookError> {
        record(&ctx, "install-data-source")
    }
    fn configure(ctx: ServiceContext) -> Result<(), HookError> {
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
        _grants: Vec<DatabaseGrant>,
    ) -> Result<(), HookError> {
        record(&ctx, "grant-database-access")
    }
    fn revoke_database_access(
        ctx: ServiceContext,
        _grants: Vec<DatabaseGrant>,
    ) -> Result<(), HookError> {
        record(&ctx, "revoke-database-access")
    }
    fn health_check(ctx: ServiceContext) -> Result<HealthReport, HookError> {
        // Not in hooks.log: checks run on a schedule, and hooks.log counts lifecycle runs.
        files::append_line(files::service_path(&ctx, "health.log"), "health-check")?;
        Ok(HealthReport {
            status: HealthStatus::Ok,
            message: "nothing to check".into(),
        })
    }
}

impl ProxyGuest for HelloProxy {
    fn start_proxy(ctx: ServiceContext, nodes: Vec<ProxyNode>) -> Result<(), HookError> {
        record(&ctx, "start-proxy")?;
        files::write(files::service_path(&ctx, "nodes.txt"), node_lines(&nodes))
    }
    fn remove_nodes(ctx: ServiceContext, nodes: Vec<ProxyNode>) -> Result<(), HookError> {
        record(&ctx, "remove-nodes")?;
        let path = files::service_path(&ctx, "nodes.txt");
        let current = files::read_to_string(&path).unwrap_or_default();
        let gone = node_lines(&nodes);
        let kept: String = current
            .lines()
            .filter(|l| !gone.lines().any(|g| g == *l))
            .map(|l| format!("{l}\n"))
            .collect();
        files::write(path, kept)
    }
}

stratus_plugin_sdk::export_proxy!(HelloProxy);
