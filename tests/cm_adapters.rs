//! The chef adapter at its process boundary. No chef-client can be installed here, so the
//! package's manifest is copied with only its chef-client path pointed at a clearly named
//! stand-in (`tests/fixtures/chef/chef-client-standin`) that checks what a real chef-client
//! would be given. The component itself is the shipped one, driven through `stratus plugin
//! call` (the agent's sandbox and runtime) with a CM context in temporary directories.

use crate::common;

use common::Stratus;
use common::cli::text;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

const VALIDATION_SECRET: &str = "validation-secret-7f3a9c1e55d2";

/// A temp dir holding the chef package with its program grant rewritten, plus the server root.
struct Rig {
    dir: tempfile::TempDir,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::Builder::new()
            .prefix("stratus-chef-")
            .tempdir()
            .expect("tempdir");
        let shipped = stratus_plugin_artifacts::package_dir("chef");
        let package = dir.path().join("package");
        std::fs::create_dir(&package).unwrap();
        std::fs::copy(shipped.join("plugin.wasm"), package.join("plugin.wasm")).unwrap();
        let manifest = std::fs::read_to_string(shipped.join("plugin.toml")).unwrap();
        assert_eq!(
            manifest.matches("\"/usr/bin/chef-client\"").count(),
            2,
            "the manifest grants and names /usr/bin/chef-client: {manifest}"
        );
        let standin =
            stratus_plugin_artifacts::repo_root().join("tests/fixtures/chef/chef-client-standin");
        let manifest = manifest.replace(
            "\"/usr/bin/chef-client\"",
            &format!("\"{}\"", standin.display()),
        );
        std::fs::write(package.join("plugin.toml"), manifest).unwrap();
        let work = dir.path().join("root/agent/cm/chef");
        std::fs::create_dir_all(&work).unwrap();
        Rig { dir }
    }

    fn package(&self) -> PathBuf {
        self.dir.path().join("package")
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    fn work(&self) -> PathBuf {
        self.root().join("agent/cm/chef")
    }

    /// The credential file the engine writes before `prepare`.
    fn write_validation_key(&self) {
        let path = self.work().join("validation.pem");
        std::fs::write(
            &path,
            format!(
                "-----BEGIN STRATUS KEY-----\n{VALIDATION_SECRET}\n-----END STRATUS KEY-----\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn context(&self, run_list: &[&str]) -> PathBuf {
        let ctx = json!({
            "deployment": "shop",
            "tier": "app",
            "server": { "id": "app-1", "name": "shop-app-1", "address": "127.0.0.1" },
            "server_root": self.root(),
            "work_dir": self.work(),
            "run_list": run_list,
            "settings": [
                ["server-url", "https://127.0.0.1:8443/organizations/acme"],
                ["validation-client-name", "acme-validator"],
                ["app_port", "8080"]
            ],
            "credentials": [
                { "name": "validation", "user": "shop-app-1", "password": VALIDATION_SECRET }
            ]
        });
        let path = self.dir.path().join("ctx.json");
        std::fs::write(&path, ctx.to_string()).unwrap();
        path
    }

    fn call(&self, st: &Stratus, hook: &str, ctx: &Path) -> Output {
        st.run(&[
            "plugin",
            "call",
            self.package().to_str().unwrap(),
            hook,
            "--context",
            ctx.to_str().unwrap(),
        ])
    }
}

#[test]
fn chef_adapter_writes_first_boot_and_client_rb_and_reports_client_pem() {
    let st = Stratus::new();
    let rig = Rig::new();
    rig.write_validation_key();
    let ctx = rig.context(&["role[applicationServer]", "recipe[motd]"]);

    let prepared = rig.call(&st, "prepare", &ctx);
    assert!(prepared.status.success(), "{}", text(&prepared));
    let first_boot: Value =
        serde_json::from_str(&std::fs::read_to_string(rig.work().join("first-boot.json")).unwrap())
            .expect("first-boot.json is JSON");
    assert_eq!(
        first_boot["run_list"],
        json!(["role[applicationServer]", "recipe[motd]"])
    );
    assert_eq!(first_boot["stratus"]["server"]["name"], "shop-app-1");
    assert_eq!(first_boot["stratus"]["server"]["address"], "127.0.0.1");
    assert_eq!(first_boot["stratus"]["deployment"], "shop");
    assert_eq!(first_boot["app_port"], "8080", "settings become attributes");
    assert!(
        first_boot.get("server-url").is_none(),
        "client settings are not attributes"
    );
    let client_rb = std::fs::read_to_string(rig.work().join("client.rb")).unwrap();
    let work = rig.work().display().to_string();
    for line in [
        "chef_server_url 'https://127.0.0.1:8443/organizations/acme'".to_string(),
        "node_name 'shop-app-1'".into(),
        "validation_client_name 'acme-validator'".into(),
        format!("validation_key '{work}/validation.pem'"),
        format!("client_key '{work}/client.pem'"),
        format!("file_cache_path '{work}/cache'"),
    ] {
        assert!(
            client_rb.lines().any(|l| l == line),
            "{line} in:\n{client_rb}"
        );
    }
    assert!(!rig.work().join("client.pem").exists());

    let ran = rig.call(&st, "run", &ctx);
    let out = text(&ran);
    assert!(ran.status.success(), "{out}");
    let client_pem = rig.work().join("client.pem");
    assert!(client_pem.is_file(), "registration wrote client.pem: {out}");
    assert!(
        out.contains(&format!("produced {}", client_pem.display())),
        "{out}"
    );
    assert!(
        out.contains("result: chef-client: Chef Infra Client finished, 0/2 resources updated"),
        "{out}"
    );
    assert!(!out.contains(VALIDATION_SECRET), "the key leaked: {out}");
}

#[test]
fn a_failing_chef_run_reports_chefs_own_fatal_line() {
    let st = Stratus::new();
    let rig = Rig::new();
    rig.write_validation_key();
    let ctx = rig.context(&["role[base]", "role[broken]"]);
    let prepared = rig.call(&st, "prepare", &ctx);
    assert!(prepared.status.success(), "{}", text(&prepared));

    let ran = rig.call(&st, "run", &ctx);
    let out = text(&ran);
    assert!(!ran.status.success(), "{out}");
    let result = out
        .lines()
        .find(|l| l.starts_with("result: FAILED"))
        .unwrap_or_else(|| panic!("no result line in {out}"));
    assert!(result.contains("chef-client failed (exit 1)"), "{result}");
    assert!(
        out.contains("FATAL: Chef::Exceptions::RoleNotFound: role[broken] is not defined"),
        "{out}"
    );
    assert!(!rig.work().join("client.pem").exists());
    assert!(!out.contains(VALIDATION_SECRET), "the key leaked: {out}");
}

#[test]
fn chef_refuses_to_register_without_a_private_validation_key() {
    let st = Stratus::new();
    let rig = Rig::new();
    // The engine writes the key 0600; a world-readable one must not be used.
    rig.write_validation_key();
    let key = rig.work().join("validation.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let ctx = rig.context(&["role[base]"]);
    assert!(rig.call(&st, "prepare", &ctx).status.success());
    let ran = rig.call(&st, "run", &ctx);
    let out = text(&ran);
    assert!(!ran.status.success(), "{out}");
    assert!(out.contains("has mode 644, expected 600"), "{out}");
}

#[test]
fn a_failing_ansible_play_reports_ansibles_fatal_line() {
    let st = Stratus::new();
    let dir = tempfile::Builder::new()
        .prefix("stratus-ansible-")
        .tempdir()
        .expect("tempdir");
    let root = dir.path().join("root");
    let work = root.join("agent/cm/ansible");
    std::fs::create_dir_all(work.join("files")).unwrap();
    std::fs::write(
        work.join("files/site.yml"),
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - name: refuse\n      \
         ansible.builtin.fail:\n        msg: \"no database for {{ stratus_server_name }}\"\n",
    )
    .unwrap();
    let ctx = dir.path().join("ctx.json");
    let value = json!({
        "deployment": "shop", "tier": "worker",
        "server": { "id": "worker-1", "name": "shop-worker-1", "address": "127.0.0.1" },
        "server_root": root, "work_dir": work, "run_list": ["worker"],
    });
    std::fs::write(&ctx, value.to_string()).unwrap();
    let package = stratus_plugin_artifacts::package_dir("ansible");
    let call = |hook: &str| {
        st.run(&[
            "plugin",
            "call",
            package.to_str().unwrap(),
            hook,
            "--context",
            ctx.to_str().unwrap(),
        ])
    };
    let prepared = call("prepare");
    assert!(prepared.status.success(), "{}", text(&prepared));
    let vars: Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("extra-vars.json")).unwrap())
            .expect("extra-vars.json is JSON");
    assert_eq!(vars["stratus_server_name"], "shop-worker-1");
    assert_eq!(vars["stratus_run_list"], json!(["worker"]));

    let ran = call("run");
    let out = text(&ran);
    assert!(!ran.status.success(), "{out}");
    let result = out
        .lines()
        .find(|l| l.starts_with("result: FAILED"))
        .unwrap_or_else(|| panic!("no result line in {out}"));
    assert!(
        result.contains("ansible-playbook failed (exit 2)"),
        "{result}"
    );
    assert!(
        out.contains("fatal: [localhost]: FAILED! => {\"changed\": false, \"msg\": \"no database for shop-worker-1\"}"),
        "{out}"
    );
}
