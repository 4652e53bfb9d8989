//! A program user per server, in real launches (the agent runs as root here): two deployments
//! side by side, and a hostile plugin on one, granted a shell, goes after the other's files,
//! processes, unix socket and MariaDB. Each attempt must be refused and the victim must stay
//! healthy. A process left running as a server's program uid is killed at terminate and before
//! the uid is reused, and what it left in /run/lock, its message queues and its keyring go then
//! too.

use crate::common;

use common::{Stratus, read, server_root, servers, terminate};
use serde_json::Value;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped: needs root (programs run as a program uid only under a root agent)");
    }
    root
}

/// The hostile package copied to `<state>/<name>`, granted `/bin/sh`.
fn hostile_with_shell(st: &Stratus, name: &str) -> PathBuf {
    common::package_copy(st, name, "hostile", |_| {
        "[plugin]\nname = \"hostile\"\nversion = \"0.1.0\"\nworld = \"service\"\n\n\
         [capabilities]\nmemory-mb = 64\ntimeout-ms = 30000\n\
         dirs = [ { dir = \"service\", access = \"read-write\" } ]\nprograms = [\"/bin/sh\"]\n"
            .to_string()
    })
}

/// Launches deployment file `file`, which must reach RUNNING.
fn launch(st: &Stratus, file: &Path) {
    let out = st.run(&["launch", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The only server of tier `tier` of `dep`, with its root, first service directory and the
/// program uid its address gives it.
struct Server {
    root: PathBuf,
    dir: PathBuf,
    address: std::net::Ipv4Addr,
    uid: u32,
}

fn server(st: &Stratus, dep: &str, tier: &str) -> Server {
    let d = st.deployment(dep);
    assert_eq!(d["state"], "RUNNING", "{d}");
    let s: Value = servers(&d, tier)[0].clone();
    let address: std::net::Ipv4Addr = s["address"].as_str().unwrap().parse().unwrap();
    let root = server_root(st, dep, &s);
    let dir = root
        .join("mnt/services")
        .join(s["services"][0]["id"].as_str().unwrap());
    let uid = stratus_provider::program_uid(address).expect("a leased 127.x address");
    Server {
        root,
        dir,
        address,
        uid,
    }
}

/// The real uid of `pid`.
fn uid_of(pid: u32) -> u32 {
    let status = read(Path::new(&format!("/proc/{pid}/status")));
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap()
}

/// Every agent of `dep` is RUNNING and so is the deployment.
fn assert_healthy(st: &Stratus, dep: &str, tier: &str) {
    let d = st.deployment(dep);
    assert_eq!(d["state"], "RUNNING", "{d}");
    for s in servers(&d, tier) {
        assert_eq!(s["agent"], "RUNNING", "{s}");
    }
}

/// The server root is root's, group the server's gid, 0750: closed to every other server.
fn assert_closed(s: &Server) {
    let m = std::fs::metadata(&s.root).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o777),
        (0, s.uid, 0o750),
        "{}",
        s.root.display()
    );
}

/// Launches the attacker deployment `dep` going after `victim_dir`/`victim_pid` (and a MariaDB
/// at `victim_db`); returns its server and the lines of its `hostile.log`.
fn attack(
    st: &Stratus,
    dep: &str,
    victim_dir: &Path,
    victim_pid: u32,
    victim_db: &str,
) -> (Server, String) {
    let pkg = hostile_with_shell(st, dep);
    let settings = format!(
        "attack = \"nb-attack\", victim_dir = \"{}\", victim_pid = \"{victim_pid}\", \
         victim_db = \"{victim_db}\"",
        victim_dir.display()
    );
    let file = common::one_service(st, dep, &pkg, &settings, "");
    let out = st.run(&["launch", file.to_str().unwrap()]);
    let root = st.dir().join("servers").join(dep);
    let log = common::every_file(&root)
        .into_iter()
        .find(|p| p.ends_with("hostile.log"))
        .map(|p| read(&p))
        .unwrap_or_default();
    assert!(
        out.status.success(),
        "the attacker's launch failed (a SUCCEEDED line means the neighbour was reached):\n{log}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (server(st, dep, "h"), log)
}

/// How the refusals read: the kernel's EACCES and EPERM (the mariadb client prints EACCES as
/// `(13)` for a socket, and cannot open an option file it may not read), MariaDB's own.
const PERMISSION_ERRORS: &[&str] = &[
    "Permission denied",
    "Operation not permitted",
    "' (13)",
    "Could not open required defaults file",
    "Access denied",
    "is not allowed to connect",
];

/// Every attempt named in `expect` is in the log and was refused for want of permission.
fn assert_refused(log: &str, expect: &[&str]) {
    for what in expect {
        let line = log
            .lines()
            .find(|l| l.starts_with(&format!("{what}: ")))
            .unwrap_or_else(|| panic!("no attempt `{what}` in:\n{log}"));
        assert!(line.contains(": refused "), "{line}\n{log}");
        assert!(
            PERMISSION_ERRORS.iter().any(|why| line.contains(why)),
            "refused for another reason: {line}"
        );
    }
}

#[test]
fn a_neighbour_cannot_read_signal_or_connect_to_another_servers_programs() {
    if !root() {
        return;
    }
    let st = Stratus::new();
    let secret = "victim-secret-4f1d2a9c";
    let pkg = hostile_with_shell(&st, "victim");
    let settings = format!("attack = \"nb-victim\", secret = \"{secret}\"");
    launch(
        &st,
        &common::one_service(&st, "victim", &pkg, &settings, ""),
    );
    let victim = server(&st, "victim", "h");
    let pid: u32 = read(&victim.dir.join("victim.pid")).trim().parse().unwrap();
    assert_eq!(
        uid_of(pid),
        victim.uid,
        "the victim runs as its server's uid"
    );
    assert_closed(&victim);
    let owner = std::fs::metadata(&victim.dir).unwrap();
    assert_eq!((owner.uid(), owner.gid()), (victim.uid, victim.uid));

    // The provider told the agent its uid; the agent says so in its log.
    let agent = servers(&st.deployment("victim"), "h")[0]["pid"]
        .as_u64()
        .unwrap();
    let cmdline = read(Path::new(&format!("/proc/{agent}/cmdline"))).replace('\0', " ");
    let arg = format!("--program-user={0}:{0}", victim.uid);
    assert!(cmdline.contains(&arg), "{cmdline}");
    let agent_log = read(&victim.root.join("agent/agent.log"));
    assert!(
        agent_log.contains(&format!("user={0}:{0}", victim.uid)),
        "{agent_log}"
    );
    // Its uid has no passwd entry by design, so the agent asks no user database for a name
    // (with `passwd: files systemd`, Debian's default, a lookup maps libnss_systemd).
    let maps = read(Path::new(&format!("/proc/{agent}/maps")));
    assert!(
        !maps.contains("libnss_"),
        "the agent asked NSS about its program uid:\n{maps}"
    );

    let (attacker, log) = attack(&st, "attacker", &victim.dir, pid, "");
    assert_ne!(attacker.address, victim.address);
    assert_ne!(attacker.uid, victim.uid);
    assert!(
        log.starts_with(&format!("uid: {0} gid: {0}\n", attacker.uid)),
        "{log}"
    );
    assert_closed(&attacker);
    assert_refused(
        &log,
        &[
            "read-file",
            "list-dir",
            "read-environ",
            "signal",
            "kill",
            "socket",
            "hard-link",
        ],
    );
    assert!(!log.contains(secret), "{log}");
    assert!(!attacker.dir.join("stolen").exists());

    // The victim is untouched: its process lives, its file holds what it wrote.
    assert!(common::alive(pid), "the victim's process was killed");
    assert_eq!(read(&victim.dir.join("victim-secret")), secret);
    assert_healthy(&st, "victim", "h");
    assert_healthy(&st, "attacker", "h");
    terminate_all(&st, &["attacker", "victim"]);
}

/// The outside test's finding, replayed: a plugin with a shell on one deployment goes after
/// another deployment's MariaDB, over its socket (as root without a password, and with the
/// victim's admin option file) and over TCP.
#[test]
fn a_neighbour_cannot_reach_another_deployments_mariadb() {
    if !root() {
        return;
    }
    let st = Stratus::new();
    let mariadb = stratus_plugin_artifacts::package_dir("mariadb");
    let file = st.write_file(
        "db.toml",
        &format!(
            "[deployment]\nname = \"db\"\n\n[tiers.db]\nmin = 1\nmax = 1\nservices = [\"mysql\"]\n\n\
             [services.mysql]\npackage = \"{}\"\nports = {{ mysql = 3306 }}\n",
            mariadb.display()
        ),
    );
    launch(&st, &file);
    let db = server(&st, "db", "db");
    assert_closed(&db);
    let pid: u32 = read(&db.dir.join("mariadbd.pid")).trim().parse().unwrap();
    assert_eq!(uid_of(pid), db.uid, "mariadbd runs as its server's uid");

    let target = format!("{}:3306", db.address);
    let (_, log) = attack(&st, "thief", &db.dir, pid, &target);
    assert_refused(
        &log,
        &[
            "read-environ",
            "kill",
            "mariadb-socket",
            "mariadb-admin-file",
            "mariadb-tcp",
        ],
    );

    // The victim's admin still gets in (as root, who may read its option file), and no
    // database was created.
    let admin = db.dir.join("private/admin.cnf");
    let out = std::process::Command::new("/usr/bin/mariadb")
        .arg(format!("--defaults-file={}", admin.display()))
        .arg(format!(
            "--socket={}",
            db.dir.join("private/mariadb.sock").display()
        ))
        .args(["--batch", "--skip-column-names", "-e", "SHOW DATABASES"])
        .output()
        .unwrap();
    let dbs = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dbs.contains("mysql") && !dbs.contains("pwned"), "{dbs}");
    assert!(common::alive(pid), "mariadbd was killed");

    // The generated admin password appears in no log, event or status.
    let password = read(&admin)
        .lines()
        .find_map(|l| l.strip_prefix("password = "))
        .unwrap()
        .to_string();
    assert_eq!(password.len(), 32);
    let mut seen = st.ok(&["events"]);
    seen.push_str(&st.ok(&["status", "--output", "json"]));
    for f in common::every_file(&st.dir().join("logs"))
        .into_iter()
        .chain(common::every_file(&db.root.join("agent")))
    {
        seen.push_str(&String::from_utf8_lossy(&std::fs::read(&f).unwrap()));
    }
    assert!(!seen.contains(&password), "the admin password leaked");
    assert_healthy(&st, "db", "db");
    terminate_all(&st, &["thief", "db"]);
}

/// Terminates every deployment of `names` (the state holds only these), then checks that
/// every agent is gone.
fn terminate_all(st: &Stratus, names: &[&str]) {
    let pids = st.agent_pids();
    for name in names {
        st.ok(&["terminate", name]);
        assert_eq!(st.deployment(name)["state"], "TERMINATED");
    }
    for pid in pids {
        assert!(
            common::wait_gone(pid, Duration::from_secs(10)),
            "agent {pid} still running after terminate"
        );
    }
}

/// A process started as `uid` (what a program of a server that escaped its cgroup would be),
/// in a session of its own.
fn leftover(uid: u32) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("/bin/sleep")
        .arg("300")
        .uid(uid)
        .gid(uid)
        .process_group(0)
        .spawn()
        .unwrap()
}

