//! The layout of a state directory, in one place.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct StatePaths {
    pub root: PathBuf,
}

impl StatePaths {
    pub fn new(root: impl Into<PathBuf>) -> StatePaths {
        StatePaths { root: root.into() }
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("stratus.db")
    }
    pub fn keys(&self) -> PathBuf {
        self.root.join("keys")
    }
    pub fn cloud_files(&self) -> PathBuf {
        self.root.join("cloud-files")
    }
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// Where the running control plane publishes its pid and port.
    pub fn control_file(&self) -> PathBuf {
        self.root.join("control.json")
    }
    /// What `control.json` says, if it is there and whole.
    pub fn control_info(&self) -> Option<ControlInfo> {
        let text = std::fs::read_to_string(self.control_file()).ok()?;
        serde_json::from_str(&text).ok()
    }
    pub fn control_lock(&self) -> PathBuf {
        self.root.join("control.lock")
    }
    /// Standard output and error of a control plane started in the background.
    pub fn control_out(&self) -> PathBuf {
        self.logs().join("control.out")
    }
    pub fn servers(&self) -> PathBuf {
        self.root.join("servers")
    }
    pub fn path(&self) -> &Path {
        &self.root
    }
}

/// Names of the secrets the control plane itself keeps in key management.
pub const CONTROL_TOKEN: &str = "control-token";
pub const CACHE_KEY: &str = "plugin-cache-key";
/// The HTTP API's bearer token (`<state>/keys/operator-token`, hex, mode 0600).
pub const OPERATOR_TOKEN: &str = "operator-token";

/// What `control.json` holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ControlInfo {
    pub pid: u32,
    pub port: u16,
    /// Where a client on this machine dials the control port (`host:port`); control planes
    /// older than the field listened on 127.0.0.1 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The fingerprint of the control port's certificate, which clients pin; `None`: the port
    /// speaks plaintext (loopback only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<stratus_protocol::Fingerprint>,
    /// The HTTP API's `address:port`, when it serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
}
