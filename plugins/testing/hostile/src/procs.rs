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