/// Whether `child` ended within ten seconds (reaping it).
fn ended(child: &mut std::process::Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// Runs `f` as `uid`, between fork and the exec of `/bin/true`: whether it returned true. `f`
/// may make raw system calls only.
fn as_uid(uid: u32, f: impl FnMut() -> bool + Send + Sync + 'static) -> bool {
    use std::os::unix::process::CommandExt;
    let mut f = f;
    let mut cmd = std::process::Command::new("/bin/true");
    cmd.uid(uid).gid(uid);
    // SAFETY: `f` makes raw system calls only, and the error is built without allocating.
    unsafe {
        cmd.pre_exec(move || match f() {
            true => Ok(()),
            false => Err(std::io::Error::from_raw_os_error(nix::libc::EPERM)),
        })
    };
    cmd.status().is_ok_and(|s| s.success())
}

/// What a holder of a program uid leaves outside its server that the kernel or a shared
/// directory keeps after its last process: a file in `/run/lock` (when the host has that
/// world-writable directory), a POSIX message queue and a key in its user keyring.
struct Leftovers {
    lock_file: Option<PathBuf>,
    queue: std::ffi::CString,
    key: std::ffi::CString,
}

/// Leaves [`Leftovers`] of `uid`, named after `tag`.
fn leave(uid: u32, tag: &str) -> Leftovers {
    let name = format!("stratus-reuse-{}-{tag}", std::process::id());
    let lock = Path::new("/run/lock");
    let lock_file = std::fs::symlink_metadata(lock)
        .is_ok_and(|m| m.is_dir() && m.uid() == 0 && m.mode() & 0o1002 == 0o1002)
        .then(|| lock.join(&name));
    if let Some(f) = &lock_file {
        std::fs::write(f, "the earlier holder's").unwrap();
        std::os::unix::fs::lchown(f, Some(uid), Some(uid)).unwrap();
    }
    let queue = std::ffi::CString::new(format!("/{name}")).unwrap();
    let key = std::ffi::CString::new(name).unwrap();
    let q = queue.clone();
    assert!(
        as_uid(uid, move || {
            // SAFETY: a NUL-terminated name, a mode and no attributes.
            let fd = unsafe {
                nix::libc::mq_open(
                    q.as_ptr(),
                    nix::libc::O_RDWR | nix::libc::O_CREAT,
                    0o600 as nix::libc::c_uint,
                    std::ptr::null_mut::<nix::libc::mq_attr>(),
                )
            };
            fd >= 0
        }),
        "cannot create a message queue as the program uid"
    );
    let k = key.clone();
    assert!(
        as_uid(uid, move || {
            // SAFETY: NUL-terminated type and description, a payload of the length given.
            unsafe {
                nix::libc::syscall(
                    nix::libc::SYS_add_key,
                    c"user".as_ptr(),
                    k.as_ptr(),
                    c"secret".as_ptr(),
                    6usize,
                    nix::libc::KEY_SPEC_USER_KEYRING as nix::libc::c_long,
                ) > 0
            }
        }),
        "cannot add a key as the program uid"
    );
    assert!(!key_gone(uid, &key), "the kernel did not keep the key");
    Leftovers {
        lock_file,
        queue,
        key,
    }
}

/// Whether `uid` finds no key `key` in its user keyring.
fn key_gone(uid: u32, key: &std::ffi::CStr) -> bool {
    let k = key.to_owned();
    as_uid(uid, move || {
        // SAFETY: NUL-terminated type and description, no destination keyring.
        unsafe {
            nix::libc::syscall(
                nix::libc::SYS_keyctl,
                nix::libc::KEYCTL_SEARCH as nix::libc::c_long,
                nix::libc::KEY_SPEC_USER_KEYRING as nix::libc::c_long,
                c"user".as_ptr(),
                k.as_ptr(),
                0 as nix::libc::c_long,
            ) < 0
        }
    })
}

/// Asserts that none of `left` remains for `uid` after `when`.
fn assert_gone(uid: u32, left: &Leftovers, when: &str) {
    if let Some(f) = &left.lock_file {
        assert!(
            std::fs::symlink_metadata(f).is_err(),
            "{}: the earlier holder's /run/lock file survived {when}",
            f.display()
        );
    }
    // SAFETY: a NUL-terminated name.
    let q = unsafe { nix::libc::mq_open(left.queue.as_ptr(), nix::libc::O_RDONLY) };
    assert!(q < 0, "the earlier holder's message queue survived {when}");
    assert!(
        key_gone(uid, &left.key),
        "the earlier holder's key survived {when}"
    );
}

#[test]
fn a_leftover_process_of_a_program_uid_dies_at_terminate_and_before_the_uid_is_reused() {
    if !root() {
        return;
    }
    let st = Stratus::new();
    let pkg = hostile_with_shell(&st, "reuse");
    let file = common::one_service(&st, "reuse", &pkg, "attack = \"none\"", "");
    launch(&st, &file);
    let first = server(&st, "reuse", "h");
    let mut during = leftover(first.uid);
    let left = leave(first.uid, "during");
    terminate(&st, "reuse");
    assert!(
        ended(&mut during),
        "a process of the uid outlived terminate"
    );
    assert_gone(first.uid, &left, "terminate");

    // One that appears after terminate (a holder whose terminate could not reach it) dies
    // before the next server with the same lease starts.
    let mut stale = leftover(first.uid);
    // And what it left in /tmp: the next holder of the uid does not inherit it.
    let left_file = std::env::temp_dir().join(format!("stratus-reuse-{}", std::process::id()));
    std::fs::write(&left_file, "the earlier holder's").unwrap();
    std::os::unix::fs::lchown(&left_file, Some(first.uid), Some(first.uid)).unwrap();
    let left = leave(first.uid, "after");
    launch(&st, &file);
    let second = server(&st, "reuse", "h");
    assert_eq!(
        second.address, first.address,
        "the relaunch got another address, so this test proves nothing about reuse"
    );
    assert!(
        ended(&mut stale),
        "a stale process of the uid survived its reuse"
    );
    if left_file.starts_with("/tmp") {
        assert!(
            !left_file.exists(),
            "the earlier holder's /tmp file was inherited"
        );
    }
    assert_gone(second.uid, &left, "the uid's reuse");
    assert_healthy(&st, "reuse", "h");
    terminate(&st, "reuse");
}
