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
    #[error(
        "the local provider has room for {} more server(s) (max-servers {}, {} in use)",
        crate::capacity::thousands(max.saturating_sub(*used)),
        crate::capacity::thousands(*max),
        crate::capacity::thousands(*used)
    )]
    Full { max: u64, used: u64 },
    #[error("{path}: {message}")]
    Setting { path: PathBuf, message: String },
    #[error("{} still has live processes {pids:?} or its cgroup; its disk is left in place", dir.display())]
    DiskBusy { dir: PathBuf, pids: Vec<u32> },
    #[error("server root {} is not where the local provider puts it; left alone", root.display())]
    ForeignRoot { root: PathBuf },
    #[error("provider task failed: {0}")]
    Task(String),
    #[error(
        "deployment {deployment} has no provider `{provider}` (expected `local` or a \
         [providers.{provider}] table in its deployment file)"
    )]
    Unknown {
        provider: String,
        deployment: String,
    },
    #[error("provider `{provider}`: there is no provider type `{kind}` (known: {known})")]
    NoFactory {
        provider: String,
        kind: String,
        known: String,
    },
    #[error("provider `{provider}`: {message}")]
    Settings { provider: String, message: String },
    #[error("the stored handle of a server of provider `{provider}` cannot be read: {message}")]
    Handle { provider: String, message: String },
}

impl ProviderError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProviderError {
        let context = context.into();
        move |source| ProviderError::Io { context, source }
    }
}
