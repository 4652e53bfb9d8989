//! Configuration management at launch, end to end with the real binary and real Puppet and
//! Ansible: the CM example reaches RUNNING with every server configured by its own facts, the
//! CM credentials are gone afterwards and never logged, and a broken manifest fails the launch
//! with Puppet's own error naming the server and the hook.

use crate::common;

use common::{Stratus, assert_no_secret_leaked, every_file, read, server_root, servers, terminate};
use serde_json::Value;
use std::path::PathBuf;

/// Copies `examples/cm` into the test's state directory as `<name>/`, with absolute package
/// paths and the deployment renamed, and returns the deployment file.
fn cm_example(st: &Stratus, name: &str) -> PathBuf {
    let root = stratus_plugin_artifacts::repo_root();
    let src = root.join("examples/cm");
    let dest = st.dir().join(name);
    for sub in ["puppet", "ansible"] {
        std::fs::create_dir_all(dest.join(sub)).unwrap();
        for e in std::fs::read_dir(src.join(sub)).unwrap().flatten() {
            std::fs::copy(e.path(), dest.join(sub).join(e.file_name())).unwrap();
        }
    }
    let mut text = std::fs::read_to_string(src.join("deployment.toml")).unwrap();
    for plugin in ["puppet", "ansible", "motd", "hello"] {
        let dir = stratus_plugin_artifacts::package_dir(plugin);
        text = text.replace(
            &format!("\"../../plugins/{plugin}\""),
            &format!("\"{}\"", dir.display()),
        );
    }
    assert!(!text.contains("../../"), "every package path rewritten");
    let text = text.replace("name = \"cm\"", &format!("name = \"{name}\""));
    let file = dest.join("deployment.toml");
    std::fs::write(&file, text).unwrap();
    file
}

/// The CM state of every unit on a server: `(unit, state, summary)`.
fn cm_runs(server: &Value) -> Vec<(String, String, String)> {
    server["cm"]
        .as_array()
        .unwrap_or_else(|| panic!("no cm runs in {server}"))
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("unit"), s("state"), s("summary"))
        })
        .collect()
}

#[test]
fn cm_example_configures_every_server_with_its_own_facts() {
    let st = Stratus::new();
    let file = cm_example(&st, "cm");
    st.ok(&["launch", file.to_str().unwrap()]);

    let d = st.deployment("cm");
    assert_eq!(d["state"], "RUNNING", "{d}");
    let web = servers(&d, "web");
    let worker = servers(&d, "worker");
    assert_eq!((web.len(), worker.len()), (2, 1), "{d}");

    for s in &web {
        let (name, address) = (s["name"].as_str().unwrap(), s["address"].as_str().unwrap());
        let facts = read(&server_root(&st, "cm", s).join("etc/stratus/puppet-facts.txt"));
        assert!(facts.contains(&format!("name={name}\n")), "{facts}");
        assert!(facts.contains(&format!("address={address}\n")), "{facts}");
        assert!(facts.contains("run_list=role[web]\n"), "{facts}");
        assert!(facts.contains("greeting=hello from puppet\n"), "{facts}");
        let runs = cm_runs(s);
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!((runs[0].0.as_str(), runs[0].1.as_str()), ("puppet", "DONE"));
        // `<root>/etc` exists already: the agent creates the granted server-config dir.
        assert_eq!(runs[0].2, "puppet apply: 2 resources changed", "{runs:?}");
        assert!(!server_root(&st, "cm", s).join("etc/motd").exists());
        assert_eq!(s["services"][0]["state"], "RUNNING", "{s}");
    }
    let w = &worker[0];
    let (name, address) = (w["name"].as_str().unwrap(), w["address"].as_str().unwrap());
    let root = server_root(&st, "cm", w);
    let recorded = read(&root.join("etc/stratus/ansible.txt"));
    assert_eq!(
        recorded,
        format!("name={name}\naddress={address}\nrun_list=worker\n")
    );
    assert!(read(&root.join("etc/motd")).contains(name));
    assert_eq!(
        read(&root.join("etc/personality.log")),
        format!("base-1 motd {name}\n")
    );
    let runs = cm_runs(w);
    let units: Vec<(&str, &str)> = runs.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect();
    assert_eq!(
        units,
        [("ansible", "DONE"), ("base-1", "DONE")],
        "the adapter runs before the personality: {runs:?}"
    );
    assert_eq!(runs[0].2, "ansible-playbook: ok=2 changed=2 failed=0");
    assert_eq!(runs[1].2, format!("motd written for {name}"));

    // The credential files are erased after the runs.
    for s in web.iter().chain(&worker) {
        let cm = server_root(&st, "cm", s).join("var/lib/stratus/cm");
        let units: Vec<PathBuf> = std::fs::read_dir(&cm)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(!units.is_empty(), "{} has unit dirs", cm.display());
        for u in units {
            // The adapter's package, without its component: the agent loads the sealed one.
            assert!(u.join("package/plugin.toml").exists(), "{}", u.display());
            assert!(!u.join("package/plugin.wasm").exists(), "{}", u.display());
            assert!(
                !u.join("validation.pem").exists(),
                "{} still holds its credential",
                u.display()
            );
        }
    }
    assert_no_cm_secret_leaked(&st);
    terminate(&st, "cm");
}

