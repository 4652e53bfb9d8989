//! Launch validation through the real binary: a deployment file that widens a plugin's
//! capabilities, names a program its manifest lacks, uses a package whose manifest grants what
//! its world does not support, or uses a package of the wrong world is refused with a located
//! message and exit code 2 before anything starts (no control plane, no server directory); the
//! control plane refuses the same file without creating the deployment. A program known to run
//! arbitrary code is a warning at launch (printed and recorded as an event) and in
//! `stratus plugin inspect`, and the launch goes on.

use crate::common;

use common::{Stratus, servers, terminate};
use std::path::{Path, PathBuf};
use std::process::Output;
use stratus_protocol::{OperatorReply, OperatorRequest};

/// A copy of the hello package (component and templates) with `manifest` as its plugin.toml.
fn package(dir: &Path, name: &str, manifest: &str) -> PathBuf {
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let pkg = dir.join(name);
    std::fs::create_dir_all(pkg.join("cfg")).unwrap();
    std::fs::copy(hello.join("plugin.wasm"), pkg.join("plugin.wasm")).unwrap();
    for e in std::fs::read_dir(hello.join("cfg")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), pkg.join("cfg").join(e.file_name())).unwrap();
    }
    std::fs::write(pkg.join("plugin.toml"), manifest).unwrap();
    pkg
}

/// hello's manifest with `extra` added to its `[capabilities]`.
fn hello_manifest(extra: &str) -> String {
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let text = std::fs::read_to_string(hello.join("plugin.toml")).unwrap();
    format!("{}\n{extra}\n", text.trim_end())
}

