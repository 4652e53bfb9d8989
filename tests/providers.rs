//! The provider seam through the real binary: a deployment declaring `[providers.here]` of
//! type `local` with a tier on it launches to RUNNING, `status --json` names each server's
//! provider, and terminate ends every server through its stored handle. A tier naming a
//! provider the file does not declare is refused at launch with its position, before anything
//! starts; so is a private key pasted into a provider table, which never shows in the output.

use crate::common;

use common::{Stratus, alive, hello_on, servers, terminate};
use std::path::Path;

/// The line (1-based) of `text` that starts with `start`.
fn line_of(text: &str, start: &str) -> usize {
    text.lines().position(|l| l.starts_with(start)).unwrap() + 1
}

#[test]
fn a_tier_on_a_declared_local_provider_launches_and_status_names_it() {
    let st = Stratus::new();
    let text = hello_on("named", "here", "[providers.here]\ntype = \"local\"\n");
    let file = st.write_file("named.toml", &text);
    st.ok(&["launch", file.to_str().unwrap()]);

    let d = st.deployment("named");
    assert_eq!(d["state"], "RUNNING", "{d}");
    let app = servers(&d, "app");
    assert_eq!(app.len(), 1, "{d}");
    assert_eq!(app[0]["provider"], "here", "{}", app[0]);
    for tier in ["lb", "db"] {
        for s in servers(&d, tier) {
            assert_eq!(s["provider"], "local", "{s}");
        }
    }
    // The local provider under another name: its handle still gives the agent's pid.
    let pid = app[0]["pid"]
        .as_u64()
        .expect("a local server shows its pid") as u32;
    assert!(alive(pid), "{}", app[0]);
    assert_trees_spread(&st, "named");

    let pids = terminate(&st, "named");
    assert!(pids.contains(&pid));
    assert!(
        !st.dir().join("servers/named").exists(),
        "terminate through the handle removes every disk"
    );
}

/// On ext4 (this machine's disk) the directories holding each server's disk and hook logs are
/// marked so the filesystem spreads their subdirectories over its block groups: without the
/// mark a launch after a terminate paid for every inode the terminate freed.
fn assert_trees_spread(st: &Stratus, dep: &str) {
    use nix::sys::statfs::{EXT4_SUPER_MAGIC, statfs};
    if statfs(st.dir()).unwrap().filesystem_type() != EXT4_SUPER_MAGIC {
        return;
    }
    for dir in [format!("servers/{dep}"), format!("logs/hooks/{dep}")] {
        let dir = st.dir().join(dir);
        assert!(
            stratus_provider::spreads_subdirectories(&dir).unwrap(),
            "{} is not marked to spread its subdirectories (chattr +T)",
            dir.display()
        );
    }
}

/// `stratus launch file` refused with `located` in its output, exit code 2, nothing started.
fn assert_refused(st: &Stratus, file: &Path, located: &str) -> String {
    let out = st.run(&["launch", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{}:{located}", file.display())),
        "expected `{located}` in:\n{err}"
    );
    assert!(!st.dir().join("servers").exists(), "a server was started");
    err
}

#[test]
fn an_undeclared_provider_or_an_inline_key_is_refused_before_anything_starts() {
    let st = Stratus::new();
    let text = hello_on("stray", "ec2", "");
    let file = st.write_file("stray.toml", &text);
    let line = line_of(&text, "provider = \"ec2\"");
    assert_refused(
        &st,
        &file,
        &format!("{line}:12: unknown provider `ec2` (expected `local` or a [providers.ec2] table)"),
    );

    let secret = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU";
    let key = format!(
        "-----BEGIN OPENSSH PRIVATE KEY-----\\n{secret}\\n-----END OPENSSH PRIVATE KEY-----"
    );
    let text = hello_on(
        "pasted",
        "far",
        &format!("[providers.far]\ntype = \"local\"\nkey = \"{key}\"\n"),
    );
    let file = st.write_file("pasted.toml", &text);
    let line = line_of(&text, "key = ");
    let err = assert_refused(
        &st,
        &file,
        &format!("{line}:7: setting `key` of provider `far` holds what looks like a private key"),
    );
    assert!(!err.contains(secret), "the key was repeated:\n{err}");
}
