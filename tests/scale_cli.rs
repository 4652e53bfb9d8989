//! `stratus scale` refusals through the real binary and control plane: a count outside the
//! tier's bounds, inverted bounds, an unknown tier or deployment, a deployment that is not
//! RUNNING, and a scale-up beyond the provider's capacity are each refused with a message
//! naming the problem, exit 2, and change nothing (target, servers, state, events).

use crate::common;

use common::{Stratus, hello_deployment, servers, terminate};
use serde_json::{Value, json};

/// Runs `stratus scale ARGS`, insists on a refusal (exit 2) and returns its standard error.
fn refused(st: &Stratus, args: &[&str]) -> String {
    let mut all = vec!["scale"];
    all.extend_from_slice(args);
    let out = st.run(&all);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stratus {all:?}: {out:?}");
    assert!(err.contains("nothing was scaled"), "{err}");
    err
}

/// The app tier's target and its servers' ids, and the deployment's state.
fn app_tier(st: &Stratus) -> (Value, Vec<Value>, Value) {
    let d = st.deployment("hello");
    let tier = d["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "app")
        .cloned()
        .unwrap();
    let ids = servers(&d, "app").iter().map(|s| s["id"].clone()).collect();
    (tier["target"].clone(), ids, d["state"].clone())
}

#[test]
fn scale_refusals_name_the_problem_and_change_nothing() {
    let st = Stratus::new();
    // Room for exactly hello's four servers, so a valid scale-up has no room.
    std::fs::create_dir_all(st.dir().join("provider")).unwrap();
    std::fs::write(st.dir().join("provider/max-servers"), "4\n").unwrap();
    let file = st.write_file("hello.toml", &hello_deployment("hello", 2));
    st.ok(&["launch", file.to_str().unwrap()]);

    let before = app_tier(&st);
    assert_eq!(
        before.0,
        json!({"min": 2, "max": 4, "count": 2}),
        "{before:?}"
    );
    assert_eq!(before.1, [json!("app-1"), json!("app-2")]);
    assert_eq!(before.2, "RUNNING");
    let text = st.ok(&["status", "hello"]);
    assert!(text.contains("tier app: 2 of 2..4"), "{text}");
    assert!(text.contains("tier db: 1 of 1..1"), "{text}");
    let events_before = st.ok(&["events", "--deployment", "hello"]);

    let err = refused(&st, &["hello", "app", "99"]);
    assert!(
        err.contains("tier app: count 99 is outside its bounds 2..4"),
        "{err}"
    );
    let err = refused(&st, &["hello", "app", "1"]);
    assert!(err.contains("count 1 is outside its bounds 2..4"), "{err}");
    let err = refused(&st, &["hello", "app", "--min", "3", "--max", "2"]);
    assert!(
        err.contains("tier app: min 3 is greater than max 2"),
        "{err}"
    );
    let err = refused(&st, &["hello", "app", "--max", "0"]);
    assert!(err.contains("tier app: max must be at least 1"), "{err}");
    let err = refused(&st, &["hello", "nosuchtier", "1"]);
    assert!(
        err.contains("deployment hello has no tier named nosuchtier"),
        "{err}"
    );
    let err = refused(&st, &["nosuch", "app", "1"]);
    assert!(err.contains("no deployment named nosuch"), "{err}");
    let err = refused(&st, &["hello", "app"]);
    assert!(err.contains("give a COUNT, --min or --max"), "{err}");
    // Within the bounds, but the provider holds four servers of four.
    let err = refused(&st, &["hello", "app", "3"]);
    assert!(
        err.contains(
            "deployment hello needs 1 servers, the local provider has room for 0 \
             (max-servers 4, 4 in use)"
        ),
        "{err}"
    );

    assert_eq!(app_tier(&st), before, "a refused scale changed the tier");
    let events_after = st.ok(&["events", "--deployment", "hello"]);
    assert_eq!(events_after, events_before, "a refused scale left an event");
    assert!(!events_after.contains("scale requested"), "{events_after}");

    terminate(&st, "hello");
    let err = refused(&st, &["hello", "app", "3"]);
    assert!(
        err.contains("deployment hello is TERMINATED; only a RUNNING deployment can be scaled"),
        "{err}"
    );
}
