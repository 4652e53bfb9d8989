//! Test-only CM adapter that goes after the agent's files from its work dir. `prepare` tries to
//! read the agent's credential, to write the sealed package copy (directly and through planted
//! links), rewrites its own package copy, and replaces its credential file by a link to the
//! setting `target` so that the agent's erase meets a link. Each attempt is a line of
//! `<work_dir>/hostile.log`: `<attempt>: refused (<error>)` or `<attempt>: LEAKED`. `run`
//! puts its credentials, plainly and encoded, into its report.

use std::path::{Path, PathBuf};

use stratus_plugin_sdk::cm::*;
use stratus_plugin_sdk::files;

struct HostileCm;

fn record(ctx: &CmContext, line: &str) -> Result<(), HookError> {
    files::append_line(Path::new(&ctx.work_dir).join("hostile.log"), line)
}

fn outcome<T>(ctx: &CmContext, attempt: &str, r: std::io::Result<T>) -> Result<(), HookError> {
    match r {
        Ok(_) => record(ctx, &format!("{attempt}: LEAKED")),
        Err(e) => record(ctx, &format!("{attempt}: refused ({e})")),
    }
}

/// A relative link target from `dir` up to `/` and down to the absolute `target`.
fn climbing(dir: &str, target: &str) -> String {
    let depth = Path::new(dir).components().count() - 1;
    format!("{}{}", "../".repeat(depth), target.trim_start_matches('/'))
}

#[allow(deprecated)] // `soft_link` is the stable way to make a symlink under WASI.
fn link(target: &str, at: &Path) -> Result<(), HookError> {
    let _ = std::fs::remove_file(at);
    std::fs::soft_link(target, at).map_err(|e| files::io_error("linking", at, &e))
}

/// The sealed copy of this unit's package, as the agent keeps it.
fn sealed(ctx: &CmContext) -> PathBuf {
    let work = Path::new(&ctx.work_dir);
    let rel = work.strip_prefix(&ctx.server_root).unwrap_or(work);
    Path::new(&ctx.server_root)
        .join("agent/sealed")
        .join(rel)
        .join("package/plugin.toml")
}

impl Guest for HostileCm {
    fn prepare(ctx: CmContext) -> Result<(), HookError> {
        let work = Path::new(&ctx.work_dir);
        let root = Path::new(&ctx.server_root);
        outcome(
            &ctx,
            "read credential",
            std::fs::read(root.join("agent/bootstrap.json")),
        )?;
        outcome(
            &ctx,
            "write sealed directly",
            std::fs::write(sealed(&ctx), "pwned"),
        )?;
        link(
            &climbing(&ctx.work_dir, &ctx.server_root),
            &work.join("root"),
        )?;
        let through = work.join("root/agent/bootstrap.json");
        outcome(
            &ctx,
            "read credential through link",
            std::fs::read(&through),
        )?;
        let sealed_rel = sealed(&ctx);
        let sealed_rel = sealed_rel.strip_prefix(root).unwrap_or(&sealed_rel);
        let through = work.join("root").join(sealed_rel);
        outcome(
            &ctx,
            "write sealed through link",
            std::fs::write(&through, "pwned"),
        )?;
        // Its own package copy is writable; the agent never loads from it.
        let manifest = "[plugin]\nname = \"hostile-cm\"\nversion = \"6.6.6\"\nworld = \"cm\"\n\
                        [capabilities]\nprograms = [\"/bin/sh\"]\n";
        files::write(work.join("package/plugin.toml"), manifest)?;
        // The server's config dir is granted: this must work.
        let etc = root.join("etc/stratus");
        std::fs::create_dir_all(&etc).map_err(|e| files::io_error("creating", &etc, &e))?;
        files::write(etc.join("hostile-cm.txt"), "configured\n")?;
        // The agent erases the credential after `run`: make that erase meet a link.
        if let Some(target) = cm_setting(&ctx, "target") {
            for c in &ctx.credentials {
                link(
                    &climbing(&ctx.work_dir, target),
                    &work.join(format!("{}.pem", c.name)),
                )?;
            }
        }
        record(&ctx, "prepare done")
    }

    /// The report carries every credential plainly, hex- and percent-encoded: the operator
    /// must see only `****` in launch output, events and logs.
    fn run(ctx: CmContext) -> Result<CmReport, HookError> {
        let mut leaks = Vec::new();
        for c in &ctx.credentials {
            let b = c.password.as_bytes();
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            let pct: String = b.iter().map(|x| format!("%{x:02X}")).collect();
            leaks.extend([c.password.clone(), hex, pct]);
        }
        Ok(CmReport {
            summary: format!(
                "hostile-cm ran on {}; leaking {}",
                ctx.server.name,
                leaks.join(" ")
            ),
            produced: leaks.iter().map(|l| format!("/tmp/{l}")).collect(),
        })
    }
}

stratus_plugin_sdk::export_cm!(HostileCm);
