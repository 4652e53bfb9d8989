//! Cloud providers: where servers come from. The engine holds a [`ProviderRegistry`] and asks
//! the provider a tier names (or the one in a server's stored [`ProviderHandle`]); the built-in
//! [`LocalProvider`] makes each server an agent process on this machine with its own root
//! directory and loopback address; the SSH provider ([`SshFactory`], `type = "ssh"`) makes it
//! an agent on a server of the operator's, reached over the system `ssh`.

mod agent_program;
mod blocking;
mod capacity;
mod cgroup;
mod disk;
mod disk_removal;
mod end_disk;
mod error;
mod handle;
mod leases;
mod local;
mod local_handle;
mod proc_scan;
mod process;
mod registry;
mod settings;
mod spawn;
mod spread_dir;
mod ssh;
mod ssh_command;
mod ssh_handle;
mod ssh_scripts;
mod ssh_settings;
mod ssh_slots;
mod uid_leftovers;

pub use agent_program::{AGENT_BINARY, AgentProgram};
pub use capacity::{ADDRESS_RANGE, AGENT_MEMORY, Capacity, SETTING_FILE, thousands};
pub use cgroup::agent_cgroup;
pub use disk::KEPT_DISKS;
pub use disk_removal::{REMOVING, finish as finish_disk_removals, resume as resume_disk_removals};
pub use end_disk::check_end_disk;
pub use error::ProviderError;
pub use handle::{Presence, ProviderHandle};
pub use leases::{ADDRESS_COUNT, Lease, Leases, PROGRAM_UID_BASE, program_uid, release_claims_of};
pub use local::LocalProvider;
pub use local_handle::LocalHandle;
pub use registry::{LOCAL, ProviderFactory, ProviderRegistry, same};
pub use settings::{ProviderSettings, SettingValue};
pub use spread_dir::{create_spreading_dir, spreads_subdirectories};
pub use ssh::{SshFactory, SshProvider};
pub use ssh_command::{KeyReader, quote};
pub use ssh_handle::SshHandle;
pub use ssh_settings::{SSH, SshSettings};

use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

/// A boxed, sendable future; the same type as `futures::future::BoxFuture`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the engine asks of a provider to bring up one server.
#[derive(Clone)]
pub struct LaunchRequest {
    pub deployment: String,
    pub server_id: String,
    pub server_name: String,
    /// Where the agent dials the dispatcher: `host:port`, the host a name or an IP address.
    pub control_addr: stratus_protocol::DialAddress,
    /// The fingerprint of the control plane's certificate, which the agent pins.
    pub fingerprint: stratus_protocol::Fingerprint,
    /// The agent's credential; a secret, handed only to that server.
    pub credential: String,
    /// Extra arguments appended to the agent's command line.
    pub agent_args: Vec<String>,
}

impl LaunchRequest {
    /// What the server's agent starts from (`--bootstrap FILE`), once the provider knows the
    /// server's `address`; it holds the credential, so it goes only to that server.
    pub fn bootstrap(&self, address: impl Into<String>) -> stratus_protocol::Bootstrap {
        stratus_protocol::Bootstrap {
            control: self.control_addr.to_string(),
            fingerprint: self.fingerprint,
            deployment: self.deployment.clone(),
            server_id: self.server_id.clone(),
            address: address.into(),
            credential: self.credential.clone(),
        }
    }
}

impl std::fmt::Debug for LaunchRequest {
    // Requests get logged; the credential must not be.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchRequest")
            .field("deployment", &self.deployment)
            .field("server_id", &self.server_id)
            .field("server_name", &self.server_name)
            .field("control_addr", &self.control_addr)
            .field("fingerprint", &self.fingerprint)
            .field("credential", &"<redacted>")
            .field("agent_args", &self.agent_args)
            .finish()
    }
}

/// A server the provider brought up; persisted by the engine so that a restarted control
/// plane can still check and terminate it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchedServer {
    pub server_id: String,
    pub address: Ipv4Addr,
    /// What the provider needs to find the server again; opaque to everyone else.
    pub handle: ProviderHandle,
}

/// A source of servers.
pub trait CloudProvider: Send + Sync {
    /// Brings up a server whose agent will dial `req.control_addr`.
    fn launch(&self, req: LaunchRequest) -> BoxFuture<'_, Result<LaunchedServer, ProviderError>>;

    /// Stops the server: politely, then after `grace` by force. Terminating a server that
    /// is already gone succeeds.
    fn terminate<'a>(
        &'a self,
        server: &'a LaunchedServer,
        grace: Duration,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;

    /// Whether the server still exists. A provider it cannot reach answers `Unknown`, never
    /// `Gone`. Auto-recovery asks this of every server on each pass: keep it cheap.
    fn describe<'a>(&'a self, handle: &'a ProviderHandle) -> BoxFuture<'a, Presence>;

    /// The server's filesystem root as its agent sees it (`--root`), for the paths hooks get.
    fn root_of(&self, handle: &ProviderHandle) -> Result<String, ProviderError>;

    /// The handle of a server whose agent reconnected as process `agent_pid` (started again
    /// by other means, a reboot): `Some` when the provider must now watch that process.
    fn reattached(&self, handle: &ProviderHandle, agent_pid: u32) -> Option<ProviderHandle> {
        let _ = (handle, agent_pid);
        None
    }

    /// How many servers the provider can hold (`max-servers`) and how many it holds now.
    fn capacity(&self) -> Result<Capacity, ProviderError>;

    /// Ends the disk of a terminated server of `deployment`: removes it, or with `keep` moves it
    /// aside under that label and returns where it is. Refused while any of its processes live.
    fn end_disk<'a>(
        &'a self,
        deployment: &'a str,
        server: &'a LaunchedServer,
        keep: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<PathBuf>, ProviderError>>;

    /// Ends every server of `deployment` the provider holds that is not in `known` (a launch
    /// stopped by terminate may have started one it never got to record), once no launch of
    /// the deployment is in flight; returns their ids. Providers that cannot tell return none.
    fn end_unrecorded<'a>(
        &'a self,
        deployment: &'a str,
        known: &'a [String],
    ) -> BoxFuture<'a, Vec<String>> {
        let _ = (deployment, known);
        Box::pin(async { Vec::new() })
    }
}
