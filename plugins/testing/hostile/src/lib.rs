//! Test-only plugin that attacks its sandbox. `configure` picks the attack from the setting
//! `attack`; IO failures come back as `HookError`s naming the operation and path, so tests can
//! tell "the sandbox refused" from "the plugin crashed". Every other hook succeeds quietly.

use std::hint::black_box;
use std::io::Write;

use stratus_plugin_sdk::files::{io_error, service_path};
use stratus_plugin_sdk::service::*;

mod fs;
mod neighbours;
mod output;
mod procs;
mod retry;
mod rwf;

struct Hostile;

pub(crate) fn command(program: &str, args: &[&str]) -> host::Command {
    host::Command {
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: Vec::new(),
        working_dir: None,
        timeout_ms: 0,
        stdin: None,
    }
}

fn read(path: &str) -> Result<(), HookError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error("reading", path.as_ref(), &e))?;
    // Reaching this line means the sandbox leaked; say so loudly in the hook log.
    log::error(&format!("hostile read {path}: {} bytes", text.len()));
    Ok(())
}

/// Recursion that cannot become a loop: each frame keeps a live array used after the call.
#[inline(never)]
#[allow(unconditional_recursion)] // the point: it only ends when the stack runs out
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 32]);
    recurse(depth + 1).wrapping_add(frame[black_box(7)])
}

fn attack(ctx: &ServiceContext, name: &str) -> Result<(), HookError> {
    let dir = &ctx.service_dir;
    match name {
        // Each class of attack lives in its own module, picked by the name's prefix.
        n if n.starts_with("proc-") => procs::attack(ctx, n),
        n if n.starts_with("fs-") => fs::attack(ctx, n),
        n if n.starts_with("nb-") => neighbours::attack(ctx, n),
        n if n.starts_with("out-") => output::attack(ctx, n),
        n if n.starts_with("retry-") => retry::attack(ctx, n),
        n if n.starts_with("rwf-") => rwf::attack(ctx, n),
        "read-passwd" => read("/etc/passwd"),
        "traversal" => read(&format!("{dir}/../../../../etc/passwd")),
        "symlink" => read(&format!("{dir}/evil-link")),
        "write-readonly" => {
            let path = service_path(ctx, "x");
            std::fs::write(&path, "hostile").map_err(|e| io_error("writing", &path, &e))
        }
        "run-disallowed" => {
            let out = host::run(&command("/bin/sh", &["-c", "id"])).map_err(HookError::fatal)?;
            log::error(&format!("hostile ran /bin/sh: {}", out.stdout.trim()));
            Ok(())
        }
        "shell-meta" => {
            let arg = "hello; rm -rf / $(id) | cat";
            let out = host::run(&command("/usr/bin/echo", &[arg])).map_err(HookError::fatal)?;
            let path = service_path(ctx, "echo.out");
            std::fs::write(&path, out.stdout).map_err(|e| io_error("writing", &path, &e))
        }
        "socket" => {
            let addr = "127.0.0.1:22";
            std::net::TcpStream::connect(addr)
                .map(drop)
                .map_err(|e| io_error("connecting to", addr.as_ref(), &e))
        }
        "infinite-loop" => {
            let mut n = 0u64;
            loop {
                n = black_box(n.wrapping_add(1));
            }
        }
        "alloc-1gib" => {
            let mut v = vec![1u8; 1 << 30];
            // Touch every page so the memory is really committed, not just reserved.
            for i in (0..v.len()).step_by(4096) {
                v[i] = black_box(2);
            }
            black_box(&v);
            Ok(())
        }
        "recursion" => {
            black_box(recurse(0));
            Ok(())
        }
        "flood-stdout" => loop {
            println!("hostile flood: this line repeats until the host stops it");
        },
        "panic" => panic!("hostile panic"),
        "none" => {
            let path = service_path(ctx, "ok");
            let mut f =
                std::fs::File::create(&path).map_err(|e| io_error("creating", &path, &e))?;
            f.write_all(b"ok\n")
                .map_err(|e| io_error("writing", &path, &e))
        }
        other => Err(HookError::fatal(format!("unknown attack `{other}`"))),
    }
}

impl Guest for Hostile {
    fn install_service(ctx: ServiceContext) -> Result<(), HookError> {
        // Filesystem attacks that must be in place before the agent's later writes.
        fs::install(&ctx)
    }

    fn install_data_source(_ctx: ServiceContext) -> Result<(), HookError> {
        Ok(())
    }

    fn configure(ctx: ServiceContext) -> Result<(), HookError> {
        let name = setting(&ctx, "attack").unwrap_or("none").to_string();
        attack(&ctx, &name)
    }

    fn start(_ctx: ServiceContext) -> Result<(), HookError> {
        Ok(())
    }

    fn stop(_ctx: ServiceContext) -> Result<(), HookError> {
        Ok(())
    }

    fn grant_database_access(
        _ctx: ServiceContext,
        _g: Vec<DatabaseGrant>,
    ) -> Result<(), HookError> {
        Ok(())
    }

    fn revoke_database_access(
        _ctx: ServiceContext,
        _g: Vec<DatabaseGrant>,
    ) -> Result<(), HookError> {
        Ok(())
    }

    /// `health = "spin"` never answers; `health = "huge"` answers CRITICAL at length (under
    /// the output limit); `health = "leak"` puts the passwords in its message; `health =
    /// "fifo"` writes to the FIFO the `fs-fifo` attack planted.
    fn health_check(ctx: ServiceContext) -> Result<HealthReport, HookError> {
        match setting(&ctx, "health") {
            Some("spin") => loop {
                black_box(0u64);
            },
            Some("fifo") => fs::fifo_health(&ctx),
            Some("huge") => Ok(HealthReport {
                status: HealthStatus::Critical,
                message: "h".repeat(60_000),
            }),
            _ => Ok(HealthReport {
                status: HealthStatus::Ok,
                message: output::health_message(&ctx),
            }),
        }
    }
}

stratus_plugin_sdk::export_service!(Hostile);
