//! Puppet as a configuration-management adapter: `prepare` copies the manifest from the unit's
//! input files into the work directory, `run` applies it with `puppet apply`, the context given
//! as `stratus_*` facts. Puppet's own state (vardir, ssldir, …) lives in the work directory,
//! so nothing outside the server root is touched by the run itself.

use std::path::{Path, PathBuf};

use stratus_plugin_sdk::cm::*;

const PUPPET: &str = "/usr/bin/puppet";
/// Puppet needs PATH for its providers (user, package, exec); nothing else is inherited.
const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// The copy of the manifest that `run` applies.
const MANIFEST: &str = "site.pp";

struct Puppet;

/// The manifest shipped in the unit's `files` directory.
fn source_manifest(ctx: &CmContext) -> PathBuf {
    let name = cm_setting(ctx, "manifest").unwrap_or(MANIFEST);
    Path::new(&ctx.work_dir).join("files").join(name)
}

/// The context as facts, `FACTER_<name>` variables puppet turns into `$facts['<name>']`.
fn facts(ctx: &CmContext) -> Vec<(String, String)> {
    let mut f: Vec<(String, String)> = cm_facts(ctx)
        .into_iter()
        .map(|(k, v)| (format!("FACTER_{k}"), v.to_string()))
        .collect();
    f.push(("FACTER_stratus_run_list".into(), ctx.run_list.join(",")));
    for s in &ctx.settings {
        let key = s.key.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        f.push((format!("FACTER_stratus_setting_{key}"), s.value.clone()));
    }
    f
}

fn args(ctx: &CmContext) -> Vec<String> {
    let work = Path::new(&ctx.work_dir);
    let dir = |name: &str| work.join("puppet").join(name).display().to_string();
    let mut a: Vec<String> = vec!["apply".into(), "--detailed-exitcodes".into()];
    a.extend(["--color".into(), "false".into(), "--summarize".into()]);
    for (flag, name) in [
        ("--vardir", "var"),
        ("--confdir", "etc"),
        ("--codedir", "code"),
        ("--logdir", "log"),
        ("--rundir", "run"),
        ("--ssldir", "ssl"),
        ("--publicdir", "public"),
    ] {
        a.push(flag.into());
        a.push(dir(name));
    }
    let modules = work.join("files/modules");
    if modules.is_dir() {
        a.push("--modulepath".into());
        a.push(modules.display().to_string());
    }
    a.push(work.join(MANIFEST).display().to_string());
    a
}

/// `Changed: N` from the `--summarize` report's Resources section (absent when nothing changed).
fn changed(stdout: &str) -> Option<u32> {
    let mut in_resources = false;
    let mut seen = false;
    for line in stdout.lines() {
        let t = line.trim();
        if !line.starts_with(' ') {
            in_resources = t == "Resources:";
            seen |= in_resources;
            continue;
        }
        if in_resources && let Some(n) = t.strip_prefix("Changed:") {
            return n.trim().parse().ok();
        }
    }
    seen.then_some(0)
}

/// Puppet's `Error:` lines, without facter's complaints about unreadable `/proc` entries,
/// which appear on every run in a container and say nothing about the manifest.
fn errors(out: &host::CommandOutput) -> String {
    error_lines(&[&out.stderr, &out.stdout], &out.stderr, |l| {
        l.starts_with("Error:") && !l.starts_with("Error: Facter:")
    })
}

impl Guest for Puppet {
    fn prepare(ctx: CmContext) -> Result<(), HookError> {
        let source = source_manifest(&ctx);
        let text = files::read_to_string(&source)?;
        let work = Path::new(&ctx.work_dir);
        files::write(work.join(MANIFEST), text)?;
        for name in ["var", "etc", "code", "log", "run", "ssl", "public"] {
            let d = work.join("puppet").join(name);
            std::fs::create_dir_all(&d).map_err(|e| files::io_error("creating", &d, &e))?;
        }
        log::info(&format!(
            "puppet: manifest {} ready for {}",
            source.display(),
            ctx.server.name
        ));
        Ok(())
    }

    fn run(ctx: CmContext) -> Result<CmReport, HookError> {
        let mut env = facts(&ctx);
        env.push(("HOME".into(), ctx.work_dir.clone()));
        env.push(("PATH".into(), PATH.into()));
        env.push(("LANG".into(), "C.UTF-8".into()));
        log::status("puppet apply");
        let out = host::run(&host::Command {
            program: PUPPET.into(),
            args: args(&ctx),
            env,
            working_dir: Some(ctx.work_dir.clone()),
            timeout_ms: 0,
            stdin: None,
        })
        .map_err(|e| HookError::fatal(format!("running puppet: {e}")))?;
        log::info(&format!("puppet output:\n{}{}", out.stdout, out.stderr));
        match out.exit_code {
            Some(0) | Some(2) => {
                let summary = match changed(&out.stdout) {
                    Some(n) => format!("puppet apply: {n} resources changed"),
                    None => "puppet apply: applied".to_string(),
                };
                Ok(CmReport {
                    summary,
                    produced: vec![],
                })
            }
            code => Err(HookError::fatal(format!(
                "puppet apply failed (exit {}): {}",
                code.map_or("signal".to_string(), |c| c.to_string()),
                errors(&out)
            ))),
        }
    }
}

stratus_plugin_sdk::export_cm!(Puppet);

#[cfg(test)]
mod tests {
    use super::*;

    fn output(stdout: &str, stderr: &str) -> host::CommandOutput {
        host::CommandOutput {
            exit_code: Some(6),
            stdout: stdout.into(),
            stderr: stderr.into(),
            truncated: false,
        }
    }

    #[test]
    fn changed_reads_the_summary_resources_section() {
        let report = "Notice: Applied catalog in 0.02 seconds\nChanges:\n            Total: 5\n\
                      Resources:\n          Changed: 3\n      Out of sync: 3\n            Total: 10\n";
        assert_eq!(changed(report), Some(3));
        let idle = "Resources:\n            Total: 10\nTime:\n   Changed: 9\n";
        assert_eq!(changed(idle), Some(0));
        assert_eq!(changed("Notice: nothing"), None);
    }

    #[test]
    fn errors_keep_puppets_lines_once_without_facter_noise() {
        let stderr = "Error: Facter: Permission denied @ rb_sysopen - /proc/1/environ\n\
                      Error: Could not set 'file' on ensure: No such file\n\
                      Error: Could not set 'file' on ensure: No such file\n\
                      Error: /Stage[main]/Main/File[/r/x]/ensure: change from 'absent' to 'file' failed\n";
        assert_eq!(
            errors(&output("Notice: Compiled catalog\n", stderr)),
            "Error: Could not set 'file' on ensure: No such file\n\
             Error: /Stage[main]/Main/File[/r/x]/ensure: change from 'absent' to 'file' failed"
        );
        assert_eq!(errors(&output("", "ruby: crash\n")), "ruby: crash");
    }
}
