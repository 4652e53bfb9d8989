use super::*;
use crate::command::{self, Checked};
use crate::supervisor::Supervisor;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

const USER: ProgramUser = DEFAULT_PROGRAM_USER;

fn root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped: needs root to switch users");
    }
    root
}

#[test]
fn program_users_parse_and_root_is_refused() {
    assert_eq!(
        "1000".parse(),
        Ok(ProgramUser {
            uid: 1000,
            gid: 1000
        })
    );
    assert_eq!(
        "1000:1001".parse(),
        Ok(ProgramUser {
            uid: 1000,
            gid: 1001
        })
    );
    assert_eq!(
        "nobody".parse(),
        Ok(USER),
        "a name means its uid and primary group"
    );
    for bad in [
        "0",
        "0:5",
        "5:0",
        "root",
        "no-such-user-here",
        "",
        "1:2:3",
        "4294967295",
        "-1",
    ] {
        let e = bad.parse::<ProgramUser>().unwrap_err();
        assert!(e.to_string().contains("not root"), "{bad}: {e}");
    }
    assert_eq!(USER.to_string(), "65534:65534");
}

#[test]
fn only_a_root_agent_switches() {
    let mine = ProgramUser { uid: 7, gid: 8 };
    assert_eq!(ProgramUser::for_agent(None, 0), Some(USER));
    assert_eq!(ProgramUser::for_agent(Some(mine), 0), Some(mine));
    assert_eq!(ProgramUser::for_agent(Some(mine), 1000), None);
}

/// A tree with a link out, a hard link and a nested directory: everything inside is given to
/// the user, nothing a link or a second name leads to.
#[test]
fn hand_over_follows_no_link_and_skips_hard_links() {
    if !root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let svc = tmp.path().join("svc");
    std::fs::create_dir_all(svc.join("a/b")).unwrap();
    std::fs::write(svc.join("a/b/f"), "x").unwrap();
    let outside = tmp.path().join("outside");
    std::fs::write(&outside, "secret").unwrap();
    std::os::unix::fs::symlink(&outside, svc.join("link")).unwrap();
    std::os::unix::fs::symlink(tmp.path(), svc.join("dirlink")).unwrap();
    std::fs::hard_link(&outside, svc.join("hard")).unwrap();
    // A device node root made (here: another /dev/null) stays root's.
    nix::sys::stat::mknod(
        &svc.join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let done = hand_over(&svc, USER).unwrap();
    let owner = |p: &Path| {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.uid(), m.gid())
    };
    for p in ["", "a", "a/b", "a/b/f", "link", "dirlink"] {
        assert_eq!(owner(&svc.join(p)), (65534, 65534), "{p}");
    }
    assert_eq!(owner(&outside), (0, 0), "a link or hard link was followed");
    assert_eq!(owner(tmp.path()), (0, 0), "a directory link was followed");
    assert_eq!(
        owner(&svc.join("null")),
        (0, 0),
        "a device node was handed over"
    );
    assert_eq!(done.changed, 6);
    assert_eq!(
        hand_over(&svc, USER).unwrap().changed,
        0,
        "nothing left to change"
    );
    // The directory itself may not be a link either.
    let e = hand_over(&svc.join("dirlink"), USER).unwrap_err();
    assert!(e.to_string().contains("dirlink"), "{e}");
}

#[test]
fn hand_over_is_bounded_in_depth() {
    if !root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut deep = tmp.path().to_path_buf();
    for _ in 0..=MAX_HAND_OVER_DEPTH + 1 {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).unwrap();
    let e = hand_over(tmp.path(), USER).unwrap_err();
    assert!(e.to_string().contains("deeper than"), "{e}");
}

/// Runs `program args` the way `host.run` does, as `user`, in a leaf of `sup`.
async fn run_as(
    sup: &Supervisor,
    user: Option<ProgramUser>,
    program: &str,
    args: &[&str],
) -> command::Finished {
    let checked = Checked {
        program: program.into(),
        working_dir: "/".into(),
    };
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let leaf = sup.run_leaf("priv", 64, user).unwrap();
    command::run(
        &checked,
        &args,
        &[],
        None,
        Duration::from_secs(10),
        4096,
        leaf,
    )
    .await
    .unwrap()
}

/// A contained supervisor where this host has cgroups (the join must come before the drop),
/// else a plain one.
fn supervisor(logs: &Path) -> (Supervisor, Option<stratus_containment::Cgroup>) {
    let c = stratus_containment::Containment::detect();
    let cg = c
        .own()
        .child(&format!("stratus-priv-test-{}", std::process::id()));
    if c.is_available() && cg.create().is_ok() {
        return (Supervisor::contained(logs.into(), cg.clone()), Some(cg));
    }
    eprintln!("no usable cgroup here ({}): testing without", c.describe());
    (Supervisor::new(logs.into()), None)
}