/// No generated secret appears in any file under `logs/` or `servers/`, nor in the events.
fn assert_no_cm_secret_leaked(st: &Stratus) {
    let key_files = every_file(&st.dir().join("keys"));
    let cm_keys: Vec<&PathBuf> = key_files
        .iter()
        .filter(|k| {
            k.file_name()
                .unwrap()
                .to_string_lossy()
                .contains("%2Fcm%2F")
        })
        .collect();
    assert!(
        cm_keys.len() >= 3,
        "key management holds a CM credential per unit and server: {key_files:?}"
    );
    assert_no_secret_leaked(st, |_| true);
}

#[test]
fn a_broken_puppet_manifest_fails_the_launch_with_puppets_own_error() {
    let st = Stratus::new();
    let file = cm_example(&st, "cmbroken");
    // A resource whose parent directory does not exist: puppet compiles, then fails to apply.
    let manifest = file.parent().unwrap().join("puppet/site.pp");
    let mut text = read(&manifest);
    text.push_str("file { \"${root}/no-such-dir/broken.txt\": content => \"x\" }\n");
    std::fs::write(&manifest, text).unwrap();

    let out = st.run(&["launch", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("step server/web-1/cm/puppet/run on server web-1")
            || err.contains("step server/web-2/cm/puppet/run on server web-2"),
        "{err}"
    );
    assert!(err.contains("puppet apply failed (exit"), "{err}");
    assert!(
        err.contains("Error: /Stage[main]/Main/File[")
            && err
                .contains("no-such-dir/broken.txt]/ensure: change from 'absent' to 'file' failed"),
        "{err}"
    );
    assert!(
        !err.contains("Error: Facter:"),
        "facter noise is filtered: {err}"
    );

    let d = st.deployment("cmbroken");
    assert_eq!(d["state"], "FAILED", "{d}");
    let failed: Vec<Value> = servers(&d, "web")
        .into_iter()
        .filter(|s| cm_runs(s).iter().any(|r| r.1 == "FAILED"))
        .collect();
    assert!(!failed.is_empty(), "{d}");
    for s in &failed {
        let runs = cm_runs(s);
        assert!(runs[0].2.contains("Error:"), "{runs:?}");
        // Erased on failure too.
        let pem = server_root(&st, "cmbroken", s).join("var/lib/stratus/cm/puppet/validation.pem");
        assert!(!pem.exists(), "{} survived the failed run", pem.display());
    }
    assert_no_cm_secret_leaked(&st);
    terminate(&st, "cmbroken");
}