/// A one-tier, one-service deployment: the package is on line 10 (its value at column 11),
/// `capabilities_line` is line 11.
fn deployment(name: &str, pkg: &Path, capabilities_line: &str) -> String {
    format!(
        "[deployment]\nname = \"{name}\"\n\n[tiers.app]\nmin = 1\nmax = 1\nservices = [\"app\"]\n\n\
         [services.app]\npackage = \"{}\"\n{capabilities_line}\nports = {{ http = 8080 }}\n\
         settings = {{ greeting = \"validated\" }}\n",
        pkg.display()
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `stratus launch file` refused the file with `located` (`file:line:column: message`), exit
/// code 2, and started nothing.
fn assert_refused(st: &Stratus, file: &Path, located: &str) {
    let out = st.run(&["launch", file.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{}:{located}", file.display())),
        "expected `{located}` in:\n{err}"
    );
    assert!(err.contains("nothing was launched"), "{err}");
    assert_eq!(st.control_pid(), None, "no control plane was started");
    assert!(!st.dir().join("control.json").exists());
    assert!(
        !st.dir().join("servers").exists(),
        "no server directory was created"
    );
}

#[test]
fn widening_memory_is_refused_at_its_key_before_anything_starts() {
    let st = Stratus::new();
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let file = st.write_file(
        "widen.toml",
        &deployment("widen", &hello, "capabilities = { memory-mb = 512 }"),
    );
    assert_refused(
        &st,
        &file,
        &format!(
            "11:30: widens the manifest: memory-mb 512 > 32 in {}/plugin.toml",
            hello.display()
        ),
    );
}

#[test]
fn a_program_the_manifest_lacks_is_refused_at_its_entry() {
    let st = Stratus::new();
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let file = st.write_file(
        "program.toml",
        &deployment(
            "program",
            &hello,
            "capabilities = { programs = [\"/bin/sh\"] }",
        ),
    );
    assert_refused(
        &st,
        &file,
        &format!(
            "11:30: widens the manifest: program /bin/sh is not granted in {}/plugin.toml",
            hello.display()
        ),
    );
}

#[test]
fn grants_the_world_does_not_support_are_refused_at_the_package() {
    let st = Stratus::new();
    let dir = tempfile::tempdir().unwrap();
    let root = package(
        dir.path(),
        "root",
        &hello_manifest("").replace(
            "{ dir = \"service\", access = \"read-write\" }",
            "{ dir = \"server-root\", access = \"read-write\" }",
        ),
    );
    let file = st.write_file("root.toml", &deployment("root", &root, ""));
    assert_refused(&st, &file, "10:11: package `");
    let err = stderr(&st.run(&["launch", file.to_str().unwrap()]));
    assert!(
        err.contains("dir `server-root` is no longer granted"),
        "{err}"
    );

    let work = package(
        dir.path(),
        "work",
        &hello_manifest("").replace("dir = \"service\"", "dir = \"work-dir\""),
    );
    let file = st.write_file("work.toml", &deployment("work", &work, ""));
    assert_refused(
        &st,
        &file,
        &format!(
            "10:11: package `{}` cannot be used: {}/plugin.toml: capabilities.dirs grants \
             `work-dir`, which the service world does not support (only `service`)",
            work.display(),
            work.display()
        ),
    );
}

#[test]
fn a_cm_package_used_as_a_service_is_refused_at_the_package() {
    let st = Stratus::new();
    let probe = stratus_plugin_artifacts::package_dir("cm-probe");
    let file = st.write_file("cm.toml", &deployment("cm", &probe, ""));
    assert_refused(
        &st,
        &file,
        &format!(
            "10:11: {}/plugin.toml declares world `cm`, but service `app` needs a `service` \
             (or `proxy`) plugin",
            probe.display()
        ),
    );
}

/// The HTTP API of the future comes through the control plane, so it checks too: a launch
/// request for a widening file is answered with the located error and nothing is created.
#[test]
fn the_control_plane_refuses_a_widening_file_without_creating_the_deployment() {
    let st = Stratus::new();
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let file = st.write_file(
        "widen.toml",
        &deployment("widen", &hello, "capabilities = { memory-mb = 512 }"),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reply = rt.block_on(async {
        let mut client = stratus_control::client::ControlClient::connect_or_start(
            st.dir(),
            Path::new(env!("CARGO_BIN_EXE_stratus")),
        )
        .await
        .unwrap();
        client
            .request(OperatorRequest::Launch {
                file: file.to_string_lossy().into_owned(),
            })
            .await
            .unwrap()
    });
    let OperatorReply::Error { message, .. } = reply else {
        panic!("expected a refusal, got {reply:?}");
    };
    assert!(
        message.starts_with(&format!(
            "{}:11:30: widens the manifest: memory-mb 512 > 32",
            file.display()
        )),
        "{message}"
    );
    assert_eq!(st.status()["deployments"], serde_json::json!([]));
    assert!(!st.dir().join("servers").exists());
}

#[test]
fn a_shell_grant_is_a_warning_at_launch_and_in_inspect_and_the_launch_goes_on() {
    let st = Stratus::new();
    let dir = tempfile::tempdir().unwrap();
    let pkg = package(
        dir.path(),
        "shelly",
        &hello_manifest("programs = [\"/bin/sh\"]"),
    );
    let warning = "may run /bin/sh, which runs other programs (a shell): a plugin granted it \
                   can do anything its programs' user can";

    let inspect = st.ok(&["plugin", "inspect", pkg.to_str().unwrap()]);
    assert!(
        inspect.contains(&format!("warning:   plugin `hello` {warning}")),
        "{inspect}"
    );

    let file = st.write_file("shelly.toml", &deployment("shelly", &pkg, ""));
    let out = st.run(&["launch", file.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "{}:10:11: warning: plugin `hello` (service `app`) {warning}",
            file.display()
        )),
        "{err}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(warning),
        "the warning is printed once, not again from its event"
    );
    let d = st.deployment("shelly");
    assert_eq!(d["state"], "RUNNING", "{d}");
    assert_eq!(servers(&d, "app").len(), 1);
    let events = st.ok(&["events"]);
    assert!(
        events.contains(&format!("(service `app`) {warning}")),
        "the warning is recorded as an event:\n{events}"
    );

    let pids = terminate(&st, "shelly");
    assert_eq!(pids.len(), 1);
}

/// The shipped CM adapters run configuration-management tools, and say so.
#[test]
fn the_shipped_cm_adapters_carry_the_warning() {
    let st = Stratus::new();
    for (adapter, program) in [
        ("puppet", "/usr/bin/puppet"),
        ("ansible", "/usr/bin/ansible-playbook"),
        ("chef", "/usr/bin/chef-client"),
    ] {
        let pkg = stratus_plugin_artifacts::package_dir(adapter);
        let out = st.ok(&["plugin", "inspect", pkg.to_str().unwrap()]);
        assert!(
            out.contains(&format!(
                "warning:   plugin `{adapter}` may run {program}, which runs other programs (a \
                 configuration-management tool)"
            )),
            "{out}"
        );
        // They configure the whole server, so they run as root, and say that too.
        assert!(out.contains("  run-as:       root"), "{out}");
        assert!(
            out.contains(&format!(
                "warning:   plugin `{adapter}` runs its programs as root (run-as = \"root\")"
            )),
            "{out}"
        );
    }
    // Servers that load code their configuration names are flagged, though bounded to the
    // program user.
    for (plugin, program, kind) in [
        ("haproxy", "/usr/sbin/haproxy", "it loads code"),
        ("mariadb", "/usr/sbin/mariadbd", "it loads code"),
        (
            "mariadb",
            "/usr/bin/mariadb",
            "it has an escape that runs commands",
        ),
    ] {
        let pkg = stratus_plugin_artifacts::package_dir(plugin);
        let out = st.ok(&["plugin", "inspect", pkg.to_str().unwrap()]);
        assert!(
            out.contains(&format!(
                "warning:   plugin `{plugin}` may run {program}, which runs other programs ({kind}"
            )),
            "{out}"
        );
        assert!(out.contains("  run-as:       program-user"), "{out}");
        assert!(!out.contains("as root"), "{out}");
    }
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let out = st.ok(&["plugin", "inspect", hello.to_str().unwrap()]);
    assert!(!out.contains("may run"), "{out}");
}

#[test]
fn as_root_a_state_dir_the_program_user_cannot_reach_is_refused_before_anything_starts() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: only root runs programs as the program user");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    // Like /root: closed to everyone else.
    let closed = tempfile::tempdir().unwrap();
    std::fs::set_permissions(closed.path(), PermissionsExt::from_mode(0o700)).unwrap();
    let state = closed.path().join("state");
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let file = closed.path().join("d.toml");
    std::fs::write(&file, deployment("closed", &hello, "")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stratus"))
        .env("STRATUS_STATE_DIR", &state)
        .args(["launch", file.to_str().unwrap()])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("cannot search {}", closed.path().display()))
            && err.contains("nothing was launched"),
        "{err}"
    );
    assert!(
        !state.join("control.json").exists(),
        "no control plane started"
    );
    assert!(!state.join("servers").exists(), "no server started");
}

/// Copies the package `name` as its source tree has it before a build: everything but the
/// component.
fn unbuilt_copy(name: &str, dest: &Path) {
    let built = stratus_plugin_artifacts::package_dir(name);
    for entry in walk(&built) {
        let rel = entry.strip_prefix(&built).unwrap();
        if rel == Path::new("plugin.wasm") {
            continue;
        }
        let to = dest.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &to).unwrap();
    }
    assert!(dest.join("plugin.toml").is_file());
    assert!(!dest.join("plugin.wasm").exists());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        match path.is_dir() {
            true => files.extend(walk(&path)),
            false => files.push(path),
        }
    }
    files
}

