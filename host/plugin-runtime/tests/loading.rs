//! Loading: world checks, corrupt components, the authenticated code cache, narrowing.

mod common;

use common::{assert_healthy, context, env, load, runtime};
use std::path::Path;
use stratus_model::context::{CmContext, HookCall, ServerInfo};
use stratus_plugin_runtime::{
    CacheStatus, CapabilityOverride, HookFailure, HookValue, LoadError, Package, Program,
    Supervisor, inspect,
};

/// A package in `dir` holding `wasm` with a manifest declaring `world`.
fn package(dir: &Path, wasm: &[u8], world: &str) -> Package {
    std::fs::write(dir.join("plugin.wasm"), wasm).unwrap();
    let toml = format!("[plugin]\nname = \"t\"\nversion = \"1\"\nworld = \"{world}\"\n");
    std::fs::write(dir.join("plugin.toml"), toml).unwrap();
    Package::open(dir).unwrap()
}

fn artifact(name: &str) -> Vec<u8> {
    std::fs::read(stratus_plugin_artifacts::package_dir(name).join("plugin.wasm")).unwrap()
}

#[tokio::test]
async fn a_cm_component_is_not_a_service() {
    let rt = runtime(None);
    let dir = tempfile::tempdir().unwrap();
    let err = rt
        .load(&package(dir.path(), &artifact("cm-probe"), "service"))
        .await
        .unwrap_err();
    match &err {
        LoadError::WrongWorld { expected, found } => {
            assert_eq!(expected, "service");
            assert!(found.contains("it is a `cm` component"), "{found}");
        }
        other => panic!("expected WrongWorld, got {other:?}"),
    }
    assert_healthy(&rt).await;
}

#[tokio::test]
async fn hooks_of_another_world_are_refused_at_call_time() {
    let rt = runtime(None);
    let probe = load(&rt, "cm-probe").await;
    let dir = tempfile::tempdir().unwrap();
    let call = HookCall::Configure {
        ctx: context(dir.path(), &[]),
    };
    let sup = Supervisor::new(dir.path().join("logs"));
    let f = probe
        .call(&call, &env(&call, &sup, None))
        .await
        .unwrap_err();
    assert_eq!(
        f.kind,
        HookFailure::WrongWorld {
            hook: "configure".into(),
            world: "cm".into()
        }
    );
    assert_eq!(
        f.to_string(),
        "hook `configure` is not exported by this plugin's `cm` world"
    );
}

