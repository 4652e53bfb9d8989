//! The step journal: begin/complete/fail, resume after reopen, and a reader beside a writer.

use serde_json::json;
use stratus_store::{NewEvent, StepState, StepStatus, Store, StoreError};

#[test]
fn step_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s.db")).unwrap();
    assert_eq!(
        store.step_begin("shop", "launch/s1", "d1").unwrap(),
        StepStatus::Fresh { attempt: 1, run: 1 }
    );
    store
        .step_failed("shop", "launch/s1", "provider busy")
        .unwrap();
    let failed = &store.steps("shop").unwrap()[0];
    assert_eq!(
        (failed.status, failed.error.as_deref()),
        (StepState::Failed, Some("provider busy"))
    );
    assert!(failed.finished_at.is_some());

    // A clean failure is known, so the next attempt is fresh, counted.
    assert_eq!(
        store.step_begin("shop", "launch/s1", "d1").unwrap(),
        StepStatus::Fresh { attempt: 2, run: 1 }
    );
    store
        .step_complete("shop", "launch/s1", &json!({"pid": 7}))
        .unwrap();
    assert_eq!(
        store.step_begin("shop", "launch/s1", "d1").unwrap(),
        StepStatus::Completed {
            outcome: json!({"pid": 7})
        }
    );

    let row = &store.steps("shop").unwrap()[0];
    assert_eq!(Some(row), store.step("shop", "launch/s1").unwrap().as_ref());
    assert_eq!(store.step("shop", "nope").unwrap(), None);
    assert_eq!(row.key, "launch/s1");
    assert_eq!((row.status, row.attempts), (StepState::Completed, 2));
    assert_eq!(row.input_digest, "d1");
    assert_eq!(row.outcome, Some(json!({"pid": 7})));
    assert_eq!(row.error, None);
    assert!(row.finished_at.unwrap() >= row.started_at);
    assert!(store.steps("other").unwrap().is_empty());
}

#[test]
fn changed_inputs_make_a_completed_step_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s.db")).unwrap();
    store.step_begin("shop", "configure/app/s1", "d1").unwrap();
    store
        .step_complete("shop", "configure/app/s1", &json!("ok"))
        .unwrap();
    assert_eq!(
        store.step_begin("shop", "configure/app/s1", "d2").unwrap(),
        StepStatus::Fresh { attempt: 1, run: 2 }
    );
    let row = &store.steps("shop").unwrap()[0];
    assert_eq!(
        (row.status, row.input_digest.as_str(), row.outcome.clone()),
        (StepState::Started, "d2", None)
    );
    // Back to the first inputs after a completed run: a third run, not the first again.
    store
        .step_complete("shop", "configure/app/s1", &json!("ok"))
        .unwrap();
    assert_eq!(
        store.step_begin("shop", "configure/app/s1", "d1").unwrap(),
        StepStatus::Fresh { attempt: 1, run: 3 }
    );
}

#[test]
fn completing_an_unknown_step_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s.db")).unwrap();
    let err = store
        .step_complete("shop", "never", &json!(null))
        .unwrap_err();
    assert!(matches!(err, StoreError::StepNotStarted { .. }), "{err}");
    assert!(store.step_failed("shop", "never", "x").is_err());
}

#[test]
fn started_step_reopens_as_retry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    {
        let store = Store::open(&path).unwrap();
        store.step_begin("shop", "install/db/s1", "d1").unwrap();
        store.step_begin("shop", "install/app/s2", "d1").unwrap();
        store
            .step_complete("shop", "install/app/s2", &json!(1))
            .unwrap();
        // Dropped without completing: as if the control plane was killed mid-step.
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.step_begin("shop", "install/db/s1", "d1").unwrap(),
        StepStatus::Retry { attempt: 2, run: 1 }
    );
    assert_eq!(
        store.step_begin("shop", "install/app/s2", "d1").unwrap(),
        StepStatus::Completed { outcome: json!(1) }
    );
}

#[test]
fn read_only_handle_follows_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let writer = Store::open(&path).unwrap();
    let reader = Store::open_read_only(&path).unwrap();
    const N: usize = 300;
    let w = std::thread::spawn(move || {
        for i in 0..N {
            writer
                .append_event(&NewEvent {
                    deployment: Some("shop".into()),
                    component: "dispatcher".into(),
                    server: None,
                    service: None,
                    level: "info".into(),
                    message: format!("event {i}"),
                })
                .unwrap();
            writer.step_begin("shop", &format!("k{i}"), "d").unwrap();
        }
    });
    let mut seen = Vec::new();
    let mut last = 0;
    while seen.len() < N {
        for e in reader.events_since(last, Some("shop"), 50).unwrap() {
            assert!(e.seq > last, "events must come in seq order");
            last = e.seq;
            seen.push(e.message);
        }
        // Reads in between writes must work too, not only appends.
        reader.steps("shop").unwrap();
    }
    w.join().unwrap();
    let expected: Vec<_> = (0..N).map(|i| format!("event {i}")).collect();
    assert_eq!(seen, expected);
}

/// Set in the child process of `reader_in_another_process_follows_the_writer`.
const CHILD_DB: &str = "STRATUS_STORE_TEST_WRITER_DB";

/// Not a test on its own: the writer half of the two-process test (a no-op otherwise).
#[test]
fn child_writer() {
    let Some(path) = std::env::var_os(CHILD_DB) else {
        return;
    };
    let store = Store::open(path).unwrap();
    for i in 0..200 {
        store.step_begin("shop", &format!("k{i}"), "d").unwrap();
        store
            .step_complete("shop", &format!("k{i}"), &json!(i))
            .unwrap();
    }
}

#[test]
fn reader_in_another_process_follows_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    Store::open(&path).unwrap();
    let reader = Store::open_read_only(&path).unwrap();
    // Re-run this test binary as the writer process.
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--test-threads", "1"])
        .env(CHILD_DB, &path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut last_len = 0;
    let status = loop {
        let steps = reader.steps("shop").unwrap();
        assert!(steps.len() >= last_len, "the journal never shrinks");
        last_len = steps.len();
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
    };
    assert!(status.success());
    let steps = reader.steps("shop").unwrap();
    assert_eq!(steps.len(), 200);
    assert!(steps.iter().all(|s| s.status == StepState::Completed));
}
