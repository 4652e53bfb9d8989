//! Frames exchanged on a control-plane connection.

use serde::{Deserialize, Serialize};
use stratus_model::context::{CmReport, HealthReport, HookCall};

/// The first frame a peer sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "kebab-case")]
pub enum Hello {
    /// An agent on a server, authenticated by the credential issued for that server at launch.
    Agent {
        deployment: String,
        server_id: String,
        credential: String,
        pid: u32,
    },
    /// An operator's CLI, authenticated by the control token in the state directory.
    Operator { token: String },
}

/// The control plane's answer to `Hello`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Welcome {
    Welcome,
    Refused { reason: String },
}

/// Where the agent fetches packages and files from (cloud files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageSource {
    /// Root directory of the local cloud-files store.
    pub store: String,
    pub name: String,
    pub digest: String,
    /// Number of files, checked on arrival with the digest.
    pub files: usize,
}

/// What the control plane asks an agent to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum AgentRequest {
    /// Download a package (a service into `mnt/services/a<id>`, a CM adapter or its input
    /// files into `agent/cm/<unit>/…`) to `dest`, relative to the server root; the directory
    /// is replaced by the package's content.
    InstallPackage {
        dest: String,
        package: PackageSource,
    },
    /// Download one object (a data source image) to a path relative to the server root.
    FetchFile {
        store: String,
        key: String,
        dest: String,
    },
    /// Write a file (CM credentials) relative to the server root, with a mode, for this server only.
    WriteFile {
        dest: String,
        contents: String,
        mode: u32,
    },
    /// Remove files relative to the server root (credentials after a CM run).
    RemoveFiles {
        paths: Vec<String>,
    },
    /// Run one hook of a package already installed (or, for CM adapters, fetched) on the server.
    Hook {
        /// Stable id of this step: a repeated id returns the first run's report.
        call_id: String,
        /// Package directory relative to the server root.
        package_dir: String,
        /// The operator's narrowing of the plugin's capabilities (TOML table as JSON).
        capabilities: Option<serde_json::Value>,
        call: Box<HookCall>,
    },
    /// Stop every supervised process and exit.
    Shutdown {
        grace_ms: u64,
    },
    Ping,
}

/// A hook's result as it travels back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HookReport {
    pub outcome: HookResult,
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
    pub logs: Vec<LogLine>,
    pub denials: Vec<String>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogLine {
    pub level: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum HookResult {
    Done,
    Health {
        report: HealthReport,
    },
    Cm {
        report: CmReport,
    },
    /// `kind` tells apart hook-error, trap, timeout, out-of-memory, capability-denied, …
    Failed {
        kind: String,
        message: String,
        retryable: bool,
    },
}

/// The agent's answer to one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum AgentReply {
    Done,
    Hook { report: HookReport },
    Error { message: String },
}

/// What an operator asks the control plane.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum OperatorRequest {
    /// Launch the deployment file at this absolute path.
    Launch {
        file: String,
    },
    Terminate {
        name: String,
    },
    /// Stop the control plane (deployments keep their state and resume at next start).
    Shutdown,
    Ping,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum OperatorReply {
    Accepted { deployment: String },
    Done,
    Pong { pid: u32 },
    Error { message: String },
}

/// A numbered frame; the answer carries the same id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub id: u64,
    pub body: T,
}