#[tokio::test]
async fn programs_run_as_the_program_user_and_cannot_reach_root_files() {
    if !root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (sup, cg) = supervisor(&tmp.path().join("logs"));
    assert_eq!(
        sup.program_user(),
        Some(USER),
        "a root supervisor drops by default"
    );
    let id = run_as(&sup, sup.program_user(), "/usr/bin/id", &[]).await;
    assert_eq!(id.exit_code, Some(0), "{}", id.stderr);
    assert!(
        id.stdout.starts_with("uid=65534(") && id.stdout.contains(" gid=65534("),
        "{}",
        id.stdout
    );
    assert!(
        !id.stdout.contains("groups=0") && !id.stdout.contains(",0("),
        "supplementary groups kept: {}",
        id.stdout
    );
    // NoNewPrivs is what makes a setuid binary powerless.
    let status = run_as(&sup, sup.program_user(), "/bin/cat", &["/proc/self/status"]).await;
    assert!(
        status.stdout.contains("NoNewPrivs:\t1"),
        "{}",
        status.stdout
    );

    // A file only root may read, in a directory anyone may enter.
    let secret = tmp.path().join("credential");
    std::fs::write(&secret, "hunter2").unwrap();
    std::fs::set_permissions(&secret, PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::set_permissions(tmp.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let path = secret.to_str().unwrap();
    let cat = run_as(&sup, sup.program_user(), "/bin/cat", &[path]).await;
    assert_ne!(
        cat.exit_code,
        Some(0),
        "the program user read a 0600 root file"
    );
    assert!(!cat.stdout.contains("hunter2"));
    assert!(cat.stderr.contains("Permission denied"), "{}", cat.stderr);
    let shadow = run_as(&sup, sup.program_user(), "/bin/cat", &["/etc/shadow"]).await;
    assert_ne!(
        shadow.exit_code,
        Some(0),
        "the program user read /etc/shadow"
    );
    // The same program without a user (a `run-as = "root"` CM tool) still reads it.
    let as_root = run_as(&sup, None, "/bin/cat", &[path]).await;
    assert_eq!(as_root.stdout, "hunter2");

    // It joined its leaf (as root) before dropping: every hierarchy names the test's cgroup.
    if cg.is_some() {
        let own = run_as(&sup, sup.program_user(), "/bin/cat", &["/proc/self/cgroup"]).await;
        let mine = format!("stratus-priv-test-{}/svc-priv/run-", std::process::id());
        assert!(own.stdout.contains(&mine), "{}", own.stdout);
        for line in own
            .stdout
            .lines()
            .filter(|l| l.contains(":pids:") || l.starts_with("0::"))
        {
            assert!(line.contains(&mine), "not in its leaf: {line}");
        }
    }
    // Leaving the cgroup: writing the root cgroup's cgroup.procs is refused.
    let c = stratus_containment::Containment::detect();
    for dir in c.own().paths().iter().filter_map(|p| root_of(p)) {
        let target = dir.join("cgroup.procs");
        let script = format!("echo $$ > {}", target.display());
        let out = run_as(&sup, sup.program_user(), "/bin/sh", &["-c", &script]).await;
        assert_ne!(out.exit_code, Some(0), "escaped to {}", target.display());
    }
    if let Some(cg) = cg {
        cg.destroy().unwrap();
    }
}

/// The root cgroup of the hierarchy `cgroup` lives in: `/sys/fs/cgroup/<name>` on a v1 or
/// hybrid host, `/sys/fs/cgroup` on a pure v2 one.
fn root_of(cgroup: &Path) -> Option<std::path::PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let rest = cgroup.strip_prefix(base).ok()?;
    let first = rest.components().next()?;
    let v1 = base.join(first);
    match v1.join("cgroup.procs").exists() && !base.join("cgroup.procs").exists() {
        true => Some(v1),
        false => Some(base.to_path_buf()),
    }
}

/// A sealed package copy lives in the agent-private `<root>/agent/` (0700): the program user
/// cannot reach it by its path, so the agent opens it and the child executes the descriptor.
#[tokio::test]
async fn a_program_in_a_private_directory_runs_by_descriptor() {
    if !root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), PermissionsExt::from_mode(0o700)).unwrap();
    let bin = tmp.path().join("sealed/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/usr/bin/id", bin.join("id")).unwrap();
    assert_eq!(unsearchable(&bin.join("id"), USER), Some(tmp.path().into()));
    let sup = Supervisor::new(tmp.path().join("logs"));
    let program = bin.join("id");
    let id = run_as(&sup, Some(USER), program.to_str().unwrap(), &["-u"]).await;
    assert_eq!(
        (id.exit_code, id.stdout.trim()),
        (Some(0), "65534"),
        "{}",
        id.stderr
    );
    // A plain file stays unrunnable: its own execute bits still count.
    std::fs::set_permissions(bin.join("id"), PermissionsExt::from_mode(0o700)).unwrap();
    let checked = Checked {
        program: program.clone(),
        working_dir: "/".into(),
    };
    let leaf = sup.run_leaf("priv", 64, Some(USER)).unwrap();
    let e = command::run(
        &checked,
        &[],
        &[],
        None,
        Duration::from_secs(10),
        4096,
        leaf,
    )
    .await;
    assert!(e.is_err_and(|e| e.contains("Permission denied")));
}

#[test]
fn a_secret_the_agent_wrote_is_not_handed_over() {
    if !root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let key = work.join("validation.pem");
    std::fs::write(&key, "key").unwrap();
    std::fs::set_permissions(&key, PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::write(work.join("site.pp"), "x").unwrap();
    hand_over(&work, USER).unwrap();
    let owner = |p: &Path| std::fs::metadata(p).unwrap().uid();
    assert_eq!(
        owner(&key),
        0,
        "the credential stays root's, unreadable to the program user"
    );
    assert_eq!(owner(&work.join("site.pp")), 65534);
}
