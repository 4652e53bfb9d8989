//! The proxy world: its own hooks and the service hooks it also exports.

mod common;

use common::{context, env, load, shared_runtime};
use stratus_model::context::{HealthStatus, HookCall, ProxyNode, ServerInfo};
use stratus_plugin_runtime::{HookValue, Supervisor};

fn node(id: &str, address: &str, port: u16) -> ProxyNode {
    ProxyNode {
        server: ServerInfo {
            id: id.into(),
            name: format!("shop-{id}"),
            address: address.into(),
        },
        port,
    }
}

#[tokio::test]
async fn proxy_hooks_and_service_hooks_run_in_the_proxy_world() {
    let rt = shared_runtime();
    let proxy = load(&rt, "hello-proxy").await;
    assert_eq!(proxy.world(), stratus_model::context::World::Proxy);
    let dir = tempfile::tempdir().unwrap();
    let sup = Supervisor::new(dir.path().join("logs"));
    let ctx = context(dir.path(), &[]);
    let nodes = vec![
        node("app-1", "127.0.0.11", 8080),
        node("app-2", "127.0.0.12", 8080),
    ];

    let start = HookCall::StartProxy {
        ctx: ctx.clone(),
        nodes: nodes.clone(),
    };
    proxy.call(&start, &env(&start, &sup, None)).await.unwrap();
    let text = std::fs::read_to_string(dir.path().join("nodes.txt")).unwrap();
    assert_eq!(
        text,
        "shop-app-1 127.0.0.11:8080\nshop-app-2 127.0.0.12:8080\n"
    );

    let remove = HookCall::RemoveNodes {
        ctx: ctx.clone(),
        nodes: nodes[..1].to_vec(),
    };
    proxy
        .call(&remove, &env(&remove, &sup, None))
        .await
        .unwrap();
    let text = std::fs::read_to_string(dir.path().join("nodes.txt")).unwrap();
    assert_eq!(text, "shop-app-2 127.0.0.12:8080\n");

    let health = HookCall::HealthCheck { ctx };
    let out = proxy
        .call(&health, &env(&health, &sup, None))
        .await
        .unwrap();
    match out.value {
        HookValue::Health(h) => assert_eq!(h.status, HealthStatus::Ok),
        other => panic!("expected a health report, got {other:?}"),
    }
    let log = std::fs::read_to_string(dir.path().join("hooks.log")).unwrap();
    assert_eq!(log, "start-proxy\nremove-nodes\n");
    // Health checks keep a log of their own: they run on a schedule all the server's life.
    let checks = std::fs::read_to_string(dir.path().join("health.log")).unwrap();
    assert_eq!(checks, "health-check\n");
}
