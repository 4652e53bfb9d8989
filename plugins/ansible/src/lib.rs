//! Ansible as a configuration-management adapter: `prepare` writes a local inventory and the
//! context as extra variables, `run` plays `<work_dir>/files/<playbook>` against this server
//! with `ansible-playbook`. Ansible's temporary and home directories live in the work directory.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use stratus_plugin_sdk::cm::*;

const ANSIBLE_PLAYBOOK: &str = "/usr/bin/ansible-playbook";
const INVENTORY: &str = "inventory.ini";
const EXTRA_VARS: &str = "extra-vars.json";
const PLAYBOOK: &str = "site.yml";

struct Ansible;

/// The playbook in the unit's `files` directory; it is played in place so that `roles/` and
/// relative includes next to it resolve.
fn playbook(ctx: &CmContext) -> PathBuf {
    let name = cm_setting(ctx, "playbook").unwrap_or(PLAYBOOK);
    Path::new(&ctx.work_dir).join("files").join(name)
}

/// The context as `stratus_*` variables plus every setting under its own name (settings with
/// a `-` get it replaced by `_`, since Jinja names cannot contain one).
fn extra_vars(ctx: &CmContext) -> String {
    let mut vars = Map::new();
    for (k, v) in cm_facts(ctx) {
        vars.insert(k.into(), v.into());
    }
    vars.insert("stratus_run_list".into(), ctx.run_list.clone().into());
    // A setting may override a fact of the same name, as a later JSON key did before.
    for s in &ctx.settings {
        vars.insert(s.key.replace('-', "_"), s.value.clone().into());
    }
    // `{:#}` pretty-prints, so the file stays readable when a run is debugged.
    format!("{:#}\n", Value::Object(vars))
}

/// `ok=N changed=N … failed=N` of every host in the PLAY RECAP, summed.
fn recap(stdout: &str) -> Option<(u32, u32, u32)> {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("PLAY RECAP"));
    lines.next()?;
    let mut total = (0, 0, 0);
    for line in lines.take_while(|l| !l.trim().is_empty()) {
        for field in line.split_whitespace() {
            let Some((k, v)) = field.split_once('=') else {
                continue;
            };
            let n: u32 = v.parse().unwrap_or(0);
            match k {
                "ok" => total.0 += n,
                "changed" => total.1 += n,
                "failed" | "unreachable" => total.2 += n,
                _ => {}
            }
        }
    }
    Some(total)
}

/// Ansible's own account of the failure: its `fatal:` and `ERROR!` lines.
fn errors(out: &host::CommandOutput) -> String {
    error_lines(&[&out.stdout, &out.stderr], &out.stderr, |l| {
        l.starts_with("fatal:") || l.starts_with("ERROR!")
    })
}

impl Guest for Ansible {
    fn prepare(ctx: CmContext) -> Result<(), HookError> {
        let book = playbook(&ctx);
        if !book.is_file() {
            return Err(HookError::fatal(format!(
                "the playbook {} is missing from the unit's files",
                book.display()
            )));
        }
        let work = Path::new(&ctx.work_dir);
        files::write(
            work.join(INVENTORY),
            "localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n",
        )?;
        files::write(work.join(EXTRA_VARS), extra_vars(&ctx))?;
        let tmp = work.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| files::io_error("creating", &tmp, &e))?;
        log::info(&format!(
            "ansible: playbook {} ready for {}",
            book.display(),
            ctx.server.name
        ));
        Ok(())
    }

    fn run(ctx: CmContext) -> Result<CmReport, HookError> {
        let tmp = format!("{}/tmp", ctx.work_dir);
        let env = vec![
            ("HOME".to_string(), ctx.work_dir.clone()),
            ("ANSIBLE_LOCAL_TEMP".into(), tmp.clone()),
            ("ANSIBLE_REMOTE_TEMP".into(), tmp),
            ("ANSIBLE_NOCOLOR".into(), "1".into()),
            ("ANSIBLE_RETRY_FILES_ENABLED".into(), "0".into()),
            // Ansible starts its modules through PATH.
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("LANG".into(), "C.UTF-8".into()),
        ];
        log::status("ansible-playbook");
        let out = host::run(&host::Command {
            program: ANSIBLE_PLAYBOOK.into(),
            args: vec![
                "-i".into(),
                INVENTORY.into(),
                "-e".into(),
                format!("@{EXTRA_VARS}"),
                playbook(&ctx).display().to_string(),
            ],
            env,
            working_dir: Some(ctx.work_dir.clone()),
            timeout_ms: 0,
            stdin: None,
        })
        .map_err(|e| HookError::fatal(format!("running ansible-playbook: {e}")))?;
        log::info(&format!(
            "ansible-playbook output:\n{}{}",
            out.stdout, out.stderr
        ));
        if out.exit_code == Some(0) {
            let summary = match recap(&out.stdout) {
                Some((ok, changed, failed)) => {
                    format!("ansible-playbook: ok={ok} changed={changed} failed={failed}")
                }
                None => "ansible-playbook: played".to_string(),
            };
            return Ok(CmReport {
                summary,
                produced: vec![],
            });
        }
        Err(HookError::fatal(format!(
            "ansible-playbook failed (exit {}): {}",
            out.exit_code
                .map_or("signal".to_string(), |c| c.to_string()),
            errors(&out)
        )))
    }
}

stratus_plugin_sdk::export_cm!(Ansible);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recap_sums_every_host() {
        let out = "TASK [x] ***\nchanged: [localhost]\n\nPLAY RECAP *****\n\
                   localhost : ok=2    changed=2    unreachable=0    failed=0    skipped=0\n\
                   other     : ok=1    changed=0    unreachable=1    failed=1    skipped=0\n\n";
        assert_eq!(recap(out), Some((3, 2, 2)));
        assert_eq!(recap("ERROR! the playbook could not be found"), None);
    }

    fn context(settings: &[(&str, &str)]) -> CmContext {
        CmContext {
            deployment: "shop".into(),
            tier: "app".into(),
            server: ServerInfo {
                id: "app-1".into(),
                name: "shop-app-1".into(),
                address: "127.0.0.5".into(),
            },
            server_root: "/srv/root".into(),
            work_dir: "/srv/work".into(),
            run_list: vec!["web".into(), "db".into()],
            settings: settings
                .iter()
                .map(|(k, v)| Setting {
                    key: (*k).into(),
                    value: (*v).into(),
                })
                .collect(),
            credentials: vec![],
        }
    }

    #[test]
    fn json_strings_are_escaped() {
        let text = extra_vars(&context(&[("odd-value", "a\"b\\c\nd\u{1}")]));
        assert!(text.contains("\"a\\\"b\\\\c\\nd\\u0001\""), "{text}");
        let vars: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(vars["odd_value"], "a\"b\\c\nd\u{1}");
    }

    #[test]
    fn extra_vars_hold_the_facts_the_run_list_and_the_settings() {
        let text = extra_vars(&context(&[("stratus_tier", "overridden"), ("port", "80")]));
        let vars: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(vars["stratus_deployment"], "shop");
        assert_eq!(vars["stratus_server_address"], "127.0.0.5");
        assert_eq!(vars["stratus_work_dir"], "/srv/work");
        assert_eq!(vars["stratus_run_list"], serde_json::json!(["web", "db"]));
        assert_eq!(
            vars["stratus_tier"], "overridden",
            "a setting wins, as before"
        );
        assert_eq!(vars["port"], "80");
    }
}
