//! A hostile cloud driver's answers, as the host takes them (plugins/testing/hostile-driver).

mod common;

use common::shared_runtime;
use stratus_plugin_runtime::cloud_driver::{DriverConfig, DriverError};

/// The hostile driver, asked for no attack, answers a launch with `address = 127.0.0.9`. A
/// server's address is what other tiers are told (a load balancer's nodes, a database's
/// grants): loopback would point them at their own machine, link-local at the cloud's metadata
/// service. The host used to store it as given; now the handle is refused, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_cannot_give_a_server_a_loopback_address() {
    let package = stratus_plugin_artifacts::package_dir("hostile-driver");
    let driver = shared_runtime().load_cloud_driver(&package).await.unwrap();
    let config = DriverConfig {
        settings: vec![("attack".into(), "none".into())],
        secrets: vec![],
        http: vec!["http://127.0.0.1:9".parse().unwrap()],
    };
    let bootstrap = r#"{"control":"127.0.0.1:7000","credential":"c0ffee"}"#;
    let err = driver
        .launch("shop-app-1", bootstrap, &config)
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::Handle { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("127.0.0.9") && text.contains("loopback"),
        "{text}"
    );
}
