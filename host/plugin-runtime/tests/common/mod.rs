//! Shared setup for the runtime's integration tests: contexts, call environments and a
//! well-behaved control call.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use stratus_model::context::{Credential, HookCall, ServerInfo, ServiceContext};
use stratus_plugin_runtime::{
    CallEnv, Capabilities, HookOutcome, Labels, Package, Plugin, Runtime, RuntimeConfig,
    Supervisor, dirs_of,
};

/// A runtime whose code cache is shared by every test of the build (under cargo's
/// `CARGO_TARGET_TMPDIR`), so each plugin is compiled once rather than once per test.
pub fn shared_runtime() -> Runtime {
    runtime(Some(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-runtime-cache"),
    ))
}

pub fn runtime(cache_dir: Option<PathBuf>) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir,
        cache_key: [7u8; 32],
        max_concurrent_calls: 4,
        max_component_bytes: stratus_plugin_runtime::DEFAULT_MAX_COMPONENT_BYTES,
    })
    .unwrap()
}

pub async fn load(rt: &Runtime, name: &str) -> Plugin {
    let pkg = Package::open(&stratus_plugin_artifacts::package_dir(name)).unwrap();
    rt.load(&pkg).await.unwrap()
}

/// A realistic service context in `dir` with the given settings.
pub fn context(dir: &Path, settings: &[(&str, &str)]) -> ServiceContext {
    ServiceContext {
        deployment: "shop".into(),
        tier: "app".into(),
        server: ServerInfo {
            id: "app-1".into(),
            name: "shop-app-1".into(),
            address: "127.0.0.1".into(),
        },
        service_id: "1000".into(),
        service_name: "web".into(),
        service_dir: dir.to_str().unwrap().into(),
        settings: settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ports: Vec::new(),
        credentials: vec![Credential {
            name: "admin".into(),
            user: "admin".into(),
            password: "hunter2-secret".into(),
        }],
        data_source: None,
        dependencies: Vec::new(),
    }
}

pub fn env(
    call: &HookCall,
    supervisor: &Supervisor,
    capabilities: Option<Capabilities>,
) -> CallEnv {
    CallEnv {
        sealed_package: None,
        dirs: dirs_of(call),
        server_address: "127.0.0.1".into(),
        supervisor: supervisor.clone(),
        capabilities,
        secrets: Vec::new(),
        labels: Labels::of(call),
    }
}

/// Runs hello's `configure` in a fresh directory and checks that it wrote its file: the
/// runtime still works after whatever the test did before.
pub async fn assert_healthy(rt: &Runtime) {
    let hello = load(rt, "hello").await;
    let dir = tempfile::tempdir().unwrap();
    install_cfg(dir.path());
    let call = HookCall::Configure {
        ctx: context(dir.path(), &[("greeting", "hi")]),
    };
    let sup = Supervisor::new(dir.path().join("logs"));
    let out: HookOutcome = hello.call(&call, &env(&call, &sup, None)).await.unwrap();
    let text = std::fs::read_to_string(dir.path().join("hello.conf")).unwrap();
    assert!(text.contains("greeting=hi"), "{text}");
    assert!(out.denials.is_empty());
}

/// Copies hello's `cfg/` into a service directory, as installing the package would.
pub fn install_cfg(service_dir: &Path) {
    let src = stratus_plugin_artifacts::package_dir("hello").join("cfg");
    std::fs::create_dir_all(service_dir.join("cfg")).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), service_dir.join("cfg").join(e.file_name())).unwrap();
    }
}
