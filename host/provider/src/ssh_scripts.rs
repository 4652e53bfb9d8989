//! The `sh` scripts the SSH provider runs on a host. Each is a constant that reads its
//! arguments from `"$1"`…, which `ssh_command` passes as single-quoted words: nothing a
//! deployment, a server or a host says is ever spliced into a script's text.
//!
//! Hosts need a POSIX `sh`, `awk`, `sed`, `ps` (`-o pid= -o ppid= -o sid=`), `setsid`, `mktemp`
//! and Linux's `/proc`.
//!
//! The agent's pid file (`<remote-dir>/servers/<deployment>/.<server>.pid`: pid and start
//! time) sits beside the server's directory, not in it, so that nothing the server's programs
//! can write decides which process an ending kills.

/// Shell functions every script may use:
/// - `alive PID START`: whether PID is running (not a zombie) and started at START (ticks
///   since boot), i.e. is still the process it was;
/// - `kill_uid UID`: kills every process running as UID (the slot's program user; nothing
///   when UID is empty);
/// - `read_pid FILE`: sets `p` and `s` from a pid file (pid, start time), if there is one;
/// - `tree PID`: PID, its session and all their descendants (a daemon that left the session
///   is still a descendant until its parent dies);
/// - `end_agent PID START TENTHS`: SIGTERM to the agent, up to TENTHS tenths of a second for
///   it to stop what it started, then SIGSTOP and SIGKILL to all its tree and its services'
///   cgroup; fails (status 5) if the agent survives. Safe under `set -e`.
const FUNCS: &str = r#"
alive() { awk -v w="$2" '{ sub(/^.*\) /, ""); exit !($1 != "Z" && $20 == w) }' "/proc/$1/stat" 2>/dev/null; }
tree() {
  ps -e -o pid= -o ppid= -o sid= | awk -v r="$1" '
    { p[$1] = $2; s[$1] = $3 }
    END {
      k[r] = 1
      for (i in p) if (s[i] == r) k[i] = 1
      do { c = 0; for (i in p) if (!(i in k) && (p[i] in k)) { k[i] = 1; c = 1 } } while (c)
      for (i in k) print i
    }'
}
end_agent() {
  alive "$1" "$2" || return 0
  cg=$(sed -n 's/^0:://p' "/proc/$1/cgroup" 2>/dev/null) || true
  kill -TERM "$1" 2>/dev/null || true
  n=$3
  while [ "$n" -gt 0 ] && alive "$1" "$2"; do sleep 0.1; n=$((n - 1)); done
  for round in 1 2 3; do
    kill -STOP $(tree "$1") 2>/dev/null || true
    kill -KILL $(tree "$1") 2>/dev/null || true
  done
  c="/sys/fs/cgroup${cg%/}/stratus-agent-$1"
  if [ -n "$cg" ] && [ -e "$c/cgroup.kill" ]; then
    echo 1 > "$c/cgroup.kill" 2>/dev/null || true
    sleep 0.1
    rmdir "$c" 2>/dev/null || true
  fi
  n=50
  while [ "$n" -gt 0 ] && alive "$1" "$2"; do sleep 0.1; n=$((n - 1)); done
  if alive "$1" "$2"; then echo "agent $1 survived SIGKILL" >&2; return 5; fi
  return 0
}
boot_id() { cat /proc/sys/kernel/random/boot_id; }
kill_uid() {
  [ -n "$1" ] || return 0
  for round in 1 2 3; do
    u=$(ps -e -o pid= -o uid= | awk -v u="$1" '$2 == u { print $1 }')
    [ -n "$u" ] || return 0
    kill -KILL $u 2>/dev/null || true
    sleep 0.1
  done
}
read_pid() { p=; s=; [ -f "$1" ] && { read p s || [ -n "$s" ]; } < "$1"; }
"#;

