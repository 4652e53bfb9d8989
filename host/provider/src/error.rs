use std::path::PathBuf;

/// Why a provider could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("invalid {what} {name:?}: use letters, digits, '-', '_' or '.' (not leading)")]
    InvalidName { what: &'static str, name: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("cannot start agent {program}: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("no free loopback address left in 127.0.0.0/8")]
    NoAddress,
    #[error("address leases file {path} is corrupt: {source}")]
    Leases {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("signalling process group {pgid}: {errno}")]
    Signal { pgid: u32, errno: nix::errno::Errno },
    #[error("process group {pgid} survived SIGKILL")]
    StillAlive { pgid: u32 },
    #[error("ending the server's cgroup: {0}")]
    Cgroup(String),
    #[error("provider task failed: {0}")]
    Task(String),
}

impl ProviderError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProviderError {
        let context = context.into();
        move |source| ProviderError::Io { context, source }
    }
}
