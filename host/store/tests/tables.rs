//! Deployments, servers, service instances, events and meta through a real SQLite file.

use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use stratus_store::{NewEvent, ServerRow, Store, StoreError};

/// Shaped like the model's state enums, so the JSON round trip is the real one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum State {
    Launching,
    Running,
    Failed { reason: String },
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("stratus.db")).unwrap();
    (dir, store)
}

fn server(id: &str, state: State) -> ServerRow<State> {
    ServerRow {
        deployment: "shop".into(),
        id: id.into(),
        tier: "web".into(),
        name: format!("web-{id}"),
        address: "127.3.0.2".into(),
        provider: "local".into(),
        handle: Some(serde_json::json!({ "pid": 4242 })),
        agent_state: state,
        credential_digest: "ab".repeat(32),
    }
}

#[test]
fn file_is_private_and_in_wal_mode() {
    let (dir, _store) = open();
    let mode = std::fs::metadata(dir.path().join("stratus.db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        dir.path().join("stratus.db-wal").exists(),
        "WAL file expected"
    );
}

#[test]
fn deployments_round_trip_and_update() {
    let (_dir, store) = open();
    store
        .put_deployment("shop", "/x/shop.toml", "name = 'shop'", &State::Launching)
        .unwrap();
    store
        .put_deployment("blog", "/x/blog.toml", "name = 'blog'", &State::Running)
        .unwrap();
    let shop = store.deployment::<State>("shop").unwrap().unwrap();
    assert_eq!(shop.spec_path, "/x/shop.toml");
    assert_eq!(shop.spec_toml, "name = 'shop'");
    assert_eq!(shop.state, State::Launching);
    assert!(shop.created_at > 1_600_000_000_000, "unix ms expected");

    let failed = State::Failed {
        reason: "no servers".into(),
    };
    store
        .set_deployment_state("shop", &failed, Some("provider refused"))
        .unwrap();
    let shop2 = store.deployment::<State>("shop").unwrap().unwrap();
    assert_eq!(shop2.state, failed);
    assert_eq!(shop2.reason.as_deref(), Some("provider refused"));
    assert_eq!(shop2.created_at, shop.created_at);
    assert!(shop2.updated_at >= shop.updated_at);

    let names: Vec<_> = store
        .deployments::<State>()
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["blog", "shop"]);
    assert!(store.deployment::<State>("nope").unwrap().is_none());
    let err = store
        .set_deployment_state("nope", &State::Running, None)
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
}

#[test]
fn a_deployment_state_swap_happens_only_from_the_expected_state() {
    let (_dir, store) = open();
    store
        .put_deployment("shop", "/x/shop.toml", "name = 'shop'", &State::Running)
        .unwrap();
    // Another task moved it on first: a swap from the state read earlier changes nothing.
    assert!(
        !store
            .swap_deployment_state("shop", &State::Launching, &State::Running, None)
            .unwrap()
    );
    assert!(
        store
            .swap_deployment_state("shop", &State::Running, &State::Launching, Some("why"))
            .unwrap()
    );
    let shop = store.deployment::<State>("shop").unwrap().unwrap();
    assert_eq!(
        (shop.state, shop.reason.as_deref()),
        (State::Launching, Some("why"))
    );
    assert!(
        !store
            .swap_deployment_state("nope", &State::Running, &State::Launching, None)
            .unwrap()
    );
}

#[test]
fn servers_upsert_update_and_delete() {
    let (_dir, store) = open();
    store
        .upsert_server(&server("s1", State::Launching))
        .unwrap();
    store
        .upsert_server(&server("s2", State::Launching))
        .unwrap();
    let mut changed = server("s1", State::Launching);
    changed.address = "127.3.0.9".into();
    store.upsert_server(&changed).unwrap();
    assert_eq!(
        store.server::<State>("shop", "s1").unwrap().unwrap(),
        changed
    );

    store
        .set_agent_state("shop", "s2", &State::Running)
        .unwrap();
    store.set_server_handle("shop", "s2", None).unwrap();
    let s2 = store.server::<State>("shop", "s2").unwrap().unwrap();
    assert_eq!((s2.agent_state, s2.handle), (State::Running, None));

    let ids: Vec<_> = store
        .servers::<State>("shop")
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, ["s1", "s2"]);
    assert!(store.servers::<State>("other").unwrap().is_empty());

    store
        .set_service_state("shop", "app", "a7", "s1", &State::Running)
        .unwrap();
    assert!(store.delete_server("shop", "s1").unwrap());
    assert!(!store.delete_server("shop", "s1").unwrap());
    assert!(store.server::<State>("shop", "s1").unwrap().is_none());
    assert!(
        store.service_instances::<State>("shop").unwrap().is_empty(),
        "instances go with the server"
    );
    assert!(
        store
            .set_agent_state("shop", "s1", &State::Running)
            .is_err()
    );
    assert!(
        store
            .set_server_handle("shop", "s1", Some(&serde_json::json!({ "pid": 1 })))
            .is_err()
    );
}

