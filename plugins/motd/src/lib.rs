//! A script personality component: writes `<server_root>/etc/motd` naming the server, and
//! appends one line to `<server_root>/etc/personality.log` so the order in which a
//! personality's components ran can be read back.

use std::path::Path;

use stratus_plugin_sdk::cm::*;

struct Motd;

/// The unit this component runs as (`<personality>-<n>`), the last part of the work directory.
fn unit(ctx: &CmContext) -> String {
    Path::new(&ctx.work_dir)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Guest for Motd {
    fn prepare(ctx: CmContext) -> Result<(), HookError> {
        let etc = Path::new(&ctx.server_root).join("etc");
        std::fs::create_dir_all(&etc).map_err(|e| files::io_error("creating", &etc, &e))
    }

    fn run(ctx: CmContext) -> Result<CmReport, HookError> {
        let etc = Path::new(&ctx.server_root).join("etc");
        let motd = etc.join("motd");
        let s = &ctx.server;
        files::write(
            &motd,
            format!(
                "Welcome to {} ({}), {} tier of deployment {}.\n",
                s.name, s.address, ctx.tier, ctx.deployment
            ),
        )?;
        // A repeated run (the engine retries after a crash) must not log itself twice.
        let log = etc.join("personality.log");
        let line = format!("{} motd {}", unit(&ctx), s.name);
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        if !logged.lines().any(|l| l == line) {
            files::append_line(&log, &line)?;
        }
        Ok(CmReport {
            summary: format!("motd written for {}", s.name),
            produced: vec![motd.display().to_string()],
        })
    }
}

stratus_plugin_sdk::export_cm!(Motd);