/// The example as a fresh checkout has it (plugins never built): `stratus launch
/// examples/hello/deployment.toml` is refused before any server starts, at each package that
/// is not built, with the command that builds it (runnable from where launch was run).
#[test]
fn an_unbuilt_package_is_refused_at_launch_naming_the_build_command() {
    let st = Stratus::new();
    let checkout = tempfile::tempdir().unwrap();
    let repo = stratus_plugin_artifacts::repo_root();
    let example = checkout.path().join("examples/hello");
    std::fs::create_dir_all(&example).unwrap();
    for f in ["deployment.toml", "datasource.sql"] {
        std::fs::copy(repo.join("examples/hello").join(f), example.join(f)).unwrap();
    }
    unbuilt_copy("hello", &checkout.path().join("plugins/hello"));
    unbuilt_copy("hello-proxy", &checkout.path().join("plugins/hello-proxy"));
    let out = st
        .cmd()
        .current_dir(checkout.path())
        .args(["launch", "examples/hello/deployment.toml"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for (at, pkg) in [
        ("24:11", "hello"),
        ("31:11", "hello"),
        ("37:11", "hello-proxy"),
    ] {
        let located = format!(
            "examples/hello/deployment.toml:{at}: package `../../plugins/{pkg}` is not built: \
             its component ../../plugins/{pkg}/plugin.wasm does not exist; build it with \
             `stratus plugin build examples/hello/../../plugins/{pkg}`"
        );
        assert!(err.contains(&located), "expected `{located}` in:\n{err}");
    }
    assert!(err.contains("nothing was launched"), "{err}");
    assert_eq!(st.control_pid(), None, "no control plane was started");
    assert!(!st.dir().join("servers").exists());
}
