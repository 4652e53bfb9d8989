//! The model's real state enums go through the generic state columns unchanged.

use stratus_model::state::{AgentState, DeploymentState, ServiceState};
use stratus_store::{ServerRow, Store};

#[test]
fn model_states_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s.db")).unwrap();
    let failed = DeploymentState::Failed {
        reason: "db: configure failed".into(),
    };
    store
        .put_deployment("shop", "/x", "toml", &DeploymentState::Launching)
        .unwrap();
    store.set_deployment_state("shop", &failed, None).unwrap();
    assert_eq!(
        store
            .deployment::<DeploymentState>("shop")
            .unwrap()
            .unwrap()
            .state,
        failed
    );

    store
        .upsert_server(&ServerRow {
            deployment: "shop".into(),
            id: "s1".into(),
            tier: "db".into(),
            name: "db-1".into(),
            address: "127.9.0.1".into(),
            provider: "local".into(),
            handle: None,
            agent_state: AgentState::Starting,
            credential_digest: "d".into(),
        })
        .unwrap();
    store
        .set_agent_state("shop", "s1", &AgentState::Running)
        .unwrap();
    let server = store.server::<AgentState>("shop", "s1").unwrap().unwrap();
    assert_eq!(server.agent_state, AgentState::Running);

    let svc = ServiceState::Failed {
        reason: "exit 1".into(),
    };
    store
        .set_service_state("shop", "db", "a1", "s1", &svc)
        .unwrap();
    assert_eq!(
        store.service_instances::<ServiceState>("shop").unwrap()[0].state,
        svc
    );
    // The wrong type for a column is an error, not a silent default.
    assert!(store.deployment::<AgentState>("shop").is_err());
}
