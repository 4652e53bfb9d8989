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
    #[error(
        "{}: store schema version {found} is newer than this binary supports ({supported}); \
         use the stratus binary that wrote it",
        path.display()
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "{}: store schema version {found} is not this binary's {expected}; an older one is \
         migrated when a control plane (`stratus serve`) of this version starts on its state \
         directory, a newer one needs the binary that wrote it",
        path.display()
    )]
    SchemaMismatch {
        path: PathBuf,
        found: i64,
        expected: i64,
    },
}
