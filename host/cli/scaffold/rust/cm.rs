//! __NAME__: a Stratus configuration-management adapter. `prepare` writes the tool's inputs
//! into the work directory (`__NAME__.conf`); `run` runs the tool and reports.

use std::path::Path;
use stratus_plugin_sdk::cm::*;

struct Plugin;

impl Guest for Plugin {
    fn prepare(ctx: CmContext) -> Result<(), HookError> {
        // CM hooks have no service context to render templates with: the inputs come from ctx.
        let mut text = format!(
            "deployment = {}\ntier = {}\nserver = {} ({})\n",
            ctx.deployment, ctx.tier, ctx.server.name, ctx.server.address
        );
        for s in &ctx.settings {
            text.push_str(&format!("setting.{} = {}\n", s.key, s.value));
        }
        let out = Path::new(&ctx.work_dir).join("__NAME__.conf");
        files::write(&out, text)?;
        log::info(&format!("wrote {}", out.display()));
        Ok(())
    }

    fn run(ctx: CmContext) -> Result<CmReport, HookError> {
        log::info(&format!("run on {}", ctx.server.name));
        Ok(CmReport {
            summary: format!("__NAME__ configured {}", ctx.server.name),
            produced: Vec::new(),
        })
    }
}

stratus_plugin_sdk::export_cm!(Plugin);