#[test]
fn service_instances_track_state_per_server() {
    let (_dir, store) = open();
    store
        .set_service_state("shop", "db", "a1", "s1", &State::Launching)
        .unwrap();
    store
        .set_service_state("shop", "app", "a2", "s2", &State::Launching)
        .unwrap();
    store
        .set_service_state("shop", "app", "a2", "s3", &State::Running)
        .unwrap();
    let failed = State::Failed {
        reason: "configure: exit 1".into(),
    };
    store
        .set_service_state("shop", "db", "a1", "s1", &failed)
        .unwrap();
    let rows = store.service_instances::<State>("shop").unwrap();
    let got: Vec<_> = rows
        .iter()
        .map(|r| (r.service.as_str(), r.server_id.as_str(), &r.state))
        .collect();
    assert_eq!(
        got,
        [
            ("app", "s2", &State::Launching),
            ("app", "s3", &State::Running),
            ("db", "s1", &failed)
        ]
    );
    assert_eq!(rows[2].service_id, "a1");
    // One instance by its key, the same row as in the whole list.
    let one = store.service_instance::<State>("shop", "db", "s1").unwrap();
    assert_eq!(one.as_ref(), Some(&rows[2]));
    let s3 = store
        .service_instance::<State>("shop", "app", "s3")
        .unwrap();
    assert_eq!(s3.map(|r| r.state), Some(State::Running));
    for (service, server) in [("db", "s2"), ("app", "s1"), ("web", "s3")] {
        assert!(
            store
                .service_instance::<State>("shop", service, server)
                .unwrap()
                .is_none(),
            "{service} on {server}"
        );
    }
    assert!(
        store
            .service_instance::<State>("other", "db", "s1")
            .unwrap()
            .is_none()
    );
}

#[test]
fn events_are_ordered_and_filterable() {
    let (_dir, store) = open();
    let ev = |d: Option<&str>, m: &str| NewEvent {
        deployment: d.map(String::from),
        component: "scaling-worker".into(),
        server: Some("s1".into()),
        service: None,
        level: "info".into(),
        message: m.into(),
    };
    let a = store.append_event(&ev(Some("shop"), "one")).unwrap();
    let b = store.append_event(&ev(Some("blog"), "two")).unwrap();
    let c = store.append_event(&ev(None, "three")).unwrap();
    let d = store.append_event(&ev(Some("shop"), "four")).unwrap();
    assert!(a < b && b < c && c < d);

    let all = store.events_since(0, None, 100).unwrap();
    let msgs: Vec<_> = all.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(msgs, ["one", "two", "three", "four"]);
    assert_eq!(all[0].server.as_deref(), Some("s1"));
    assert!(all[0].time > 1_600_000_000_000);

    let shop: Vec<_> = store
        .events_since(0, Some("shop"), 100)
        .unwrap()
        .into_iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(shop, [a, d]);
    let after: Vec<_> = store
        .events_since(b, None, 1)
        .unwrap()
        .into_iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(after, [c], "limit and after_seq");
}

#[test]
fn meta_sets_and_replaces() {
    let (_dir, store) = open();
    assert_eq!(store.meta("listen").unwrap(), None);
    store.set_meta("listen", "127.0.0.1:7000").unwrap();
    store.set_meta("listen", "127.0.0.1:7001").unwrap();
    assert_eq!(
        store.meta("listen").unwrap().as_deref(),
        Some("127.0.0.1:7001")
    );
}

#[test]
fn metas_set_together_set_and_replace_each_one() {
    let (_dir, store) = open();
    store.set_meta("a", "old").unwrap();
    let pairs = [("a", "new"), ("b", "first")].map(|(k, v)| (k.to_string(), v.to_string()));
    store.set_metas(&pairs).unwrap();
    assert_eq!(store.meta("a").unwrap().as_deref(), Some("new"));
    assert_eq!(store.meta("b").unwrap().as_deref(), Some("first"));
    store.set_metas(&[]).unwrap();
    assert_eq!(store.meta("b").unwrap().as_deref(), Some("first"));
}

