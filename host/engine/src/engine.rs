//! [`Engine`]: the collaborators a launch needs and the error every step can end with.

use crate::agents::{AgentLink, LinkError};
use crate::logs::Logs;
use std::path::PathBuf;
use std::sync::Arc;
use stratus_cloud::{CloudFiles, KeyStore};
use stratus_provider::ProviderRegistry;
use stratus_store::Store;

/// Everything the engine works with; the control plane builds it once.
pub struct EngineParts {
    pub state_dir: PathBuf,
    pub store: Store,
    /// Providers by name: `local`, and those the deployments declare.
    pub providers: Arc<ProviderRegistry>,
    pub agents: Arc<dyn AgentLink>,
    pub keys: KeyStore,
    pub files: CloudFiles,
    /// The local directory behind `files` (for a remote store: where the control plane keeps
    /// copies of packages to compile them). Agents never read it: they use the file endpoint.
    pub cloud_files_dir: PathBuf,
    pub logs: Logs,
    /// Where agents dial in (`--advertise`: a name or an IP address, and a port).
    pub control_addr: stratus_protocol::DialAddress,
    /// The fingerprint of the control port's certificate, which agents pin.
    pub control_fingerprint: stratus_protocol::Fingerprint,
    /// Extra arguments for every agent (cache directory, cache key file).
    pub agent_args: Vec<String>,
    /// Compiles packages into the agents' code cache at upload; `None`: each agent compiles.
    pub precompiler: Option<Arc<dyn crate::compile::Precompiler>>,
}

/// Cheap to clone; every deployment task holds one.
#[derive(Clone)]
pub struct Engine {
    pub(crate) parts: Arc<EngineParts>,
    /// When each server's processes were first seen ended (see `recovery.rs`).
    pub(crate) ended_seen: crate::recovery::EndedSeen,
    /// How many agents were found LOST since the start (see `reconcile.rs`'s `Covered`).
    pub(crate) losses: crate::reconcile::Losses,
}

/// Why a step (and so the launch) failed. Messages name the step, server, hook and error.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("step {step} on server {server}: hook {hook} failed ({kind}): {message}")]
    Hook {
        step: String,
        server: String,
        hook: String,
        kind: String,
        message: String,
    },
    #[error("step {step} on server {server}: {message}")]
    Agent {
        step: String,
        server: String,
        message: String,
    },
    #[error("step {step}: {source}")]
    Link {
        step: String,
        #[source]
        source: LinkError,
    },
    #[error("step {step}: cloud provider: {message}")]
    Provider { step: String, message: String },
    #[error("journal: {0}")]
    Store(#[from] stratus_store::StoreError),
    #[error(transparent)]
    Target(#[from] crate::targets::TargetError),
    #[error("deployment {deployment}: its state kept changing under this task")]
    Contended { deployment: String },
    #[error("{0}")]
    Other(String),
}

impl Engine {
    pub fn new(parts: EngineParts) -> Engine {
        Engine {
            parts: Arc::new(parts),
            ended_seen: Default::default(),
            losses: Default::default(),
        }
    }

    pub fn parts(&self) -> &EngineParts {
        &self.parts
    }
}
