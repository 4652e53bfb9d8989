use std::path::PathBuf;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("malformed JSON in the store: {0}")]
    Json(#[from] serde_json::Error),
    #[error("corrupt store: {0}")]
    Corrupt(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("step {key:?} of deployment {deployment:?} was never started")]
    StepNotStarted { deployment: String, key: String },
    #[error("store schema version {found} is newer than this binary supports ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("store schema version {found} is not the expected {expected}; open it read-write once")]
    SchemaMismatch { found: i64, expected: i64 },
}