#[test]
fn meta_under_a_prefix_is_every_key_starting_with_it_and_no_other() {
    let (_dir, store) = open();
    for key in [
        "c/j1/s1", "c/j1/s10", "c/j1/s2", "c/j10/s1", "c/j1", "c/j0/s1", "c/j2",
    ] {
        store.set_meta(key, &format!("v {key}")).unwrap();
    }
    let keys = |prefix: &str| -> Vec<String> {
        store
            .meta_under(prefix)
            .unwrap()
            .into_iter()
            .map(|(k, v)| {
                assert_eq!(v, format!("v {k}"));
                k
            })
            .collect()
    };
    assert_eq!(keys("c/j1/"), ["c/j1/s1", "c/j1/s10", "c/j1/s2"]);
    assert_eq!(
        keys("c/j1"),
        ["c/j1", "c/j1/s1", "c/j1/s10", "c/j1/s2", "c/j10/s1"]
    );
    assert!(keys("c/j3/").is_empty());
    assert_eq!(keys("").len(), 7, "the empty prefix is every key");
    // A prefix ending past ASCII still finds its keys (the unbounded form).
    store.set_meta("c/é", "v c/é").unwrap();
    store.set_meta("c/éa", "v c/éa").unwrap();
    assert_eq!(keys("c/é"), ["c/é", "c/éa"]);
}

#[test]
fn everything_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stratus.db");
    {
        let store = Store::open(&path).unwrap();
        store
            .put_deployment("shop", "/x", "toml", &State::Running)
            .unwrap();
        store.upsert_server(&server("s1", State::Running)).unwrap();
        store
            .set_service_state("shop", "app", "a2", "s1", &State::Running)
            .unwrap();
        store.set_meta("k", "v").unwrap();
        store
            .append_event(&NewEvent {
                deployment: Some("shop".into()),
                component: "monitor".into(),
                server: None,
                service: None,
                level: "info".into(),
                message: "up".into(),
            })
            .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.deployment::<State>("shop").unwrap().unwrap().state,
        State::Running
    );
    assert_eq!(
        store.server::<State>("shop", "s1").unwrap().unwrap(),
        server("s1", State::Running)
    );
    assert_eq!(store.service_instances::<State>("shop").unwrap().len(), 1);
    assert_eq!(store.meta("k").unwrap().as_deref(), Some("v"));
    assert_eq!(store.events_since(0, None, 10).unwrap()[0].message, "up");
}

#[test]
fn read_only_handle_reads_but_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stratus.db");
    let writer = Store::open(&path).unwrap();
    writer
        .put_deployment("shop", "/x", "toml", &State::Running)
        .unwrap();
    let reader = Store::open_read_only(&path).unwrap();
    assert_eq!(
        reader.deployment::<State>("shop").unwrap().unwrap().state,
        State::Running
    );
    assert!(reader.set_meta("k", "v").is_err());
    assert!(Store::open_read_only(dir.path().join("missing.db")).is_err());
}

#[test]
fn read_only_handle_works_when_no_writer_is_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stratus.db");
    Store::open(&path)
        .unwrap()
        .put_deployment("shop", "/x", "toml", &State::Running)
        .unwrap();
    // The last writer closed cleanly, which removes the WAL and shared-memory files.
    let reader = Store::open_read_only(&path).unwrap();
    assert_eq!(reader.deployments::<State>().unwrap().len(), 1);
}

#[test]
fn an_agent_state_is_swapped_only_from_the_state_it_was_read_in() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s.db")).unwrap();
    store
        .upsert_server(&stratus_store::ServerRow {
            deployment: "shop".into(),
            id: "app-1".into(),
            tier: "app".into(),
            name: "shop-app-1".into(),
            address: "127.0.0.2".into(),
            provider: "local".into(),
            handle: Some(serde_json::json!({ "pid": 7 })),
            agent_state: "RUNNING".to_string(),
            credential_digest: "d".into(),
        })
        .unwrap();
    // Terminate wrote first; the monitor's LOST, decided from RUNNING, must not land.
    assert!(
        store
            .swap_agent_state("shop", "app-1", &"RUNNING", &"TERMINATED")
            .unwrap()
    );
    assert!(
        !store
            .swap_agent_state("shop", "app-1", &"RUNNING", &"LOST")
            .unwrap()
    );
    let row = store.server::<String>("shop", "app-1").unwrap().unwrap();
    assert_eq!(row.agent_state, "TERMINATED");
}
