//! Attacks through the filesystem: symlinks, the agent's files, disk use (`fs-*`).
//!
//! Each attack records what it tried in `<service dir>/hostile.log`, one line per attempt:
//! `<attempt>: refused (<error>)` when the sandbox or agent stopped it, `<attempt>: LEAKED` when
//! it got through. Tests read that file; the hook itself succeeds so the launch goes on.

use std::path::{Path, PathBuf};

use stratus_plugin_sdk::files::io_error;
use stratus_plugin_sdk::service::*;

/// The server root: the service directory is `<root>/mnt/services/a<id>`.
fn server_root(ctx: &ServiceContext) -> PathBuf {
    let svc = Path::new(&ctx.service_dir);
    svc.ancestors().nth(3).unwrap_or(svc).to_path_buf()
}

/// A relative link target that leads from the service directory up to `/` and then to the
/// absolute `target`, the kind of link a sandboxed plugin can make.
fn climbing(ctx: &ServiceContext, target: &str) -> String {
    let depth = Path::new(&ctx.service_dir).components().count() - 1;
    format!("{}{}", "../".repeat(depth), target.trim_start_matches('/'))
}

#[allow(deprecated)] // `soft_link` is the stable way to make a symlink under WASI.
fn link(target: &str, at: &Path) -> Result<(), HookError> {
    let _ = std::fs::remove_file(at);
    std::fs::soft_link(target, at).map_err(|e| io_error("linking", at, &e))
}

fn record(ctx: &ServiceContext, line: &str) -> Result<(), HookError> {
    files::append_line(Path::new(&ctx.service_dir).join("hostile.log"), line)
}

/// Records whether `attempt` got through.
fn outcome<T>(ctx: &ServiceContext, attempt: &str, r: std::io::Result<T>) -> Result<(), HookError> {
    match r {
        Ok(_) => {
            log::error(&format!("hostile {attempt}: LEAKED"));
            record(ctx, &format!("{attempt}: LEAKED"))
        }
        Err(e) => record(ctx, &format!("{attempt}: refused ({e})")),
    }
}

/// Attacks planted at `install-service`, before the agent's later writes (the data source).
pub(crate) fn install(ctx: &ServiceContext) -> Result<(), HookError> {
    if setting(ctx, "attack") != Some("fs-symlink-datasource") {
        return Ok(());
    }
    let target = setting(ctx, "target").ok_or_else(|| hook_error("setting `target` missing"))?;
    let name = setting(ctx, "link").unwrap_or("datasource.sql");
    link(
        &climbing(ctx, target),
        &Path::new(&ctx.service_dir).join(name),
    )
}

pub(crate) fn attack(ctx: &ServiceContext, name: &str) -> Result<(), HookError> {
    match name {
        // Planted at install-service; the agent's fetch must have replaced the link.
        "fs-symlink-datasource" => {
            let path =
                Path::new(&ctx.service_dir).join(setting(ctx, "link").unwrap_or("datasource.sql"));
            let is_file = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file());
            record(ctx, &format!("datasource is a regular file: {is_file}"))
        }
        "fs-symlink-sealed" => sealed(ctx),
        "fs-rewrite-manifest" => rewrite_manifest(ctx),
        "fs-fill-disk" => fill(ctx),
        "fs-fifo" => fifo(ctx),
        "fs-spawn-writer" => spawn_writer(ctx),
        other => Err(HookError::fatal(format!("unknown attack `{other}`"))),
    }
}

/// Links towards the agent-private area, then reads and writes through them and directly.
fn sealed(ctx: &ServiceContext) -> Result<(), HookError> {
    let svc = Path::new(&ctx.service_dir);
    let root = server_root(ctx);
    let mine = svc.strip_prefix(&root).unwrap_or(svc).display().to_string();
    link("../../../agent", &svc.join("agent"))?;
    link("../../../agent/bootstrap.json", &svc.join("credential"))?;
    let through = svc.join(format!("agent/sealed/{mine}/plugin.toml"));
    outcome(
        ctx,
        "write sealed through link",
        std::fs::write(&through, "pwned"),
    )?;
    outcome(
        ctx,
        "read credential through link",
        std::fs::read(svc.join("credential")),
    )?;
    let direct = root.join(format!("agent/sealed/{mine}/plugin.toml"));
    outcome(
        ctx,
        "write sealed directly",
        std::fs::write(&direct, "pwned"),
    )?;
    outcome(
        ctx,
        "read credential directly",
        std::fs::read(root.join("agent/bootstrap.json")),
    )?;
    outcome(
        ctx,
        "read reply cache directly",
        std::fs::read_dir(root.join("agent/calls")),
    )
}

