//! More calls than pool slots: the runtime queues them instead of failing to instantiate.

mod common;

use common::{context, env, install_cfg, load, shared_runtime};
use stratus_model::context::HookCall;
use stratus_plugin_runtime::{Allocator, Runtime, RuntimeConfig, Supervisor};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_pool_size_wait_and_succeed() {
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: None,
        cache_key: [1; 32],
        max_concurrent_calls: 2,
        max_component_bytes: stratus_plugin_runtime::DEFAULT_MAX_COMPONENT_BYTES,
    })
    .unwrap();
    // The pool's sizing must be valid for the engine, else it silently falls back.
    assert_eq!(rt.allocator(), Allocator::Pooling);
    let hello = load(&rt, "hello").await;
    let dirs: Vec<_> = (0..8).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut tasks = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        install_cfg(dir.path());
        let greeting = format!("hi-{i}");
        let call = HookCall::Configure {
            ctx: context(dir.path(), &[("greeting", greeting.as_str())]),
        };
        let sup = Supervisor::new(dir.path().join("logs"));
        let env = env(&call, &sup, None);
        let hello = hello.clone();
        tasks.push(tokio::spawn(async move {
            hello.call(&call, &env).await.map(|_| ())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for (i, dir) in dirs.iter().enumerate() {
        let text = std::fs::read_to_string(dir.path().join("hello.conf")).unwrap();
        assert!(text.contains(&format!("greeting=hi-{i}")), "{text}");
    }
}

/// A plugin keeps its last call's context to share with an equal next call; a call with a
/// different context must render from its own, never the one kept from before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_renders_from_its_own_context_not_the_last_one() {
    let rt = shared_runtime();
    let hello = load(&rt, "hello").await;
    let dir = tempfile::tempdir().unwrap();
    install_cfg(dir.path());
    let sup = Supervisor::new(dir.path().join("logs"));
    for greeting in ["first", "first", "second", "first"] {
        let call = HookCall::Configure {
            ctx: context(dir.path(), &[("greeting", greeting)]),
        };
        hello.call(&call, &env(&call, &sup, None)).await.unwrap();
        let text = std::fs::read_to_string(dir.path().join("hello.conf")).unwrap();
        assert!(
            text.contains(&format!("greeting={greeting}")),
            "{greeting}: {text}"
        );
    }
}
