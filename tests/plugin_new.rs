//! `stratus plugin new`, `stratus plugin build` and `stratus plugin call` through the real
//! binary: for each language and world a fresh skeleton builds with the language's own tool and
//! its configure hook (a CM adapter's prepare) writes its config file with the context's values;
//! a missing tool is named with its install command; `plugin new` never writes into a non-empty
//! directory, through a link, or under a bad name; a link planted at plugin.wasm is replaced.
//! Python and JavaScript components are 12-19 MB and compile slowly in a debug build, so there
//! is one test per language, looping over the worlds.

use crate::common;

use common::cli::text;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const WORLDS: [&str; 3] = ["service", "proxy", "cm"];

fn stratus(cwd: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stratus"));
    cmd.current_dir(cwd)
        .env("STRATUS_STATE_DIR", cwd.join("state"))
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run stratus")
}

fn ok(cwd: &Path, args: &[&str], env: &[(&str, &Path)]) -> String {
    let out = stratus(cwd, args, env);
    let t = text(&out);
    assert!(out.status.success(), "stratus {args:?} failed:\n{t}");
    t
}

/// `plugin new` of `name` into `<root>/<name>`; returns the package directory.
fn new_package(root: &Path, name: &str, lang: &str, world: &str) -> PathBuf {
    let dir = root.join(name);
    let d = dir.to_str().unwrap();
    let t = ok(
        root,
        &[
            "plugin", "new", name, "--lang", lang, "--world", world, "--dir", d,
        ],
        &[],
    );
    assert!(t.contains(&format!("created {d}/plugin.toml")), "{t}");
    let manifest = std::fs::read_to_string(dir.join("plugin.toml")).unwrap();
    assert!(
        manifest.contains(&format!("world = \"{world}\"")),
        "{manifest}"
    );
    assert!(manifest.contains("[build]"), "{manifest}");
    dir
}

/// `plugin build` of `dir`; checks the last line names the component and its size.
fn build(root: &Path, dir: &Path, env: &[(&str, &Path)]) {
    let t = ok(root, &["plugin", "build", dir.to_str().unwrap()], env);
    let wasm = dir.join("plugin.wasm");
    let size = std::fs::metadata(&wasm).unwrap().len();
    assert!(
        t.contains(&format!("component: {} ({size} bytes", wasm.display())),
        "{t}"
    );
    assert!(
        !dir.join("__pycache__").exists(),
        "the build leaves no bytecode"
    );
}

