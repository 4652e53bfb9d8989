//! UI tests of deployment files: every `specs/bad/*.toml` must fail with exactly the errors in
//! the `.err` file next to it; every `specs/good/*.toml` must validate. `specs/launch/` holds
//! the same for the launch checks (packages held against their manifests, in
//! `specs/launch/plugins`), where a good file's `.err` lists its warnings.
//! Run with `STRATUS_BLESS=1` to rewrite the `.err` files after an intended message change.

use std::path::{Path, PathBuf};

use stratus_model::DeploymentSpec;

fn toml_files(dir: &str) -> Vec<PathBuf> {
    // Relative paths keep the `file:` part of messages stable on every machine.
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no specs in {dir}");
    files
}

/// Compares (or with `STRATUS_BLESS`, rewrites) the `.err` file of every spec in `dir`.
fn snapshots(dir: &str, render: impl Fn(&Path) -> String) {
    let bless = std::env::var_os("STRATUS_BLESS").is_some();
    let mut failures = Vec::new();
    for file in toml_files(dir) {
        let expected_file = file.with_extension("err");
        let got = render(&file);
        if bless {
            std::fs::write(&expected_file, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_file).unwrap_or_default();
        if got != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{got}",
                file.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bad_specs_report_expected_errors() {
    snapshots("tests/specs/bad", |file| {
        match DeploymentSpec::from_file(file) {
            Ok(_) => "<validated without errors>".to_string(),
            Err(errors) => format!("{errors}\n"),
        }
    });
}

/// The launch checks: errors, or the warnings of a file that may be launched.
fn launch_check(file: &Path) -> String {
    match DeploymentSpec::from_file_for_launch(file) {
        Ok((_, warnings)) => warnings
            .iter()
            .map(|w| format!("{w}\n"))
            .chain(["<may be launched>\n".to_string()])
            .collect(),
        Err(errors) => format!("{errors}\n"),
    }
}

#[test]
fn launch_checks_refuse_what_the_agent_would_refuse_later() {
    snapshots("tests/specs/launch/bad", launch_check);
}

#[test]
fn launch_checks_warn_but_accept() {
    snapshots("tests/specs/launch/good", launch_check);
    for file in toml_files("tests/specs/launch/good") {
        DeploymentSpec::from_file_for_launch(&file).unwrap();
    }
}

/// Files that need no package manifests are not read for them by the plain checks.
#[test]
fn plain_validation_does_not_read_manifests() {
    assert!(DeploymentSpec::from_file("tests/specs/launch/bad/manifests.toml").is_ok());
    let err = DeploymentSpec::from_file_for_launch("tests/specs/good/three-tier.toml").unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot read tests/specs/good/../good/plugins/")
            || err.to_string().contains("plugin.toml"),
        "{err}"
    );
}

#[test]
fn good_specs_validate() {
    for file in toml_files("tests/specs/good") {
        if let Err(errors) = DeploymentSpec::from_file(&file) {
            panic!("{} should validate:\n{errors}", file.display());
        }
    }
}

#[test]
fn three_tier_example_resolves_everything() {
    let file = Path::new("tests/specs/good/three-tier.toml");
    let spec = DeploymentSpec::from_file(file).unwrap();
    assert_eq!(spec.name.as_str(), "shop");
    assert_eq!(spec.base_dir, Path::new("tests/specs/good"));
    let mysql = spec.service("mysql").unwrap();
    assert_eq!(mysql.tier.as_str(), "db");
    let ds = mysql.data_source.as_ref().unwrap();
    assert_eq!(ds.image.written, Path::new("datasource.sql"));
    assert_eq!(
        ds.image.resolved,
        Path::new("tests/specs/good/datasource.sql")
    );
    assert_eq!(mysql.settings["max-connections"], "100");
    assert_eq!(mysql.settings["read-only"], "false");
    assert_eq!(mysql.capabilities.memory_mb, Some(32));
    let app = spec.service("app").unwrap();
    // Ports keep file order even though `admin` sorts first.
    let ports: Vec<_> = app
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.private, p.public))
        .collect();
    assert_eq!(ports, [("http", 8080, 8080), ("admin", 8081, 9081)]);
    let lb = spec.tier("lb").unwrap().balances.as_ref().unwrap();
    assert_eq!((lb.service.as_str(), lb.port.as_str()), ("app", "http"));
    let cm = spec.tier("db").unwrap().launch.cm.as_ref().unwrap();
    assert_eq!(cm.adapter.as_str(), "puppet");
    assert_eq!(cm.run_list, ["role[db]"]);
    assert_eq!(spec.tier("app").unwrap().launch.provider.as_str(), "local");
    // Ids follow the sorted service names: app, haproxy, mysql.
    assert_eq!(app.id.dir_name(), "a1000");
    assert_eq!(mysql.id.dir_name(), "a1002");
}

#[test]
fn unreadable_file_is_reported_at_its_path() {
    let err = DeploymentSpec::from_file("tests/specs/does-not-exist.toml").unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("tests/specs/does-not-exist.toml:1:1: cannot read the deployment file"),
        "{text}"
    );
}

#[test]
fn a_data_source_larger_than_the_services_disk_limit_is_refused_before_upload() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/specs/launch/plugins/svc");
    // Sparse: 2 MiB long, no blocks; it would be stored dense by an upload.
    let image = dir.path().join("dump.sql");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(2 << 20)
        .unwrap();
    let text = format!(
        "[deployment]\nname = \"big\"\n\n[tiers.db]\nmin = 1\nmax = 1\nservices = [\"db\"]\n\n\
         [services.db]\npackage = \"{}\"\ncapabilities = {{ disk-mb = 1 }}\n\
         data-source = {{ image = \"dump.sql\", database = \"shop\" }}\n",
        svc.display()
    );
    let file = dir.path().join("deploy.toml");
    std::fs::write(&file, text).unwrap();
    let err = DeploymentSpec::from_file_for_launch(&file)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "data source {} is 2097152 bytes, more than the service's disk limit of 1 MiB",
            image.display()
        )),
        "{err}"
    );
    std::fs::File::create(&image)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let ok = DeploymentSpec::from_file_for_launch(&file);
    assert!(ok.is_ok(), "{:?}", ok.err().map(|e| e.to_string()));
}
