//! Attacks through `host.run-with-files` (`rwf-*`). Settings name the call: `program`, `args`
//! (space-separated), `stdin-file`, `stdout-file` and `stdin` (inline bytes); `{dir}` in a
//! path stands for the service directory. The host's refusal comes back as the hook error,
//! word for word; a run that was allowed writes `exit=<code>` and its stdout to `rwf.out`.
//!
//! - `rwf-run`: the call exactly as the settings say;
//! - `rwf-own-link`: first makes `{dir}/own-link`, a link climbing to the setting `target`
//!   (what a sandboxed plugin can make), then runs the call (which should name the link).

use std::path::Path;
use stratus_plugin_sdk::files::io_error;
use stratus_plugin_sdk::service::*;

pub(crate) fn attack(ctx: &ServiceContext, name: &str) -> Result<(), HookError> {
    match name {
        "rwf-run" => run(ctx),
        "rwf-own-link" => {
            let target = setting(ctx, "target").unwrap_or("/etc/passwd");
            let depth = Path::new(&ctx.service_dir).components().count() - 1;
            let climb = format!("{}{}", "../".repeat(depth), target.trim_start_matches('/'));
            let at = Path::new(&ctx.service_dir).join("own-link");
            #[allow(deprecated)] // `soft_link` is the stable way to make a symlink under WASI.
            std::fs::soft_link(&climb, &at).map_err(|e| io_error("linking", &at, &e))?;
            run(ctx)
        }
        other => Err(HookError::fatal(format!("unknown attack `{other}`"))),
    }
}

fn path(ctx: &ServiceContext, key: &str) -> Option<String> {
    setting(ctx, key).map(|p| p.replace("{dir}", &ctx.service_dir))
}

fn run(ctx: &ServiceContext) -> Result<(), HookError> {
    let program = setting(ctx, "program").unwrap_or("/usr/bin/cat");
    let args: Vec<&str> = setting(ctx, "args")
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let mut cmd = crate::command(program, &args);
    cmd.stdin = setting(ctx, "stdin").map(String::from);
    let files = host::CommandFiles {
        stdin_file: path(ctx, "stdin-file"),
        stdout_file: path(ctx, "stdout-file"),
    };
    let out = host::run_with_files(&cmd, &files).map_err(HookError::fatal)?;
    let code = out.exit_code.map_or("signal".into(), |c| c.to_string());
    let text = format!("exit={code}\n{}", out.stdout);
    files::write(Path::new(&ctx.service_dir).join("rwf.out"), text)
}
