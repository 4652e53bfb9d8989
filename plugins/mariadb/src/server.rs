//! The supervised mariadbd: starting it and waiting until it serves, stopping it, and the
//! error-log excerpts that explain a failure.

use crate::client::{self, Target};
use crate::layout::{self, INSTALL_PROCESS, Layout, MARIADBD, SERVER_PROCESS, socket_arg};
use std::path::Path;
use std::time::{Duration, Instant};
use stratus_plugin_sdk::service::*;

/// How long `start` waits for the server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the temporary install server may take to come up (first start creates InnoDB files).
const INSTALL_START_TIMEOUT: Duration = Duration::from_secs(60);
/// SIGTERM grace before SIGKILL: InnoDB flushes its buffer pool on a clean shutdown.
const STOP_GRACE_MS: u32 = 30_000;
/// Interval between readiness probes.
const POLL: Duration = Duration::from_millis(100);

/// The size of `path` now, so a later excerpt shows only what this start wrote.
pub fn log_offset(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// mariadbd's `[ERROR]` lines written after `from`, or its last lines when there are none.
pub fn log_excerpt(path: &Path, from: u64) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return format!("no error log at {}", path.display());
    };
    let start = usize::try_from(from).unwrap_or(0).min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("[ERROR]"))
        .collect();
    let pick = if errors.is_empty() { &lines } else { &errors };
    let tail = &pick[pick.len().saturating_sub(8)..];
    if tail.is_empty() {
        format!("{} has nothing new", path.display())
    } else {
        format!("{}: {}", path.display(), tail.join(" | "))
    }
}

fn exited_message(state: &host::ProcessState) -> Option<String> {
    match state {
        host::ProcessState::Running(_) => None,
        host::ProcessState::Exited(Some(code)) => Some(format!("exited with code {code}")),
        host::ProcessState::Exited(None) => Some("was killed by a signal".into()),
        host::ProcessState::Unknown => Some("is not running".into()),
    }
}

fn spawn(name: &str, args: Vec<String>) -> Result<(), HookError> {
    let spec = host::ProcessSpec {
        name: name.into(),
        program: MARIADBD.into(),
        args,
        env: vec![],
        working_dir: None,
    };
    match host::spawn(&spec) {
        Ok(pid) => {
            stratus_plugin_sdk::info!("started {name} (pid {pid})");
            Ok(())
        }
        // Another call started it meanwhile: the readiness wait decides.
        Err(e) if e.contains("already running") => Ok(()),
        Err(e) => Err(HookError::fatal(format!("starting {name}: {e}"))),
    }
}

fn port_open(address: &str, port: u16, timeout_ms: u32) -> Result<bool, HookError> {
    host::wait_for_port(address, port, timeout_ms)
        .map_err(|e| HookError::fatal(format!("waiting for {address}:{port}: {e}")))
}

