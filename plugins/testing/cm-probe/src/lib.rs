//! Test-only configuration-management adapter: `prepare` writes `<work_dir>/prepared` (the run
//! list, one entry a line) and `run` reports it back, failing if `prepare` never ran.

use std::path::Path;

use stratus_plugin_sdk::cm::*;
use stratus_plugin_sdk::files;

struct CmProbe;

impl Guest for CmProbe {
    fn prepare(ctx: CmContext) -> Result<(), HookError> {
        let path = Path::new(&ctx.work_dir).join("prepared");
        let mut text = ctx.run_list.join("\n");
        text.push('\n');
        files::write(&path, text)
    }

    fn run(ctx: CmContext) -> Result<CmReport, HookError> {
        let path = Path::new(&ctx.work_dir).join("prepared");
        let prepared = files::read_to_string(&path)?;
        let entries = prepared.lines().filter(|l| !l.is_empty()).count();
        log::info(&format!(
            "cm-probe on {}: {entries} run-list entries",
            ctx.server.name
        ));
        Ok(CmReport {
            summary: format!("cm-probe applied {entries} run-list entries"),
            produced: vec![path.display().to_string()],
        })
    }
}

stratus_plugin_sdk::export_cm!(CmProbe);