/// Calls configure (prepare for cm) with a context of deployment `shop`, server `shop-web-1`
/// and the setting greeting = bonjour, and returns the config file the hook wrote.
fn call_and_read(root: &Path, dir: &Path, name: &str, world: &str) -> String {
    let ctx_file = root.join(format!("{name}.ctx.json"));
    let server = serde_json::json!({"id": "web-1", "name": "shop-web-1", "address": "127.0.0.1"});
    let (hook, written, ctx) = if world == "cm" {
        let work = root.join(format!("{name}-work"));
        let ctx = serde_json::json!({
            "deployment": "shop", "tier": "web", "server": server,
            "server_root": root.join(format!("{name}-root")), "work_dir": work,
            "settings": [["greeting", "bonjour"]]
        });
        ("prepare", work.join(format!("{name}.conf")), ctx)
    } else {
        // An agent's install puts the package's cfg/ into the service directory.
        let svc = root.join(format!("{name}-svc"));
        std::fs::create_dir_all(svc.join("cfg")).unwrap();
        let template = format!("cfg/{name}.conf");
        std::fs::copy(dir.join(&template), svc.join(&template)).unwrap();
        let ctx = serde_json::json!({
            "deployment": "shop", "tier": "web", "server": server,
            "service_id": "1", "service_name": name, "service_dir": svc,
            "settings": [["greeting", "bonjour"]]
        });
        ("configure", svc.join(format!("{name}.conf")), ctx)
    };
    std::fs::write(&ctx_file, ctx.to_string()).unwrap();
    let t = ok(
        root,
        &[
            "plugin",
            "call",
            dir.to_str().unwrap(),
            hook,
            "--context",
            ctx_file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(t.contains("result: ok"), "{t}");
    assert!(
        t.contains(&format!("created  {}", written.display())),
        "{t}"
    );
    std::fs::read_to_string(&written).unwrap()
}

fn assert_context_values(conf: &str, world: &str) {
    assert!(conf.contains("deployment = shop\n"), "{conf}");
    assert!(conf.contains("tier = web\n"), "{conf}");
    assert!(conf.contains("server = shop-web-1 (127.0.0.1)\n"), "{conf}");
    if world == "cm" {
        assert!(conf.contains("setting.greeting = bonjour\n"), "{conf}");
    } else {
        assert!(conf.contains("greeting = bonjour\n"), "{conf}");
    }
}

fn new_build_call_every_world(lang: &str, root: &Path, env: &[(&str, &Path)]) {
    let _busy = common::cores::compiling();
    for world in WORLDS {
        let name = format!("{lang}-{world}");
        let dir = new_package(root, &name, lang, world);
        build(root, &dir, env);
        let conf = call_and_read(root, &dir, &name, world);
        assert_context_values(&conf, world);
    }
}

#[test]
fn python_skeletons_build_and_configure_for_every_world() {
    let root = tempfile::tempdir().unwrap();
    new_build_call_every_world("python", root.path(), &[]);
}

#[test]
fn javascript_skeletons_build_and_configure_for_every_world() {
    let root = tempfile::tempdir().unwrap();
    new_build_call_every_world("js", root.path(), &[]);
}

/// The three Rust skeletons share one target directory (inside cargo's own target tree, so a
/// second run reuses the SDK's compiled dependencies); one of them is built as a member of a
/// workspace, where cargo puts the artifact outside the package.
#[test]
fn rust_skeletons_build_standalone_and_in_a_workspace_and_configure() {
    let _busy = common::cores::compiling();
    let root = tempfile::tempdir().unwrap();
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-new-rust");
    let env: &[(&str, &Path)] = &[("CARGO_TARGET_DIR", &target)];
    let r = root.path();

    // A link planted where the component goes is replaced, not written through.
    let service = new_package(r, "rust-service", "rust", "service");
    let victim = r.join("victim");
    std::fs::write(&victim, "keep").unwrap();
    std::os::unix::fs::symlink(&victim, service.join("plugin.wasm")).unwrap();
    build(r, &service, env);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    assert!(
        std::fs::symlink_metadata(service.join("plugin.wasm"))
            .unwrap()
            .is_file()
    );
    assert_context_values(
        &call_and_read(r, &service, "rust-service", "service"),
        "service",
    );
    // The skeleton's .cargo/config.toml links the 64 KiB stack that keeps its memory resident.
    let inspect = |dir: &Path| ok(r, &["plugin", "inspect", dir.to_str().unwrap()], &[]);
    let t = inspect(&service);
    assert!(t.contains("memory:    128 KiB at start, within"), "{t}");
    assert!(!t.contains("hint:"), "{t}");

    // A workspace member: its own [workspace] table goes, the workspace's comes. The workspace
    // repeats the skeleton's release profile (a member's is ignored), so cargo reuses the
    // dependencies it compiled for the standalone skeleton instead of compiling them again.
    let ws = r.join("ws");
    std::fs::create_dir(&ws).unwrap();
    let skeleton_toml = std::fs::read_to_string(service.join("Cargo.toml")).unwrap();
    let profile = skeleton_toml
        .split("\n[workspace]\n")
        .next()
        .and_then(|t| t.split_once("[profile.release]"))
        .map(|(_, profile)| profile)
        .expect("the skeleton's Cargo.toml has a release profile before [workspace]");
    std::fs::write(
        ws.join("Cargo.toml"),
        format!(
            "[workspace]\nresolver = \"3\"\nmembers = [\"rust-proxy\"]\n\n\
             [profile.release]{profile}"
        ),
    )
    .unwrap();
    let proxy = new_package(&ws, "rust-proxy", "rust", "proxy");
    let cargo_toml = std::fs::read_to_string(proxy.join("Cargo.toml")).unwrap();
    assert!(cargo_toml.ends_with("\n[workspace]\n"), "{cargo_toml}");
    std::fs::write(
        proxy.join("Cargo.toml"),
        cargo_toml.replace("\n[workspace]\n", "\n"),
    )
    .unwrap();
    build(r, &proxy, env);
    assert_context_values(&call_and_read(r, &proxy, "rust-proxy", "proxy"), "proxy");
    let t = inspect(&proxy);
    assert!(t.contains("memory:    128 KiB at start, within"), "{t}");

    let cm = new_package(r, "rust-cm", "rust", "cm");
    build(r, &cm, env);
    assert_context_values(&call_and_read(r, &cm, "rust-cm", "cm"), "cm");
}

#[test]
fn a_missing_tool_is_named_with_its_install_command() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let empty = r.join("empty-bin");
    std::fs::create_dir(&empty).unwrap();
    for (lang, says) in [
        (
            "rust",
            "cargo is not on PATH; install it with: curl https://sh.rustup.rs",
        ),
        (
            "python",
            "componentize-py is not on PATH; install it with: pip install componentize-py==0.25.1",
        ),
        (
            "js",
            "componentize-js is not on PATH; install it with: npm install -g \
             @bytecodealliance/componentize-js@0.23.0",
        ),
    ] {
        let dir = new_package(r, &format!("{lang}-service"), lang, "service");
        let out = stratus(
            r,
            &["plugin", "build", dir.to_str().unwrap()],
            &[("PATH", &empty)],
        );
        let t = text(&out);
        assert!(!out.status.success(), "{t}");
        assert!(t.contains(says), "{lang}: {t}");
        assert!(!dir.join("plugin.wasm").exists());
    }

    // A toolchain without the wasm target: rustc reports a sysroot lacking it.
    let fake = r.join("fake-bin");
    let sysroot = r.join("sysroot");
    std::fs::create_dir_all(sysroot.join("lib/rustlib/x86_64-unknown-linux-gnu")).unwrap();
    std::fs::create_dir(&fake).unwrap();
    for (tool, script) in [
        ("cargo", "#!/bin/sh\nexit 99\n".to_string()),
        ("rustc", format!("#!/bin/sh\necho {}\n", sysroot.display())),
    ] {
        let path = fake.join(tool);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    let dir = r.join("rust-service");
    let out = stratus(
        r,
        &["plugin", "build", dir.to_str().unwrap()],
        &[("PATH", &fake)],
    );
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("has no wasm32-wasip2 target; install it with: rustup target add wasm32-wasip2"),
        "{t}"
    );
}

#[test]
fn plugin_new_refuses_non_empty_dirs_links_and_bad_names() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let new = |name: &str, dir: &Path| {
        stratus(
            r,
            &[
                "plugin",
                "new",
                name,
                "--lang",
                "python",
                "--world",
                "service",
                "--dir",
                dir.to_str().unwrap(),
            ],
            &[],
        )
    };

    let full = r.join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("notes.txt"), "mine").unwrap();
    let out = new("web", &full);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains(&format!("{} exists and is not empty", full.display())),
        "{t}"
    );
    assert_eq!(std::fs::read_dir(&full).unwrap().count(), 1);
    assert_eq!(
        std::fs::read_to_string(full.join("notes.txt")).unwrap(),
        "mine"
    );

    let empty = r.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let link = r.join("link");
    std::os::unix::fs::symlink(&empty, &link).unwrap();
    let t = text(&new("web", &link));
    assert!(t.contains("is a symbolic link"), "{t}");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);

    for (name, says) in [
        ("../evil", "must be non-empty and use only letters"),
        ("we b", "must be non-empty and use only letters"),
        ("1web", "must start with a letter"),
        (".web", "must start with a letter"),
    ] {
        let out = new(name, &r.join("fresh"));
        let t = text(&out);
        assert!(!out.status.success(), "{name}: {t}");
        assert!(t.contains(says), "{name}: {t}");
        assert!(!r.join("fresh").exists(), "{name}: nothing is written");
    }

    // An empty directory is accepted.
    let t = text(&new("web", &empty));
    assert!(t.contains("created"), "{t}");
    assert!(empty.join("app.py").is_file() && empty.join("cfg/web.conf").is_file());
}