/// `PREPARE DIR BIN PIDFILE TENTHS UID`: ends an earlier agent of this server (a launch
/// retried after the control plane stopped) and whatever still runs as the slot's program
/// user UID, makes the server's directory (with UID: `root:UID` 0750, closed to every other
/// server's programs) and prints `have` or `need` for the agent binary. Also how a slot's
/// reachability is checked.
const PREPARE: &str = r#"
set -e
umask 022
for p in "$1" "$1/agent"; do
  if [ -L "$p" ]; then echo "$p is a symbolic link" >&2; exit 4; fi
done
if read_pid "$3"; then end_agent "$p" "$s" "$4"; fi
kill_uid "$5"
mkdir -p "$1/agent"
if [ -n "$5" ]; then chown "0:$5" "$1"; chmod 750 "$1"; fi
if [ -x "$2" ]; then echo have; else echo need; fi
"#;

/// `COPY BINDIR NAME SIZE`, the binary on stdin: written under a temporary name, checked for
/// its size (a copy cut short must not pass for the binary) and renamed into place.
const COPY: &str = r#"
set -e
umask 022
mkdir -p "$1"
t=$(mktemp "$1/.stratus.XXXXXX")
trap 'rm -f "$t"' EXIT
cat > "$t"
if [ "$(wc -c < "$t")" -ne "$3" ]; then echo "the agent binary arrived incomplete" >&2; exit 4; fi
chmod 755 "$t"
mv -f "$t" "$1/$2"
"#;

/// `START DIR BIN PIDFILE AGENT-ARGS…`, the bootstrap on stdin: writes it (0600, temporary
/// name then rename, so a link planted at its name is replaced, never followed), starts the
/// agent in a session of its own detached from SSH, records its pid and start time, and prints
/// `PID START BOOT-ID`. Status 3: the binary is not there (removed meanwhile).
const START: &str = r#"
set -e
umask 077
t=$(mktemp "$1/agent/.bootstrap.XXXXXX")
cat > "$t"
mv -f "$t" "$1/agent/bootstrap.json"
rm -f "$1/agent/credential"
: >> "$1/agent.log"
chmod 600 "$1/agent.log"
if [ ! -x "$2" ]; then rm -f "$1/agent/bootstrap.json"; exit 3; fi
umask 022
d=$1; b=$2; pf=$3; shift 3
cd "$d"
STRATUS_SERVER_ROOT="$d" setsid "$b" agent --bootstrap "$d/agent/bootstrap.json" --root "$d" "$@" \
  < /dev/null >> "$d/agent.log" 2>&1 &
p=$!
s=$(awk '{ sub(/^.*\) /, ""); print $20 }' "/proc/$p/stat")
echo "$p $s" > "$pf"
echo "$p $s $(boot_id)"
"#;

/// `DESCRIBE PID START BOOT-ID`: prints `exists` or `gone`.
const DESCRIBE: &str = r#"
if [ "$(boot_id)" = "$3" ] && alive "$1" "$2"; then echo exists; else echo gone; fi
"#;

/// `TERMINATE PID START BOOT-ID TENTHS UID`: ends the agent and everything it started, and
/// whatever still runs as the slot's program user UID; an agent already gone (or a host
/// rebooted since) is success.
const TERMINATE: &str = r#"
if [ "$(boot_id)" = "$3" ]; then end_agent "$1" "$2" "$4" || exit $?; fi
kill_uid "$5"
"#;