/// Starts the configured server and returns once it accepts connections on its address.
pub fn start(ctx: &ServiceContext) -> Result<(), HookError> {
    let l = Layout::of(ctx);
    let (address, port) = (ctx.server.address.as_str(), layout::port(ctx));
    if !l.my_cnf().exists() {
        return Err(HookError::fatal(format!(
            "{} is missing: configure must run before start",
            l.my_cnf().display()
        )));
    }
    let running = matches!(
        host::query_process(SERVER_PROCESS),
        host::ProcessState::Running(_)
    );
    if !running {
        crate::datadir::ensure(&l)?;
    }
    let offset = log_offset(&l.error_log());
    if !running {
        // --defaults-file must come first. No --user: mariadbd runs as the user the agent
        // starts it as (the server's program uid), which owns the data directory.
        let args = vec![format!("--defaults-file={}", l.my_cnf().display())];
        spawn(SERVER_PROCESS, args)?;
    }
    let began = Instant::now();
    while began.elapsed() < START_TIMEOUT {
        if let Some(why) = exited_message(&host::query_process(SERVER_PROCESS)) {
            return Err(HookError::fatal(format!(
                "mariadbd {why} during start: {}",
                log_excerpt(&l.error_log(), offset)
            )));
        }
        // Something else may hold the port, so our server must also answer on its socket.
        if port_open(address, port, 500)? && answers(&l, &l.socket()) {
            stratus_plugin_sdk::info!(
                "mariadbd accepts connections on {address}:{port} after {} ms",
                began.elapsed().as_millis()
            );
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
    // A server that never listens is useless and would block the next start's data files.
    let _ = host::stop_process(SERVER_PROCESS, STOP_GRACE_MS);
    Err(HookError::fatal(format!(
        "mariadbd did not accept connections on {address}:{port} within {} s: {}",
        START_TIMEOUT.as_secs(),
        log_excerpt(&l.error_log(), offset)
    )))
}

/// Whether `SELECT 1` succeeds over `socket`.
fn answers(l: &Layout, socket: &Path) -> bool {
    let target = Target {
        login: &l.admin_cnf(),
        socket,
        database: None,
        timeout_ms: 5_000,
    };
    client::run(&target, "probe", "SELECT 1;".into(), &[]).is_ok()
}

/// Stops the server (and a leftover install server); stopping a stopped server succeeds.
pub fn stop() -> Result<(), HookError> {
    for name in [SERVER_PROCESS, INSTALL_PROCESS] {
        host::stop_process(name, STOP_GRACE_MS)
            .map_err(|e| HookError::fatal(format!("stopping {name}: {e}")))?;
    }
    Ok(())
}

/// Starts a private server for loading data: no TCP at all, only its own socket.
pub fn start_install_server(l: &Layout) -> Result<(), HookError> {
    host::stop_process(INSTALL_PROCESS, STOP_GRACE_MS)
        .map_err(|e| HookError::fatal(format!("stopping a leftover {INSTALL_PROCESS}: {e}")))?;
    let socket = l.install_socket();
    let offset = log_offset(&l.install_log());
    let args = vec![
        "--no-defaults".into(),
        format!("--datadir={}", l.datadir().display()),
        format!("--tmpdir={}", l.tmpdir().display()),
        format!("--socket={}", socket_arg(&socket)?),
        format!("--pid-file={}", l.install_pid().display()),
        format!("--log-error={}", l.install_log().display()),
        "--skip-networking".into(),
    ];
    spawn(INSTALL_PROCESS, args)?;
    let began = Instant::now();
    while began.elapsed() < INSTALL_START_TIMEOUT {
        if let Some(why) = exited_message(&host::query_process(INSTALL_PROCESS)) {
            return Err(HookError::fatal(format!(
                "the temporary mariadbd {why}: {}",
                log_excerpt(&l.install_log(), offset)
            )));
        }
        if socket.exists() && answers(l, &socket) {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
    stop_install_server()?;
    Err(HookError::fatal(format!(
        "the temporary mariadbd did not answer on {} within {} s: {}",
        socket.display(),
        INSTALL_START_TIMEOUT.as_secs(),
        log_excerpt(&l.install_log(), offset)
    )))
}

pub fn stop_install_server() -> Result<(), HookError> {
    host::stop_process(INSTALL_PROCESS, STOP_GRACE_MS)
        .map_err(|e| HookError::fatal(format!("stopping {INSTALL_PROCESS}: {e}")))
}

/// Whether the supervised server is running.
pub fn is_running() -> bool {
    matches!(
        host::query_process(SERVER_PROCESS),
        host::ProcessState::Running(_)
    )
}

/// Process state, then `SELECT 1` over the socket, then the TCP port.
pub fn health(ctx: &ServiceContext) -> HealthReport {
    let l = Layout::of(ctx);
    let report = |status, message| HealthReport { status, message };
    let pid = match host::query_process(SERVER_PROCESS) {
        host::ProcessState::Running(pid) => pid,
        other => {
            let why = exited_message(&other).unwrap_or_default();
            let mut msg = format!("mariadbd {why}");
            if matches!(other, host::ProcessState::Exited(_)) {
                msg = format!("{msg}: {}", log_excerpt(&l.error_log(), 0));
            }
            return report(HealthStatus::Critical, msg);
        }
    };
    let (socket, login) = (l.socket(), l.admin_cnf());
    let target = Target {
        login: &login,
        socket: &socket,
        database: None,
        timeout_ms: 10_000,
    };
    match client::run(&target, "SELECT 1", "SELECT 1;".into(), &[]) {
        Ok(out) if out.trim() == "1" => {}
        Ok(out) => {
            return report(
                HealthStatus::Critical,
                format!(
                    "mariadbd (pid {pid}) answered SELECT 1 with `{}`",
                    out.trim()
                ),
            );
        }
        Err(e) => {
            return report(
                HealthStatus::Critical,
                format!("mariadbd (pid {pid}) is running but {}", e.message),
            );
        }
    }
    let (address, port) = (ctx.server.address.as_str(), layout::port(ctx));
    match port_open(address, port, 2_000) {
        Ok(true) => report(
            HealthStatus::Ok,
            format!("mariadbd (pid {pid}) answers SELECT 1 and listens on {address}:{port}"),
        ),
        Ok(false) => report(
            HealthStatus::Warning,
            format!("mariadbd (pid {pid}) answers on its socket but not on {address}:{port}"),
        ),
        Err(e) => report(HealthStatus::Warning, e.message),
    }
}
