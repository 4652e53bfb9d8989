//! Every integration test in one binary: cargo links one test executable instead of one per
//! file, and the harness runs all the tests in parallel instead of one file after another.
//! Each `tests/<name>.rs` is a module here, so a test is `<name>::<test>`; run one file's
//! tests with `cargo test --test integration <name>::`. A new file under `tests/` must be
//! added below (the root package sets `autotests = false`); `every_test_file_is_a_module`
//! fails until it is.

mod common;

mod agent_tls;
mod app_haproxy_plugins;
mod apply;
mod attack_agent_port;
mod attack_file_endpoint;
mod autoscale;
mod cloud_driver;
mod cloud_files;
mod cm_adapters;
mod cm_launch;
mod compile_once;
mod console;
mod control_config;
mod ec2_end_to_end;
mod health;
mod hostile_files;
mod hostile_limits;
mod hostile_output;
mod hostile_processes;
mod hostile_programs;
mod http_api;
mod launch;
mod launch_credential;
mod mariadb_plugin;
mod metrics;
mod plugin_cli;
mod plugin_new;
mod polyglot;
mod program_users;
mod prometheus;
mod providers;
mod reconcile_resume;
mod recovery;
mod recovery_three_tier;
mod resume;
mod retry;
mod scale;
mod scale_cli;
mod shared_builds;
mod ssh_logs;
mod ssh_provider;
mod supervision;
mod terminate;
mod three_tier;
mod validation;
mod wit_versions;

/// Files under `tests/` are compiled only when declared above; one that is not would
/// silently never run.
#[test]
fn every_test_file_is_a_module() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let root = std::fs::read_to_string(dir.join("integration.rs")).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(module) = name.strip_suffix(".rs") else {
            continue;
        };
        if module != "integration" {
            assert!(
                root.contains(&format!("\nmod {module};\n")),
                "tests/{name} is not declared in tests/integration.rs: add `mod {module};`"
            );
        }
    }
}