#[tokio::test]
async fn cm_hooks_run_in_the_cm_world() {
    let rt = runtime(None);
    let probe = load(&rt, "cm-probe").await;
    let dir = tempfile::tempdir().unwrap();
    let (root, work) = (dir.path().join("root"), dir.path().join("work"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let ctx = CmContext {
        deployment: "shop".into(),
        tier: "app".into(),
        server: ServerInfo {
            id: "app-1".into(),
            name: "shop-app-1".into(),
            address: "127.0.0.1".into(),
        },
        server_root: root.to_str().unwrap().into(),
        work_dir: work.to_str().unwrap().into(),
        run_list: vec!["role[app]".into()],
        settings: Vec::new(),
        credentials: Vec::new(),
    };
    let sup = Supervisor::new(dir.path().join("logs"));
    let prepare = HookCall::CmPrepare { ctx: ctx.clone() };
    let out = probe
        .call(&prepare, &env(&prepare, &sup, None))
        .await
        .unwrap();
    assert_eq!(out.value, HookValue::Unit);
    assert_eq!(
        std::fs::read_to_string(work.join("prepared")).unwrap(),
        "role[app]\n"
    );
    let run = HookCall::CmRun { ctx };
    let out = probe.call(&run, &env(&run, &sup, None)).await.unwrap();
    match out.value {
        HookValue::Cm(report) => assert_eq!(report.summary, "cm-probe applied 1 run-list entries"),
        other => panic!("expected a CM report, got {other:?}"),
    }
    assert_eq!(out.logs.len(), 1, "{:?}", out.logs);
}

#[tokio::test]
async fn garbage_bytes_are_a_corrupt_component() {
    let rt = runtime(None);
    let dir = tempfile::tempdir().unwrap();
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let err = rt
        .load(&package(dir.path(), &garbage, "service"))
        .await
        .unwrap_err();
    match &err {
        LoadError::CorruptComponent { path, reason } => {
            assert_eq!(path, &dir.path().join("plugin.wasm"));
            assert!(!reason.is_empty());
        }
        other => panic!("expected CorruptComponent, got {other:?}"),
    }
    assert!(matches!(
        inspect(&garbage),
        Err(LoadError::CorruptComponent { .. })
    ));
    assert_healthy(&rt).await;
}

/// Changes one byte in the middle of the only compiled entry in the cache at `dir`.
fn flip_a_byte_of_the_entry(dir: &Path) {
    let entry = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("a .cwasm entry");
    let mut code = std::fs::read(&entry).unwrap();
    let mid = code.len() / 2;
    code[mid] ^= 0x01;
    std::fs::write(&entry, code).unwrap();
}

#[tokio::test]
async fn a_tampered_cache_entry_is_rejected_and_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let first = load(&runtime(Some(cache.path().to_owned())), "hello").await;
    assert_eq!(first.cache_status(), &CacheStatus::Compiled);
    let second = load(&runtime(Some(cache.path().to_owned())), "hello").await;
    assert_eq!(second.cache_status(), &CacheStatus::Hit);

    flip_a_byte_of_the_entry(cache.path());

    let rt = runtime(Some(cache.path().to_owned()));
    let third = load(&rt, "hello").await;
    match third.cache_status() {
        CacheStatus::Rejected(reason) => assert!(reason.contains("HMAC mismatch"), "{reason}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_healthy(&rt).await;
    // The recompiled entry was written back and verifies again.
    assert_eq!(load(&rt, "hello").await.cache_status(), &CacheStatus::Hit);
}

#[tokio::test]
async fn a_verified_component_loads_from_the_cache_unread_and_is_checked_on_a_miss() {
    let cache = tempfile::tempdir().unwrap();
    let rt = runtime(Some(cache.path().to_owned()));
    let hello = load(&rt, "hello").await;
    let sha = hello.sha256().to_owned();
    // A package whose component file is no component at all: a hit never reads it.
    let dir = tempfile::tempdir().unwrap();
    let pkg = package(dir.path(), b"not a component", "service");
    let hit = rt.load_verified(&pkg, &sha).await.unwrap();
    assert_eq!(hit.cache_status(), &CacheStatus::Hit);
    assert_eq!(hit.sha256(), sha);
    // But a hit still needs the file, within the size limit.
    let small = stratus_plugin_runtime::Runtime::new(stratus_plugin_runtime::RuntimeConfig {
        cache_dir: Some(cache.path().to_owned()),
        cache_key: [7u8; 32],
        max_concurrent_calls: 1,
        max_component_bytes: 10,
    })
    .unwrap();
    let err = small.load_verified(&pkg, &sha).await.unwrap_err();
    assert!(
        matches!(err, LoadError::TooLarge { limit: 10, .. }),
        "{err}"
    );
    std::fs::rename(&pkg.component_path, dir.path().join("moved")).unwrap();
    let err = rt.load_verified(&pkg, &sha).await.unwrap_err();
    assert!(matches!(err, LoadError::Io { .. }), "{err}");
    std::fs::rename(dir.path().join("moved"), &pkg.component_path).unwrap();

    // Without the entry the file is read, and refused: it is not what was verified.
    let fresh = tempfile::tempdir().unwrap();
    let rt = runtime(Some(fresh.path().to_owned()));
    let err = rt.load_verified(&pkg, &sha).await.unwrap_err().to_string();
    assert!(
        err.contains(&sha) && err.contains("not the one its package was verified with"),
        "{err}"
    );
    // The verified bytes themselves compile on a miss, and then hit.
    let pkg = package(dir.path(), &artifact("hello"), "service");
    let compiled = rt.load_verified(&pkg, &sha).await.unwrap();
    assert_eq!(compiled.cache_status(), &CacheStatus::Compiled);
    let again = rt.load_verified(&pkg, &sha).await.unwrap();
    assert_eq!(again.cache_status(), &CacheStatus::Hit);
    // A tampered entry is refused and replaced, and says so.
    flip_a_byte_of_the_entry(fresh.path());
    match rt.load_verified(&pkg, &sha).await.unwrap().cache_status() {
        CacheStatus::Rejected(reason) => assert!(reason.contains("HMAC mismatch"), "{reason}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(
        rt.load_verified(&pkg, &sha).await.unwrap().cache_status(),
        &CacheStatus::Hit
    );
    // A digest names a cache file: nothing else is taken for one.
    for bad in ["../../etc/passwd", &sha.to_uppercase(), &sha[..63]] {
        let err = rt.load_verified(&pkg, bad).await.unwrap_err().to_string();
        assert!(err.contains("not a SHA-256"), "{bad}: {err}");
    }
}

#[tokio::test]
async fn an_entry_without_its_mac_or_with_another_key_is_rejected() {
    let cache = tempfile::tempdir().unwrap();
    load(&runtime(Some(cache.path().to_owned())), "hello").await;
    let other_key = stratus_plugin_runtime::Runtime::new(stratus_plugin_runtime::RuntimeConfig {
        cache_dir: Some(cache.path().to_owned()),
        cache_key: [8u8; 32],
        max_concurrent_calls: 1,
        max_component_bytes: stratus_plugin_runtime::DEFAULT_MAX_COMPONENT_BYTES,
    })
    .unwrap();
    let p = load(&other_key, "hello").await;
    assert!(
        matches!(p.cache_status(), CacheStatus::Rejected(_)),
        "{:?}",
        p.cache_status()
    );

    for e in std::fs::read_dir(cache.path()).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|e| e == "hmac") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let p = load(&runtime(Some(cache.path().to_owned())), "hello").await;
    match p.cache_status() {
        CacheStatus::Rejected(reason) => assert!(reason.contains("no valid HMAC"), "{reason}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn operators_cannot_widen_a_manifest() {
    let rt = runtime(None);
    let hostile = load(&rt, "hostile").await;
    let op = CapabilityOverride {
        programs: Some(vec![Program::try_from("/bin/sh".to_string()).unwrap()]),
        memory_mb: Some(4096),
        ..Default::default()
    };
    let err = hostile.capabilities().narrow(&op).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the operator's capabilities widen the plugin's manifest: memory-mb 4096 > 64; program /bin/sh is not granted"
    );
}

#[tokio::test]
async fn inspect_describes_the_hello_component() {
    let info = inspect(&artifact("hello")).unwrap();
    assert_eq!(info.world, Some(stratus_model::context::World::Service));
    let hooks = info
        .exports
        .iter()
        .find(|e| e.name.starts_with("stratus:plugin/service-hooks"))
        .unwrap();
    assert!(
        hooks.functions.contains(&"configure(ctx)".to_string()),
        "{:?}",
        hooks.functions
    );
    assert!(
        info.imports
            .iter()
            .any(|i| i.starts_with("stratus:plugin/host"))
    );
}

#[tokio::test]
async fn a_bare_component_gets_no_capabilities_and_its_detected_world() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("probe.wasm");
    std::fs::write(&wasm, artifact("cm-probe")).unwrap();
    let pkg = Package::open(&wasm).unwrap();
    assert!(pkg.manifest.is_none());
    assert_eq!(pkg.name(), "probe");
    let plugin = runtime(None).load(&pkg).await.unwrap();
    assert_eq!(plugin.world(), stratus_model::context::World::Cm);
    assert!(plugin.capabilities().dirs.is_empty() && plugin.capabilities().programs.is_empty());
}

#[tokio::test]
async fn a_package_without_a_manifest_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = Package::open(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("plugin.toml") && err.starts_with("cannot read"),
        "{err}"
    );
}
