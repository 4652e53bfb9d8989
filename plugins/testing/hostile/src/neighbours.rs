//! Attacks on another server's programs (`nb-*`), for tests that launch two servers side by
//! side. The manifest must allow `/bin/sh` (tests write their own `plugin.toml`); the shells
//! run `/usr/bin/socat`, `cat`, `ls`, `ln`, `kill` and (for a MariaDB victim) `/usr/bin/mariadb`.
//!
//! - `nb-victim`: spawns `victim`, a shell that writes the setting `secret` into
//!   `victim-secret` (mode 0666) in its service directory, serves that file on the unix socket
//!   `victim.sock` (mode 0777, through socat), and then `exec`s a `sleep` with the secret in its
//!   environment (`VICTIM_SECRET`); its pid goes to `victim.pid`. The modes are wide on purpose:
//!   only what separates servers may keep the neighbour out.
//! - `nb-attack`: with the settings `victim_dir`, `victim_pid` and optionally `victim_db`
//!   (`<address>:<port>` of a MariaDB whose service directory is `victim_dir`), a shell tries
//!   to read the file, list the directory, read `/proc/<pid>/environ`, signal and kill the
//!   process, connect to the socket, hard-link the file into its own directory, and log into
//!   the MariaDB as root over its socket, with its admin option file and over TCP. Each attempt
//!   is a line `<what>: refused <error>` or `<what>: SUCCEEDED <output>` in `hostile.log`; the
//!   first line is `uid: <uid> gid: <gid>`. The hook fails when one succeeded.

use stratus_plugin_sdk::files::{io_error, service_path};
use stratus_plugin_sdk::service::*;

const VICTIM: &str = r#"umask 0
printf '%s' "$1" > "$2/victim-secret"
/usr/bin/socat UNIX-LISTEN:"$2/victim.sock",fork,mode=777 "EXEC:/bin/cat $2/victim-secret" </dev/null >/dev/null 2>&1 &
export VICTIM_SECRET="$1"
echo $$ > "$2/victim.pid.tmp" && mv "$2/victim.pid.tmp" "$2/victim.pid"
exec /bin/sleep 100000
"#;

const ATTACK: &str = r#"D="$1"; P="$2"; O="$3"; H="$4"; PORT="$5"
try() {
  what="$1"; shift
  if out=$("$@" 2>&1 </dev/null); then r=SUCCEEDED; else r=refused; fi
  echo "$what: $r $(printf '%s' "$out" | tr '\0\n' '  ')"
}
echo "uid: $(id -u) gid: $(id -g)"
try read-file cat "$D/victim-secret"
try list-dir ls "$D"
try read-environ cat "/proc/$P/environ"
try signal kill -0 "$P"
try kill kill -KILL "$P"
try socket /usr/bin/socat -u "UNIX-CONNECT:$D/victim.sock" STDOUT
try hard-link ln "$D/victim-secret" "$O/stolen"
if [ -n "$H" ]; then
  try mariadb-socket /usr/bin/mariadb --no-defaults --user=root --socket="$D/private/mariadb.sock" -e "CREATE DATABASE pwned"
  try mariadb-admin-file /usr/bin/mariadb --defaults-file="$D/private/admin.cnf" --socket="$D/private/mariadb.sock" -e "CREATE DATABASE pwned"
  try mariadb-tcp /usr/bin/mariadb --no-defaults --user=root --host="$H" --port="$PORT" -e "CREATE DATABASE pwned"
fi
"#;

pub(crate) fn attack(ctx: &ServiceContext, name: &str) -> Result<(), HookError> {
    match name {
        "nb-victim" => victim(ctx),
        "nb-attack" => neighbour(ctx),
        other => Err(HookError::fatal(format!("unknown attack `{other}`"))),
    }
}

fn shell(name: &str, script: &str, args: &[&str]) -> host::ProcessSpec {
    let mut all = vec!["-c".to_string(), script.to_string(), name.to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    host::ProcessSpec {
        name: name.into(),
        program: "/bin/sh".into(),
        args: all,
        env: Vec::new(),
        working_dir: None,
    }
}

fn victim(ctx: &ServiceContext) -> Result<(), HookError> {
    let secret = setting(ctx, "secret").unwrap_or("victim-secret-value");
    host::spawn(&shell("victim", VICTIM, &[secret, &ctx.service_dir])).map_err(HookError::fatal)?;
    let (pid, sock) = (
        service_path(ctx, "victim.pid"),
        service_path(ctx, "victim.sock"),
    );
    for _ in 0..200 {
        if pid.exists() && sock.exists() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Err(HookError::fatal("the victim did not start within 10 s"))
}

fn neighbour(ctx: &ServiceContext) -> Result<(), HookError> {
    let get = |k| setting(ctx, k).unwrap_or("");
    let (host_, port) = get("victim_db").split_once(':').unwrap_or(("", ""));
    let args = [
        "attack",
        get("victim_dir"),
        get("victim_pid"),
        &ctx.service_dir,
        host_,
        port,
    ];
    let mut cmd = crate::command("/bin/sh", &["-c", ATTACK]);
    cmd.args.extend(args.iter().map(|a| a.to_string()));
    let out = host::run(&cmd).map_err(HookError::fatal)?;
    let log = service_path(ctx, "hostile.log");
    std::fs::write(&log, &out.stdout).map_err(|e| io_error("writing", &log, &e))?;
    match out.stdout.lines().find(|l| l.contains(": SUCCEEDED")) {
        Some(l) => Err(HookError::fatal(format!("the neighbour was reached: {l}"))),
        None => Ok(()),
    }
}
