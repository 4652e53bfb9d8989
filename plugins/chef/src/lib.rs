//! Chef as a configuration-management adapter, the successor of enStratus's
//! `runConfigurationManagement-CHEF`: `prepare` writes `first-boot.json` (the run list plus the
//! server's facts) and `client.rb` (the Chef server, this node, the validation key the engine
//! placed at `<work_dir>/validation.pem`); `run` calls `chef-client -j first-boot.json -c
//! client.rb --once`, which registers the node (writing `client.pem`) and converges it.

use std::path::Path;

use serde_json::{Map, Value, json};
use stratus_plugin_sdk::cm::*;

/// Where chef-client lives unless the manifest's `env` says otherwise; it must also be the
/// manifest's program grant, so an operator moves both together.
const CHEF_CLIENT: &str = "/usr/bin/chef-client";
const FIRST_BOOT: &str = "first-boot.json";
const CLIENT_RB: &str = "client.rb";
/// Settings that configure the client rather than becoming node attributes.
const CLIENT_SETTINGS: &[&str] = &["server-url", "validation-client-name", "environment"];

struct Chef;

fn program() -> String {
    std::env::var("CHEF_CLIENT").unwrap_or_else(|_| CHEF_CLIENT.to_string())
}

/// A Ruby single-quoted string literal.
fn ruby_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `{"run_list": [...], "stratus": {...}, <setting>: <value>, ...}`: the run list, the server's
/// facts under `stratus`, and every non-client setting as a node attribute.
fn first_boot(ctx: &CmContext) -> String {
    let s = &ctx.server;
    let mut node = Map::new();
    node.insert("run_list".into(), ctx.run_list.clone().into());
    node.insert(
        "stratus".into(),
        json!({
            "deployment": ctx.deployment,
            "tier": ctx.tier,
            "server": {"id": s.id, "name": s.name, "address": s.address},
            "server_root": ctx.server_root,
        }),
    );
    for st in &ctx.settings {
        let reserved = ["run_list", "stratus"].contains(&st.key.as_str());
        if !reserved && !CLIENT_SETTINGS.contains(&st.key.as_str()) {
            node.insert(st.key.clone(), st.value.clone().into());
        }
    }
    // `{:#}` pretty-prints, so the file stays readable when a run is debugged.
    format!("{:#}\n", Value::Object(node))
}

/// The client configuration: every path chef writes to is inside the work directory.
fn client_rb(ctx: &CmContext) -> String {
    let work = Path::new(&ctx.work_dir);
    let path = |name: &str| ruby_str(&work.join(name).display().to_string());
    let mut rb = String::new();
    if let Some(url) = cm_setting(ctx, "server-url") {
        rb.push_str(&format!("chef_server_url {}\n", ruby_str(url)));
    }
    let validator = cm_setting(ctx, "validation-client-name").unwrap_or("chef-validator");
    rb.push_str(&format!("node_name {}\n", ruby_str(&ctx.server.name)));
    rb.push_str(&format!("validation_client_name {}\n", ruby_str(validator)));
    rb.push_str(&format!("validation_key {}\n", path("validation.pem")));
    rb.push_str(&format!("client_key {}\n", path("client.pem")));
    rb.push_str(&format!("file_cache_path {}\n", path("cache")));
    rb.push_str(&format!("file_backup_path {}\n", path("backup")));
    if let Some(env) = cm_setting(ctx, "environment") {
        rb.push_str(&format!("environment {}\n", ruby_str(env)));
    }
    rb.push_str("log_location STDOUT\n");
    rb
}

/// Chef's own account of the failure: its `FATAL`/`ERROR` lines.
fn errors(out: &host::CommandOutput) -> String {
    error_lines(&[&out.stdout, &out.stderr], &out.stderr, |l| {
        l.contains("FATAL:") || l.contains("ERROR:")
    })
}

impl Guest for Chef {
    fn prepare(ctx: CmContext) -> Result<(), HookError> {
        let work = Path::new(&ctx.work_dir);
        files::write(work.join(FIRST_BOOT), first_boot(&ctx))?;
        files::write(work.join(CLIENT_RB), client_rb(&ctx))?;
        for name in ["cache", "backup"] {
            let d = work.join(name);
            std::fs::create_dir_all(&d).map_err(|e| files::io_error("creating", &d, &e))?;
        }
        log::info(&format!(
            "chef: first-boot.json with {} run-list entries for {}",
            ctx.run_list.len(),
            ctx.server.name
        ));
        Ok(())
    }

    fn run(ctx: CmContext) -> Result<CmReport, HookError> {
        let work = Path::new(&ctx.work_dir);
        let at = |name: &str| work.join(name).display().to_string();
        let env = vec![
            ("HOME".to_string(), ctx.work_dir.clone()),
            // Chef's providers find their tools through PATH.
            ("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            ("LANG".into(), "C.UTF-8".into()),
        ];
        log::status("chef-client");
        let out = host::run(&host::Command {
            program: program(),
            args: vec![
                "-j".into(),
                at(FIRST_BOOT),
                "-c".into(),
                at(CLIENT_RB),
                "--once".into(),
            ],
            env,
            working_dir: Some(ctx.work_dir.clone()),
            timeout_ms: 0,
            stdin: None,
        })
        .map_err(|e| HookError::fatal(format!("running chef-client: {e}")))?;
        log::info(&format!(
            "chef-client output:\n{}{}",
            out.stdout, out.stderr
        ));
        if out.exit_code != Some(0) {
            return Err(HookError::fatal(format!(
                "chef-client failed (exit {}): {}",
                out.exit_code
                    .map_or("signal".to_string(), |c| c.to_string()),
                errors(&out)
            )));
        }
        let client_pem = work.join("client.pem");
        let produced = if client_pem.is_file() {
            vec![client_pem.display().to_string()]
        } else {
            vec![]
        };
        let summary = out
            .stdout
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.contains("Client finished"))
            .map(|l| format!("chef-client: {l}"))
            .unwrap_or_else(|| "chef-client: converged".to_string());
        Ok(CmReport { summary, produced })
    }
}

stratus_plugin_sdk::export_cm!(Chef);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruby_strings_cannot_be_broken_out_of() {
        assert_eq!(ruby_str(r"it's a\path"), r"'it\'s a\\path'");
    }

    #[test]
    fn errors_are_chefs_fatal_and_error_lines() {
        let out = host::CommandOutput {
            exit_code: Some(1),
            stdout:
                "Starting Chef Infra Client\n[2026-11-26T10:00:00+00:00] ERROR: Role x not found\n\
                     [2026-11-26T10:00:00+00:00] FATAL: Chef::Exceptions::RoleNotFound\n"
                    .into(),
            stderr: String::new(),
            truncated: false,
        };
        assert_eq!(
            errors(&out),
            "[2026-11-26T10:00:00+00:00] ERROR: Role x not found\n\
             [2026-11-26T10:00:00+00:00] FATAL: Chef::Exceptions::RoleNotFound"
        );
    }
}
