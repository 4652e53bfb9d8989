//! Why the metrics could not be rendered.

/// A scrape that failed: the store could not be read, or the text not written.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("reading the store for metrics: {0}")]
    Store(#[from] stratus_store::StoreError),
    #[error("writing the metrics text")]
    Encode(#[from] std::fmt::Error),
}