/// Rewrites the plugin's own package copy with wider capabilities and another component.
fn rewrite_manifest(ctx: &ServiceContext) -> Result<(), HookError> {
    let svc = Path::new(&ctx.service_dir);
    let manifest = "[plugin]\nname = \"hostile\"\nversion = \"6.6.6\"\nworld = \"service\"\n\
                    [capabilities]\nmemory-mb = 1024\nprograms = [\"/bin/sh\"]\n\
                    dirs = [ { dir = \"service\", access = \"read-write\" } ]\n";
    files::write(svc.join("plugin.toml"), manifest)?;
    files::write(svc.join("plugin.wasm"), b"not a component")?;
    record(ctx, "rewrote plugin.toml and plugin.wasm")
}

/// Writes `mb` MiB (setting, default 2048) into the service directory.
fn fill(ctx: &ServiceContext) -> Result<(), HookError> {
    use std::io::Write;
    let mb: u64 = setting(ctx, "mb")
        .and_then(|m| m.parse().ok())
        .unwrap_or(2048);
    let path = Path::new(&ctx.service_dir).join("fill");
    let mut f = std::fs::File::create(&path).map_err(|e| io_error("creating", &path, &e))?;
    let chunk = vec![0x5a_u8; 1 << 20];
    for _ in 0..mb {
        f.write_all(&chunk)
            .map_err(|e| io_error("writing", &path, &e))?;
    }
    record(ctx, &format!("wrote {mb} MiB"))?;
    // Failing (and asking to be retried) after filling must not dodge the disk check.
    match setting(ctx, "then") {
        Some("retry") => Err(HookError::retryable("filled the disk; try me again")),
        _ => Ok(()),
    }
}

/// The FIFO the `fs-fifo` attack plants and the `fifo` health check writes to.
pub(crate) const FIFO: &str = "planted-fifo";

/// Plants FIFOs with a program (`/usr/bin/mkfifo`), then writes to one and reads the other
/// through WASI: either open would wait for a peer that never comes.
fn fifo(ctx: &ServiceContext) -> Result<(), HookError> {
    let svc = Path::new(&ctx.service_dir);
    let (w, r) = (svc.join(FIFO), svc.join("planted-fifo-r"));
    for p in [&w, &r] {
        let p = p.display().to_string();
        host::run(&crate::command("/usr/bin/mkfifo", &[&p])).map_err(HookError::fatal)?;
    }
    outcome(ctx, "write planted fifo", std::fs::write(&w, "hostile"))?;
    outcome(ctx, "read planted fifo", std::fs::read(&r))
}

/// The `fifo` health check: writes to the planted FIFO every time it is asked.
pub(crate) fn fifo_health(ctx: &ServiceContext) -> Result<HealthReport, HookError> {
    let path = Path::new(&ctx.service_dir).join(FIFO);
    std::fs::write(&path, "hostile").map_err(|e| io_error("writing", &path, &e))?;
    Ok(HealthReport {
        status: HealthStatus::Ok,
        message: "wrote to the planted fifo".into(),
    })
}

/// Spawns `writer`, a shell that waits a second (the hook is over by then, and its disk
/// check passed), writes `mb` MiB (setting, default 300) into `big` in the service directory
/// and then sleeps: only a check while processes run can see it.
fn spawn_writer(ctx: &ServiceContext) -> Result<(), HookError> {
    let mb: u64 = setting(ctx, "mb")
        .and_then(|m| m.parse().ok())
        .unwrap_or(300);
    let big = Path::new(&ctx.service_dir).join("big");
    let script = format!(
        "sleep 1; head -c {mb}M /dev/zero > '{}'; echo written; exec sleep 100000",
        big.display()
    );
    host::spawn(&host::ProcessSpec {
        name: "writer".into(),
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script],
        env: Vec::new(),
        working_dir: None,
    })
    .map_err(HookError::fatal)?;
    record(ctx, "spawned writer")
}
