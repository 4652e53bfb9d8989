//! Ansible as a configuration-management adapter: `prepare` writes a local inventory and the
//! context as extra variables, `run` plays `<work_dir>/files/<playbook>` against this server
//! with `ansible-playbook`. Ansible's temporary and home directories live in the work directory.

use std::path::{Path, PathBuf};

use stratus_plugin_sdk::cm::*;

const ANSIBLE_PLAYBOOK: &str = "/usr/bin/ansible-playbook";
const INVENTORY: &str = "inventory.ini";
const EXTRA_VARS: &str = "extra-vars.json";
const PLAYBOOK: &str = "site.yml";

struct Ansible;

fn setting<'a>(ctx: &'a CmContext, key: &str) -> Option<&'a str> {
    ctx.settings
        .iter()
        .rev()
        .find(|s| s.key == key)
        .map(|s| s.value.as_str())
}

/// The playbook in the unit's `files` directory; it is played in place so that `roles/` and
/// relative includes next to it resolve.
fn playbook(ctx: &CmContext) -> PathBuf {
    let name = setting(ctx, "playbook").unwrap_or(PLAYBOOK);
    Path::new(&ctx.work_dir).join("files").join(name)
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The context as `stratus_*` variables plus every setting under its own name (settings with
/// a `-` get it replaced by `_`, since Jinja names cannot contain one).
fn extra_vars(ctx: &CmContext) -> String {
    let run_list: Vec<String> = ctx.run_list.iter().map(|r| json_str(r)).collect();
    let mut fields = vec![
        ("stratus_deployment".to_string(), json_str(&ctx.deployment)),
        ("stratus_tier".into(), json_str(&ctx.tier)),
        ("stratus_server_id".into(), json_str(&ctx.server.id)),
        ("stratus_server_name".into(), json_str(&ctx.server.name)),
        (
            "stratus_server_address".into(),
            json_str(&ctx.server.address),
        ),
        ("stratus_server_root".into(), json_str(&ctx.server_root)),
        ("stratus_work_dir".into(), json_str(&ctx.work_dir)),
        (
            "stratus_run_list".into(),
            format!("[{}]", run_list.join(", ")),
        ),
    ];
    for s in &ctx.settings {
        fields.push((s.key.replace('-', "_"), json_str(&s.value)));
    }
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("  {}: {v}", json_str(k)))
        .collect();
    format!("{{\n{}\n}}\n", body.join(",\n"))
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
    let mut lines: Vec<&str> = out
        .stdout
        .lines()
        .chain(out.stderr.lines())
        .map(str::trim)
        .filter(|l| l.starts_with("fatal:") || l.starts_with("ERROR!"))
        .collect();
    // Tools repeat an error at several levels; each line once is enough.
    let mut seen = std::collections::HashSet::new();
    lines.retain(|l| seen.insert(*l));
    if lines.is_empty() {
        let tail: Vec<&str> = out.stderr.lines().rev().take(5).collect();
        return tail.into_iter().rev().collect::<Vec<_>>().join("\n");
    }
    lines.join("\n")
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

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }
}
