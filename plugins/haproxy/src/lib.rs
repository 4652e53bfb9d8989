//! HAProxy as the three-tier example's load balancer. `configure` renders `haproxy.cfg` from
//! `cfg/haproxy.cfg.tmpl`; `start-proxy` and `remove-nodes` rewrite its backend, validate it
//! with `haproxy -c` and soft-reload: a new process generation starts with `-sf <old pids>`,
//! binds the port next to the old one (SO_REUSEPORT), then tells the old generation to stop
//! listening and exit once its established connections are done.

mod state;

use state::Node;
use std::time::{Duration, Instant};
use stratus_plugin_sdk::proxy::*;

struct Haproxy;

const HAPROXY: &str = "/usr/sbin/haproxy";
const CONFIG: &str = "haproxy.cfg";
const CANDIDATE: &str = "haproxy.cfg.new";
/// Used when the package's `cfg/` was not unpacked (a bare `plugin call`).
const BUILTIN_TEMPLATE: &str = include_str!("../cfg/haproxy.cfg.tmpl");
/// Bounds for waiting on the port and on a new generation to settle (hook timeout is 20 s).
const START_WAIT_MS: u32 = 10_000;
/// Time for the old generation to act on the signal and close its listeners.
const SETTLE_MS: u64 = 100;
/// The variable naming a generation's ready socket in the template.
const READY_ENV: &str = "STRATUS_READY";

fn http_port(ctx: &ServiceContext) -> Result<u16, HookError> {
    let port = ctx
        .ports
        .iter()
        .find(|p| p.name == "http")
        .or(ctx.ports.first());
    port.map(|p| p.private_port)
        .ok_or_else(|| HookError::fatal("the proxy service declares no port (expected `http`)"))
}

/// The configuration text for exactly `nodes`.
fn render(ctx: &ServiceContext, nodes: &[Node]) -> Result<String, HookError> {
    let path = files::service_path(ctx, "cfg/haproxy.cfg.tmpl");
    let template = if path.exists() {
        files::read_to_string(&path)?
    } else {
        BUILTIN_TEMPLATE.to_string()
    };
    let extra = vec![
        ("port.http.private".to_string(), http_port(ctx)?.to_string()),
        (
            "servers".to_string(),
            nodes.iter().map(Node::server_line).collect(),
        ),
    ];
    template::render_with(&template, &extra, template::Escaping::None)
        .map_err(|e| HookError::fatal(format!("rendering cfg/haproxy.cfg.tmpl: {}", e.message)))
}

/// `haproxy -c -f <path>`; on failure the error is haproxy's own output.
fn validate(path: &str) -> Result<(), HookError> {
    let out = host::run(&host::Command {
        program: HAPROXY.into(),
        args: vec!["-c".into(), "-f".into(), path.into()],
        // `-c` binds nothing; the ready socket only needs a name.
        env: vec![(READY_ENV.into(), format!("{path}.ready"))],
        working_dir: None,
        timeout_ms: 10_000,
        stdin: None,
    })
    .map_err(HookError::fatal)?;
    if out.exit_code == Some(0) {
        return Ok(());
    }
    Err(HookError::fatal(format!(
        "haproxy -c rejected the new configuration (exit {:?}): {}{}",
        out.exit_code,
        out.stdout.trim(),
        out.stderr.trim()
    )))
}

/// Generations the supervisor reports running, with their pids; forgets the others.
fn live_generations(ctx: &ServiceContext) -> Result<Vec<(String, u32)>, HookError> {
    let mut live = Vec::new();
    for name in state::read_generations(ctx)? {
        match host::query_process(&name) {
            host::ProcessState::Running(pid) => live.push((name, pid)),
            // haproxy leaves its unix socket behind.
            _ => {
                let _ = std::fs::remove_file(ready_path(ctx, &name));
            }
        }
    }
    Ok(live)
}

/// The file a generation's `ready` listener creates (see the template).
fn ready_path(ctx: &ServiceContext, name: &str) -> std::path::PathBuf {
    files::service_path(ctx, &format!("{name}.ready"))
}

