//! Per-call cost of a sandboxed hook versus fork/exec of a shell script, and cached versus
//! compiled plugin loads. Run: `cargo bench -p stratus-plugin-runtime --bench hook_call`.

use criterion::{Criterion, criterion_group, criterion_main};
use std::path::Path;
use std::time::Duration;
use stratus_model::context::{
    Credential, Dependency, DependencyKind, HookCall, Port, ServerInfo, ServiceContext,
};
use stratus_plugin_runtime::{
    CallEnv, DEFAULT_SLOT_RESET, Labels, Package, Plugin, Runtime, RuntimeConfig, SlotReset,
    Supervisor, dirs_of,
};

fn server(id: &str, addr: &str) -> ServerInfo {
    ServerInfo {
        id: id.into(),
        name: format!("shop-{id}"),
        address: addr.into(),
    }
}

/// A context of the size a real web tier gets: settings, ports, credentials, a database
/// dependency.
fn context(dir: &Path, write: bool) -> ServiceContext {
    let setting = |k: &str, v: &str| (k.to_string(), v.to_string());
    ServiceContext {
        deployment: "shop".into(),
        tier: "app".into(),
        server: server("app-1", "127.0.0.11"),
        service_id: "1000".into(),
        service_name: "web".into(),
        service_dir: dir.to_str().unwrap().into(),
        settings: vec![
            setting("greeting", "hello"),
            setting("workers", "8"),
            setting("log_level", "info"),
            setting("cache_mb", "256"),
            setting("write", if write { "true" } else { "false" }),
        ],
        ports: vec![Port {
            name: "http".into(),
            private_port: 8080,
            public_port: 80,
        }],
        credentials: vec![Credential {
            name: "admin".into(),
            user: "admin".into(),
            password: "pw-admin".into(),
        }],
        data_source: None,
        dependencies: vec![Dependency {
            service: "db".into(),
            kind: DependencyKind::DataSource,
            servers: vec![server("db-1", "127.0.0.21")],
            ports: vec![Port {
                name: "mysql".into(),
                private_port: 3306,
                public_port: 3306,
            }],
            credentials: vec![Credential {
                name: "app".into(),
                user: "shop".into(),
                password: "pw-db".into(),
            }],
            database: Some("shop".into()),
            settings: Vec::new(),
        }],
    }
}

fn env(call: &HookCall, sup: &Supervisor) -> CallEnv {
    CallEnv {
        sealed_package: None,
        dirs: dirs_of(call),
        server_address: "127.0.0.11".into(),
        supervisor: sup.clone(),
        capabilities: None,
        secrets: call.secrets(),
        labels: Labels::of(call),
    }
}

fn runtime(cache: Option<&Path>) -> Runtime {
    runtime_with(cache, DEFAULT_SLOT_RESET)
}

fn runtime_with(cache: Option<&Path>, reset: SlotReset) -> Runtime {
    let config = RuntimeConfig {
        cache_dir: cache.map(Path::to_owned),
        cache_key: [3; 32],
        max_concurrent_calls: 8,
        max_component_bytes: stratus_plugin_runtime::DEFAULT_MAX_COMPONENT_BYTES,
    };
    Runtime::with_slot_reset(config, reset).unwrap()
}

fn hello_package() -> Package {
    Package::open(&stratus_plugin_artifacts::package_dir("hello")).unwrap()
}

/// Times `iters` calls awaited back to back inside the tokio runtime, as an agent makes them
/// (one `block_on` per sample, not per call).
async fn timed<F, Fut, T, E>(iters: u64, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Debug,
{
    let start = std::time::Instant::now();
    for _ in 0..iters {
        f().await.unwrap();
    }
    start.elapsed()
}

fn hook_calls(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rt = runtime(None);
    let plugin: Plugin = tokio.block_on(rt.load(&hello_package())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cfg");
    std::fs::create_dir_all(&cfg).unwrap();
    let template = stratus_plugin_artifacts::package_dir("hello").join("cfg/hello.conf");
    std::fs::copy(&template, cfg.join("hello.conf")).unwrap();
    let sup = Supervisor::new(dir.path().join("logs"));

    let mut g = c.benchmark_group("hook_call");
    for (name, write) in [("configure_no_io", false), ("configure_write", true)] {
        let call = HookCall::Configure {
            ctx: context(dir.path(), write),
        };
        let env = env(&call, &sup);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| tokio.block_on(timed(iters, || plugin.call(&call, &env))));
            // hooks.log grows by one line per call; keep it from skewing later samples.
            let _ = std::fs::remove_file(dir.path().join("hooks.log"));
        });
    }
    // Pure sandbox overhead: a hook that returns at once (the test plugin's health-check),
    // with pool slots reset as the runtime does, and with the faster page-map reset that is
    // not used because it does not isolate calls (`_pagemap`), side by side.
    let hostile = Package::open(&stratus_plugin_artifacts::package_dir("hostile")).unwrap();
    let call = HookCall::HealthCheck {
        ctx: context(dir.path(), false),
    };
    let trivial_env = env(&call, &sup);
    let pagemap_rt = runtime_with(None, SlotReset::PagemapScan);
    for (name, rt) in [("trivial_hook", &rt), ("trivial_hook_pagemap", &pagemap_rt)] {
        let trivial: Plugin = tokio.block_on(rt.load(&hostile)).unwrap();
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                tokio.block_on(timed(iters, || trivial.call(&call, &trivial_env)))
            })
        });
    }
    // The same work as configure_write, as the shell scripts of old did it.
    let conf = dir.path().join("sh-hello.conf");
    let script = format!(
        "printf 'hello from %s (%s) in %s/%s; greeting=%s\\n' shop-app-1 127.0.0.11 shop app hello > '{}'; \
         echo configure >> '{}'",
        conf.display(),
        dir.path().join("sh-hooks.log").display()
    );
    g.bench_function("sh_script_write", |b| {
        b.iter(|| {
            let status = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&script)
                .status()
                .unwrap();
            assert!(status.success());
        });
        let _ = std::fs::remove_file(dir.path().join("sh-hooks.log"));
    });
    g.finish();
}

fn loads(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pkg = hello_package();
    let cache = tempfile::tempdir().unwrap();
    let cold = runtime(None);
    let cached = runtime(Some(cache.path()));
    // Fill the cache once.
    tokio.block_on(cached.load(&pkg)).unwrap();

    let mut g = c.benchmark_group("load");
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    g.bench_function("compile", |b| {
        b.iter(|| tokio.block_on(cold.load(&pkg)).unwrap())
    });
    g.bench_function("cached_hmac_verified", |b| {
        b.iter(|| {
            let p = tokio.block_on(cached.load(&pkg)).unwrap();
            assert_eq!(p.cache_status(), &stratus_plugin_runtime::CacheStatus::Hit);
        })
    });
    g.finish();
}

criterion_group!(benches, hook_calls, loads);
criterion_main!(benches);