/// `SURVEY REMOTE-DIR`: which machine this is, as `BOOT-ID MACHINE-ID DEVICE`, the device
/// being that of the remote directory (or its nearest existing parent): two addresses of one
/// machine answer the same, and so do no two machines (not even containers sharing a kernel,
/// whose remote directories are different mounts).
const SURVEY: &str = r#"
d=$1
while [ ! -e "$d" ] && [ -n "$d" ]; do d=${d%/*}; done
echo "$(boot_id) $(cat /etc/machine-id 2>/dev/null) $(stat -c %d "${d:-/}" 2>/dev/null)"
"#;

/// `LIST REMOTE-DIR DEPLOYMENT`: the server directories of the deployment on this host.
const LIST: &str = r#"
cd "$1/servers/$2" 2>/dev/null || exit 0
for f in *; do if [ -d "$f" ] && [ ! -L "$f" ]; then echo "$f"; fi; done
"#;

/// `END_RECORDED REMOTE-DIR DEPLOYMENT SERVER TENTHS UID`: ends the agent its pid file names
/// (for a server whose launch was never recorded: there is no handle), then what runs as UID.
const END_RECORDED: &str = r#"
pf="$1/servers/$2/.$3.pid"
if read_pid "$pf"; then end_agent "$p" "$s" "$4" || exit $?; fi
kill_uid "$5"
exit 0
"#;

/// `END_DISK REMOTE-DIR DEPLOYMENT SERVER LABEL`: refused while the agent runs; removes the
/// server's directory (LABEL empty) or moves it to `kept-disks/DEPLOYMENT/LABEL/SERVER` without
/// its bootstrap (prints where); then, once the host holds no server, the binary and the
/// remote directory go too.
const END_DISK: &str = r#"
set -e
d="$1/servers/$2/$3"
pf="$1/servers/$2/.$3.pid"
if read_pid "$pf" && alive "$p" "$s"; then
  echo "$d: its agent (pid $p) still runs; its disk is left in place" >&2; exit 6
fi
if [ -n "$4" ]; then
  k="$1/kept-disks/$2/$4"
  (umask 077; mkdir -p "$1/kept-disks"); chmod 700 "$1/kept-disks"; mkdir -p "$k"
  if [ -d "$d" ] && [ ! -L "$d" ]; then
    if [ ! -L "$d/agent" ]; then rm -f "$d/agent/bootstrap.json" "$d/agent/credential"; fi
    rm -rf "$k/$3"
    mv "$d" "$k/$3"
  fi
  echo "$k/$3"
else
  rm -rf "$d"
fi
rm -f "$pf"
rmdir "$1/servers/$2" 2>/dev/null || true
if rmdir "$1/servers" 2>/dev/null || [ ! -e "$1/servers" ]; then
  rm -rf "$1/bin"
  rmdir "$1" 2>/dev/null || true
fi
"#;

/// A script with the shared functions before it.
fn with_funcs(body: &str) -> String {
    [FUNCS, body].concat()
}

pub(crate) fn prepare() -> String {
    with_funcs(PREPARE)
}
pub(crate) fn copy() -> String {
    COPY.to_string()
}
pub(crate) fn start() -> String {
    with_funcs(START)
}
pub(crate) fn describe() -> String {
    with_funcs(DESCRIBE)
}
pub(crate) fn terminate() -> String {
    with_funcs(TERMINATE)
}
pub(crate) fn survey() -> String {
    with_funcs(SURVEY)
}
pub(crate) fn list() -> String {
    LIST.to_string()
}
pub(crate) fn end_recorded() -> String {
    with_funcs(END_RECORDED)
}
pub(crate) fn end_disk() -> String {
    with_funcs(END_DISK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh_command::remote_command;
    use std::process::{Command, Stdio};

    /// Runs a script here as a host would (through `sh -c` with quoted words).
    fn run(script: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
        use std::io::Write;
        let mut child = Command::new("sh")
            .args(["-c", &remote_command(script, args)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn every_script() -> Vec<String> {
        vec![
            survey(),
            prepare(),
            copy(),
            start(),
            describe(),
            terminate(),
            list(),
            end_recorded(),
            end_disk(),
        ]
    }

    #[test]
    fn every_script_parses() {
        for script in every_script() {
            let out = Command::new("sh")
                .args(["-n", "-c", &script])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{script}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// One machine answers the same for any remote directory on one filesystem, even one not
    /// made yet; a directory on another mount answers differently.
    #[test]
    fn survey_names_the_machine_by_boot_machine_and_device() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("not/made/yet");
        let (status, here, err) = run(&survey(), &[absent.to_str().unwrap()], "");
        assert_eq!(status, 0, "{err}");
        assert_eq!(here.split_whitespace().count(), 3, "{here}");
        assert_eq!(run(&survey(), &[dir.path().to_str().unwrap()], "").1, here);
        let proc_fs = run(&survey(), &["/proc/self"], "").1;
        assert_ne!(proc_fs, here, "/proc is another mount");
    }

    /// A process's start time (field 22 of its stat) and this boot's id, as the scripts take them.
    fn start_and_boot(pid: &str) -> (String, String) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let start = stat
            .rsplit(") ")
            .next()
            .unwrap()
            .split(' ')
            .nth(19)
            .unwrap();
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        (start.to_string(), boot.trim().to_string())
    }

    /// A process started here is `alive` by its start time, gone once it ends, and a pid with
    /// another start time (a reused pid) is not it.
    #[test]
    fn describe_tells_a_process_by_pid_and_start_time() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id().to_string();
        let (start, boot) = start_and_boot(&pid);
        let boot = boot.as_str();
        assert_eq!(run(&describe(), &[&pid, &start, boot], "").1, "exists\n");
        assert_eq!(run(&describe(), &[&pid, "1", boot], "").1, "gone\n");
        assert_eq!(
            run(&describe(), &[&pid, &start, "another-boot"], "").1,
            "gone\n"
        );
        // Terminate: SIGTERM ends it within the grace.
        let (status, _, err) = run(&terminate(), &[&pid, &start, boot, "20", ""], "");
        assert_eq!(status, 0, "{err}");
        let _ = child.wait();
        assert_eq!(run(&describe(), &[&pid, &start, boot], "").1, "gone\n");
        // Terminating what is already gone succeeds.
        assert_eq!(run(&terminate(), &[&pid, &start, boot, "20", ""], "").0, 0);
    }

    /// The whole tree goes: a child that ignores SIGTERM and a grandchild that left the session.
    #[test]
    fn terminate_kills_what_ignores_sigterm_and_what_left_the_session() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let line = format!(
            "trap '' TERM; setsid sh -c 'trap \"\" TERM; echo $$ >> {p}; sleep 300' & \
             sh -c 'trap \"\" TERM; echo $$ >> {p}; sleep 300' & sleep 300",
            p = pids.display()
        );
        let mut agent = Command::new("setsid")
            .args(["sh", "-c", &line])
            .spawn()
            .unwrap();
        let pid = agent.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::read_to_string(&pids)
            .map(|s| s.lines().count())
            .unwrap_or(0)
            < 2
        {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let (start, boot) = start_and_boot(&pid.to_string());
        let (status, _, err) = run(&terminate(), &[&pid.to_string(), &start, &boot, "3"], "");
        assert_eq!(status, 0, "{err}");
        let _ = agent.wait();
        for p in std::fs::read_to_string(&pids).unwrap().lines() {
            let state = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let state = state.rsplit(") ").next().unwrap_or("").chars().next();
            assert!(matches!(state, None | Some('Z')), "{p} survived: {state:?}");
        }
    }

    /// A launch retried on the same slot first ends the agent its pid file names (a twin must
    /// not run beside the new one); a pid file naming a process that is not it (another start
    /// time) ends nothing.
    #[test]
    fn prepare_ends_the_earlier_agent_of_a_retried_launch() {
        let dir = tempfile::tempdir().unwrap();
        let server = dir.path().join("servers/shop/app-1");
        let pidfile = dir.path().join("servers/shop/.app-1.pid");
        let mut earlier = Command::new("setsid")
            .args(["sleep", "300"])
            .spawn()
            .unwrap();
        let mut bystander = Command::new("sleep").arg("300").spawn().unwrap();
        let start_of = |pid: u32| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            stat.rsplit(") ")
                .next()
                .unwrap()
                .split(' ')
                .nth(19)
                .unwrap()
                .to_string()
        };
        std::fs::create_dir_all(pidfile.parent().unwrap()).unwrap();
        let bin = dir.path().join("bin/stratus-abc");
        let args = |_: ()| {
            [
                server.to_str().unwrap(),
                bin.to_str().unwrap(),
                pidfile.to_str().unwrap(),
                "5",
            ]
            .map(String::from)
        };
        let wrong = format!(
            "{} {}",
            bystander.id(),
            start_of(bystander.id()).parse::<u64>().unwrap() + 1
        );
        std::fs::write(&pidfile, wrong).unwrap();
        let a = args(());
        let (status, _, err) = run(&prepare(), &a.each_ref().map(String::as_str), "");
        assert_eq!(status, 0, "{err}");
        assert!(
            bystander.try_wait().unwrap().is_none(),
            "another process is never ended"
        );
        std::fs::write(
            &pidfile,
            format!("{} {}", earlier.id(), start_of(earlier.id())),
        )
        .unwrap();
        let (status, out, err) = run(&prepare(), &a.each_ref().map(String::as_str), "");
        assert_eq!((status, out.as_str()), (0, "need\n"), "{err}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let ended = loop {
            match earlier.try_wait().unwrap() {
                Some(status) => break status.code().is_none(),
                None if std::time::Instant::now() > deadline => break false,
                None => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        };
        let _ = earlier.kill();
        let _ = earlier.wait();
        assert!(ended, "the earlier agent was ended");
        let _ = bystander.kill();
        let _ = bystander.wait();
    }

    /// The server's directory goes, and with the last server the binary and the remote
    /// directory; a kept disk loses its bootstrap.
    #[test]
    fn end_disk_removes_or_keeps_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let remote = dir.path().join("stratus-agent");
        let remote_s = remote.to_str().unwrap();
        let bin = remote.join("bin/stratus-abc");
        for id in ["app-1", "app-2"] {
            let server = remote.join("servers/shop").join(id);
            let pidfile = remote.join(format!("servers/shop/.{id}.pid"));
            let (status, out, err) = run(
                &prepare(),
                &[
                    server.to_str().unwrap(),
                    bin.to_str().unwrap(),
                    pidfile.to_str().unwrap(),
                    "1",
                ],
                "",
            );
            assert_eq!((status, out.as_str()), (0, "need\n"), "{err}");
            std::fs::write(server.join("agent/bootstrap.json"), "secret").unwrap();
            std::fs::write(server.join("agent/credential"), "secret").unwrap();
        }
        let (status, _, err) = run(
            &copy(),
            &[remote.join("bin").to_str().unwrap(), "stratus-abc", "5"],
            "12345",
        );
        assert_eq!(status, 0, "{err}");
        let (status, _, err) = run(
            &copy(),
            &[remote.join("bin").to_str().unwrap(), "stratus-x", "9"],
            "12345",
        );
        assert_ne!(status, 0, "a short copy is refused: {err}");
        assert!(!remote.join("bin/stratus-x").exists());
        assert_eq!(run(&list(), &[remote_s, "shop"], "").1, "app-1\napp-2\n");
        let (status, out, err) = run(&end_disk(), &[remote_s, "shop", "app-1", "post-mortem"], "");
        assert_eq!(status, 0, "{err}");
        let kept = remote.join("kept-disks/shop/post-mortem/app-1");
        assert_eq!(out.trim(), kept.to_str().unwrap());
        assert!(kept.join("agent").is_dir() && !kept.join("agent/bootstrap.json").exists());
        assert!(!kept.join("agent/credential").exists());
        assert!(bin.exists(), "app-2 still needs the binary");
        std::fs::remove_dir_all(remote.join("kept-disks")).unwrap();
        let (status, _, err) = run(&end_disk(), &[remote_s, "shop", "app-2", ""], "");
        assert_eq!(status, 0, "{err}");
        assert!(!remote.exists(), "nothing of Stratus is left");
    }
}
