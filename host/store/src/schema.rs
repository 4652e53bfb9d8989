//! Schema creation and migration, tracked with `PRAGMA user_version`.

use crate::StoreError;
use rusqlite::Connection;

/// Each entry migrates from version `index` to `index + 1`; append, never edit.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE deployments (
    name        TEXT PRIMARY KEY,
    spec_path   TEXT NOT NULL,
    spec_toml   TEXT NOT NULL,
    state       TEXT NOT NULL,   -- JSON of the state value
    reason      TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE TABLE servers (
    deployment        TEXT NOT NULL,
    id                TEXT NOT NULL,
    tier              TEXT NOT NULL,
    name              TEXT NOT NULL,
    address           TEXT NOT NULL,
    root              TEXT NOT NULL,
    pid               INTEGER,
    agent_state       TEXT NOT NULL,
    credential_digest TEXT NOT NULL,
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (deployment, id)
);
CREATE TABLE service_instances (
    deployment  TEXT NOT NULL,
    service     TEXT NOT NULL,
    service_id  TEXT NOT NULL,
    server_id   TEXT NOT NULL,
    state       TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (deployment, service, server_id)
);
CREATE TABLE steps (
    deployment    TEXT NOT NULL,
    key           TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('started', 'completed', 'failed')),
    attempts      INTEGER NOT NULL,
    input_digest  TEXT NOT NULL,
    outcome       TEXT,
    error         TEXT,
    started_at    INTEGER NOT NULL,
    finished_at   INTEGER,
    PRIMARY KEY (deployment, key)
);
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    time        INTEGER NOT NULL,
    deployment  TEXT,
    component   TEXT NOT NULL,
    server      TEXT,
    service     TEXT,
    level       TEXT NOT NULL,
    message     TEXT NOT NULL
);
CREATE INDEX events_by_deployment ON events (deployment, seq);
CREATE TABLE meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
"#,
    // A step's runs: one more each time it starts afresh after completing with other inputs,
    // so that a hook called again with inputs it had once before gets a new agent call id.
    "ALTER TABLE steps ADD COLUMN runs INTEGER NOT NULL DEFAULT 1;",
];

/// The schema version this binary writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

fn version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

/// Brings the schema up to [`VERSION`], one transaction per migration.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let found = version(conn)?;
    if found > VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: VERSION,
        });
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", from as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// A read-only handle cannot migrate, so it insists on the exact version.
pub fn check(conn: &Connection) -> Result<(), StoreError> {
    let found = version(conn)?;
    if found != VERSION {
        return Err(StoreError::SchemaMismatch {
            found,
            expected: VERSION,
        });
    }
    Ok(())
}
