//! The control plane's journal and state, embedded in one SQLite file.
//!
//! Tables (see `schema.rs` for the current schema version and migrations):
//! - `deployments`: one row per deployment with its spec and state.
//! - `servers`: servers of a deployment, their provider and its opaque handle (JSON), their
//!   agent state and the *digest* of their credential.
//! - `service_instances`: the state of each service on each server.
//! - `steps`: the journal; a step is recorded as started before it runs, then completed/failed.
//! - `events`: an append-only log with a global sequence number, for `stratus events`.
//! - `meta`: small key/value settings of the control plane.
//!
//! State columns are generic (`S: Serialize + DeserializeOwned`) and stored as JSON text, so
//! this crate does not depend on the model's state enums.

mod deployments;
mod error;
mod events;
mod meta;
mod observe;
mod schema;
mod servers;
mod services;
mod steps;

pub use deployments::DeploymentRow;
pub use error::StoreError;
pub use events::{EventRow, NewEvent};
pub use observe::{JournalWrite, WriteObserver, observe_journal_writes};
pub use servers::ServerRow;
pub use services::ServiceInstanceRow;
pub use steps::{StepRow, StepState, StepStatus};

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a writer waits for another connection's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle on the store; cheap to clone, shared by all tasks of the control plane.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating with mode 0600 if needed) the store at `path` for reading and writing,
    /// in WAL mode, and migrates its schema to the current version.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        // Create the file ourselves so that it never exists with a wider mode than 0600.
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL is durable in WAL mode across process crashes; only power loss may lose the tail.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        schema::migrate(&mut conn, &path)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// Opens an existing store read-only, e.g. for `stratus status` next to a running control
    /// plane. Every write method returns an error on such a handle.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        schema::check(&conn, &path)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable: an open transaction was
        // rolled back when it was dropped.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Prepared statements a connection keeps: more than the store has, so every journal write
/// and status read after the first skips SQLite's parser (a few percent of a 1,000-server
/// terminate's control-plane time went to preparing the same statements again).
const STATEMENT_CACHE: usize = 64;

/// Milliseconds since the Unix epoch, the unit of every timestamp in the store.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn encode_state<S: Serialize>(state: &S) -> Result<String, StoreError> {
    Ok(serde_json::to_string(state)?)
}

pub(crate) fn decode_state<S: DeserializeOwned>(text: &str) -> Result<S, StoreError> {
    Ok(serde_json::from_str(text)?)
}
