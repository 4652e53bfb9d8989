//! Scaling a running deployment through the real binary: hello's app tier 2 → 5 → 1. After
//! each step the load balancer balances exactly the live app servers, the database has
//! granted exactly their addresses (grants.log replayed), new servers ran the whole pipeline,
//! old ones ran nothing again, and no process of a removed server is left.

use crate::common;

use common::{
    Stratus, addresses, alive, hello_deployment, read, server_root, servers, terminate, wait_gone,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

fn service_dir(st: &Stratus, server: &Value) -> PathBuf {
    let id = server["services"][0]["id"].as_str().unwrap().to_string();
    server_root(st, "hello", server)
        .join("mnt/services")
        .join(id)
}

/// The addresses the database has granted to `app` now: grants.log replayed in order.
fn granted(st: &Stratus, db: &Value) -> BTreeSet<String> {
    common::granted_in(&read(&service_dir(st, db).join("grants.log")))
}

/// The addresses in the load balancer's nodes.txt.
fn balanced(st: &Stratus, lb: &Value) -> BTreeSet<String> {
    common::nodes_in(&read(&service_dir(st, lb).join("nodes.txt")))
}

/// Checks the deployment is RUNNING with `n` app servers that the load balancer and the
/// database know exactly; returns the app servers.
fn check_app_tier(st: &Stratus, n: usize) -> Vec<Value> {
    let d = st.deployment("hello");
    assert_eq!(d["state"], "RUNNING", "{d}");
    let app = servers(&d, "app");
    assert_eq!(app.len(), n, "{d}");
    for s in &app {
        assert_eq!(s["agent"], "RUNNING", "{s}");
        assert_eq!(s["services"][0]["state"], "RUNNING", "{s}");
    }
    let live = addresses(&app);
    assert_eq!(
        balanced(st, &servers(&d, "lb")[0]),
        live,
        "load balancer nodes"
    );
    assert_eq!(granted(st, &servers(&d, "db")[0]), live, "database grants");
    let tier = d["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "app")
        .unwrap();
    assert_eq!(tier["target"]["count"], n as u64, "{tier}");
    app
}

#[test]
fn hello_app_tier_scales_up_and_down_with_dependents_told() {
    let st = Stratus::new();
    let file = st.write_file("hello.toml", &hello_deployment("hello", 2));
    st.ok(&["launch", file.to_str().unwrap()]);
    let first = check_app_tier(&st, 2);
    let lb = servers(&st.deployment("hello"), "lb").remove(0);
    let lb_hooks_before = read(&service_dir(&st, &lb).join("hooks.log"));

    // 2 → 5: three new servers with the next ids, each through the whole pipeline.
    st.ok(&["scale", "hello", "app", "5", "--min", "1", "--max", "8"]);
    let five = check_app_tier(&st, 5);
    let ids: Vec<&str> = five.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["app-1", "app-2", "app-3", "app-4", "app-5"]);
    for s in &five[2..] {
        let hooks = read(&service_dir(&st, s).join("hooks.log"));
        assert_eq!(
            hooks.lines().collect::<Vec<_>>(),
            ["install-service", "configure", "stop", "start"],
            "{hooks}"
        );
    }
    // The first two ran nothing again, and the load balancer was not reconfigured: it was
    // only told the new node set.
    for s in &first {
        let hooks = read(&service_dir(&st, s).join("hooks.log"));
        assert_eq!(hooks.lines().count(), 4, "{}: {hooks}", s["id"]);
    }
    let lb_hooks = read(&service_dir(&st, &lb).join("hooks.log"));
    let added = lb_hooks.strip_prefix(&lb_hooks_before).unwrap();
    assert_eq!(added, "start-proxy\n", "{lb_hooks}");
    let events = st.ok(&["events", "--deployment", "hello"]);
    assert!(
        events.contains("scaling event: tier app 2 -> 5"),
        "{events}"
    );

    // 5 → 1: the newest leave first; their processes are gone.
    let pids = |list: &[Value]| -> Vec<u32> {
        list.iter()
            .map(|s| s["pid"].as_u64().unwrap() as u32)
            .collect()
    };
    let leaving = pids(&five[1..]);
    st.ok(&["scale", "hello", "app", "1"]);
    let one = check_app_tier(&st, 1);
    assert_eq!(one[0]["id"], "app-1");
    for p in leaving {
        assert!(
            wait_gone(p, Duration::from_secs(10)),
            "agent {p} of a removed server is left"
        );
    }
    for s in &five[1..] {
        assert!(
            !server_root(&st, "hello", s).exists(),
            "{} disk left",
            s["id"]
        );
    }
    let lb_hooks = read(&service_dir(&st, &lb).join("hooks.log"));
    assert!(
        lb_hooks.ends_with("remove-nodes\nstart-proxy\n"),
        "{lb_hooks}"
    );
    let events = st.ok(&["events", "--deployment", "hello"]);
    assert!(
        events.contains("scaling event: tier app 5 -> 1"),
        "{events}"
    );
    // Servers ended on purpose are not taken for lost ones.
    assert!(!events.contains("agent LOST"), "{events}");

    // And back up: a reused address is granted again (a new call, not a replay).
    st.ok(&["scale", "hello", "app", "3"]);
    let three = check_app_tier(&st, 3);
    let ids: Vec<&str> = three.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["app-1", "app-6", "app-7"]);
    let all = st.agent_pids();
    terminate(&st, "hello");
    assert!(all.iter().all(|&p| !alive(p)));
}
