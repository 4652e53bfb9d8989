//! Schema creation and migration, tracked with `PRAGMA user_version`.

use crate::StoreError;
use rusqlite::Connection;
use std::path::Path;

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
    // A server keeps its provider's name and opaque handle instead of the local provider's
    // root and pid; every server recorded before was a local one, whose handle is both.
    r#"
ALTER TABLE servers ADD COLUMN provider TEXT NOT NULL DEFAULT 'local';
ALTER TABLE servers ADD COLUMN handle TEXT;
UPDATE servers SET handle = json_object('root', root, 'pid', pid) WHERE pid IS NOT NULL;
ALTER TABLE servers DROP COLUMN root;
ALTER TABLE servers DROP COLUMN pid;
"#,
];

/// The schema version this binary writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

fn version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

/// Brings the schema up to [`VERSION`], one transaction per migration.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let found = version(conn)?;
    if found > VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
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
pub fn check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let found = version(conn)?;
    if found != VERSION {
        return Err(StoreError::SchemaMismatch {
            path: path.to_path_buf(),
            found,
            expected: VERSION,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ServerRow, Store};

    /// A store written by the binary before provider handles: schema version 2, servers with
    /// the local provider's `root` and `pid` columns.
    fn old_store(path: &Path) {
        let conn = Connection::open(path).unwrap();
        for sql in &MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute_batch(
            "INSERT INTO servers VALUES ('shop', 'app-1', 'app', 'shop-app-1', '127.3.0.2',
                 '/s/servers/shop/app-1/root', 4242, '\"RUNNING\"', 'd', 1);
             INSERT INTO servers VALUES ('shop', 'app-2', 'app', 'shop-app-2', '127.3.0.3',
                 '/s/servers/shop/app-2/root', NULL, '\"STARTING\"', 'd', 1);",
        )
        .unwrap();
    }

    #[test]
    fn an_old_store_migrates_root_and_pid_into_a_local_handle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stratus.db");
        old_store(&path);
        let store = Store::open(&path).unwrap();
        let rows: Vec<ServerRow<String>> = store.servers("shop").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].provider, "local");
        assert_eq!(
            rows[0].handle,
            Some(serde_json::json!({ "root": "/s/servers/shop/app-1/root", "pid": 4242 }))
        );
        assert_eq!(
            (rows[0].agent_state.as_str(), rows[0].address.as_str()),
            ("RUNNING", "127.3.0.2")
        );
        // No agent pid was recorded: there is nothing to find again.
        assert_eq!(
            (rows[1].provider.as_str(), &rows[1].handle),
            ("local", &None)
        );
        let columns: Vec<String> = store
            .conn()
            .prepare("SELECT name FROM pragma_table_info('servers')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            !columns.iter().any(|c| c == "root" || c == "pid"),
            "{columns:?}"
        );
    }

    #[test]
    fn an_old_store_is_refused_read_only_naming_the_file_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stratus.db");
        old_store(&path);
        let e = Store::open_read_only(&path).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: ", path.display())), "{e}");
        assert!(
            e.contains("version 2") && e.contains("stratus serve"),
            "{e}"
        );
    }

    #[test]
    fn a_newer_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stratus.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        drop(conn);
        let e = Store::open(&path).unwrap_err().to_string();
        assert!(
            e.contains("newer") && e.contains(&path.display().to_string()),
            "{e}"
        );
    }
}