/// Starts a new generation on `haproxy.cfg` that takes over from `old` (none: a plain start),
/// records it, and returns once it has bound its listeners and told `old` to stop listening.
fn spawn_generation(ctx: &ServiceContext, old: &[(String, u32)]) -> Result<(), HookError> {
    let mut names: Vec<String> = old.iter().map(|(n, _)| n.clone()).collect();
    let name = state::next_generation(&state::read_generations(ctx)?);
    let ready = ready_path(ctx, &name);
    // A name is reused only after its process exited; its socket file would look ready.
    let _ = std::fs::remove_file(&ready);
    let mut args = vec![
        "-db".into(),
        "-f".into(),
        files::service_path(ctx, CONFIG).display().to_string(),
    ];
    if !old.is_empty() {
        args.push("-sf".into());
        args.extend(old.iter().map(|(_, pid)| pid.to_string()));
    }
    let spec = host::ProcessSpec {
        name: name.clone(),
        program: HAPROXY.into(),
        args,
        env: vec![(READY_ENV.into(), ready.display().to_string())],
        working_dir: None,
    };
    let pid = host::spawn(&spec).map_err(HookError::fatal)?;
    names.push(name.clone());
    state::write_generations(ctx, &names)?;
    log::info(&format!(
        "started {name} (pid {pid}) taking over from {old:?}"
    ));
    // haproxy binds every listener (the ready socket too), then signals `old`: once the
    // socket exists the takeover is microseconds away. The old generation may still accept
    // until then, so the port alone would prove nothing.
    let deadline = Instant::now() + Duration::from_millis(START_WAIT_MS.into());
    while !ready.exists() {
        if !matches!(host::query_process(&name), host::ProcessState::Running(_)) {
            return Err(HookError::fatal(format!(
                "{name} exited before it was ready; see its process log"
            )));
        }
        if Instant::now() > deadline {
            return Err(HookError::retryable(format!(
                "{name} did not bind its listeners within {START_WAIT_MS} ms"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(SETTLE_MS));
    let port = http_port(ctx)?;
    match host::wait_for_port(&ctx.server.address, port, START_WAIT_MS) {
        Ok(true) => Ok(()),
        Ok(false) => Err(HookError::retryable(format!(
            "{name} runs but {}:{port} does not accept connections",
            ctx.server.address
        ))),
        Err(e) => Err(HookError::fatal(e)),
    }
}

/// Renders for `nodes`, validates, installs the config and soft-reloads (or starts) haproxy.
fn apply(ctx: &ServiceContext, nodes: &[Node]) -> Result<(), HookError> {
    let candidate = files::service_path(ctx, CANDIDATE);
    files::write(&candidate, render(ctx, nodes)?)?;
    if let Err(e) = validate(&candidate.display().to_string()) {
        let _ = std::fs::remove_file(&candidate);
        return Err(e);
    }
    let config = files::service_path(ctx, CONFIG);
    std::fs::rename(&candidate, &config)
        .map_err(|e| files::io_error("renaming to", &config, &e))?;
    state::write_nodes(ctx, nodes)?;
    let old = live_generations(ctx)?;
    spawn_generation(ctx, &old)
}

fn describe(nodes: &[Node]) -> String {
    if nodes.is_empty() {
        return "no nodes".into();
    }
    let each: Vec<String> = nodes
        .iter()
        .map(|n| format!("{} {}:{}", n.name, n.address, n.port))
        .collect();
    each.join(", ")
}

impl ServiceGuest for Haproxy {
    fn install_service(_ctx: ServiceContext) -> Result<(), HookError> {
        Ok(())
    }

    fn install_data_source(_ctx: ServiceContext) -> Result<(), HookError> {
        Ok(())
    }

    /// Renders the base config with the nodes balanced so far (none on first launch).
    fn configure(ctx: ServiceContext) -> Result<(), HookError> {
        let nodes = state::read_nodes(&ctx)?;
        let candidate = files::service_path(&ctx, CANDIDATE);
        files::write(&candidate, render(&ctx, &nodes)?)?;
        validate(&candidate.display().to_string())?;
        let config = files::service_path(&ctx, CONFIG);
        std::fs::rename(&candidate, &config)
            .map_err(|e| files::io_error("renaming to", &config, &e))?;
        log::info(&format!("wrote {}", config.display()));
        Ok(())
    }

    fn start(ctx: ServiceContext) -> Result<(), HookError> {
        if live_generations(&ctx)?.is_empty() {
            return spawn_generation(&ctx, &[]);
        }
        let port = http_port(&ctx)?;
        match host::wait_for_port(&ctx.server.address, port, START_WAIT_MS)
            .map_err(HookError::fatal)?
        {
            true => Ok(()),
            false => Err(HookError::retryable(format!(
                "haproxy runs but port {port} does not accept"
            ))),
        }
    }

    /// Stops every generation that may still run (old ones draining connections included).
    fn stop(ctx: ServiceContext) -> Result<(), HookError> {
        for name in state::read_generations(&ctx)? {
            host::stop_process(&name, 5_000).map_err(HookError::fatal)?;
            let _ = std::fs::remove_file(ready_path(&ctx, &name));
        }
        state::write_generations(&ctx, &[])
    }

    fn grant_database_access(_: ServiceContext, _: Vec<DatabaseGrant>) -> Result<(), HookError> {
        Ok(())
    }

    fn revoke_database_access(_: ServiceContext, _: Vec<DatabaseGrant>) -> Result<(), HookError> {
        Ok(())
    }

    fn health_check(ctx: ServiceContext) -> Result<HealthReport, HookError> {
        let port = http_port(&ctx)?;
        let live = live_generations(&ctx)?;
        let (status, message) = match live.last() {
            None => (HealthStatus::Critical, "haproxy is not running".to_string()),
            Some((name, pid)) => match host::wait_for_port(&ctx.server.address, port, 1_000) {
                Ok(true) => (
                    HealthStatus::Ok,
                    format!("{name} (pid {pid}) accepts on port {port}"),
                ),
                Ok(false) => (
                    HealthStatus::Critical,
                    format!("{name} (pid {pid}) runs but port {port} does not accept"),
                ),
                Err(e) => (HealthStatus::Unknown, e),
            },
        };
        Ok(HealthReport { status, message })
    }
}

impl ProxyGuest for Haproxy {
    fn start_proxy(ctx: ServiceContext, nodes: Vec<ProxyNode>) -> Result<(), HookError> {
        let nodes: Vec<Node> = nodes.iter().map(Node::of).collect();
        log::info(&format!("balancing over {}", describe(&nodes)));
        apply(&ctx, &nodes)
    }

    fn remove_nodes(ctx: ServiceContext, nodes: Vec<ProxyNode>) -> Result<(), HookError> {
        let gone: Vec<Node> = nodes.iter().map(Node::of).collect();
        let kept: Vec<Node> = state::read_nodes(&ctx)?
            .into_iter()
            .filter(|n| {
                !gone
                    .iter()
                    .any(|g| g.address == n.address && g.port == n.port)
            })
            .collect();
        log::info(&format!(
            "removing {}; keeping {}",
            describe(&gone),
            describe(&kept)
        ));
        apply(&ctx, &kept)
    }
}

stratus_plugin_sdk::export_proxy!(Haproxy);
