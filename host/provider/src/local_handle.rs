//! What the local provider keeps in a server's handle: its root directory and its agent's pid.

use crate::{LaunchedServer, ProviderError, ProviderHandle};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The `data` of a local server's [`ProviderHandle`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalHandle {
    /// The server's filesystem root (`/` of the "VM").
    pub root: PathBuf,
    /// The agent's pid, which is also its process group id.
    pub pid: u32,
}

impl LocalHandle {
    /// The handle of a server launched under the registry name `provider`.
    pub fn to_handle(&self, provider: &str) -> ProviderHandle {
        ProviderHandle {
            provider: provider.to_string(),
            data: serde_json::to_value(self).expect("a path and a number serialize"),
        }
    }

    /// The local data of `handle`, or an error naming its provider.
    pub fn of(handle: &ProviderHandle) -> Result<LocalHandle, ProviderError> {
        handle.decode()
    }

    /// The local data of a launched server's handle.
    pub fn of_server(server: &LaunchedServer) -> Result<LocalHandle, ProviderError> {
        Self::of(&server.handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_pid_round_trip_and_strangers_are_refused() {
        let h = LocalHandle {
            root: "/s/servers/d/app-1/root".into(),
            pid: 4242,
        };
        let handle = h.to_handle("here");
        assert_eq!(handle.provider, "here");
        assert_eq!(
            handle.data,
            serde_json::json!({ "root": "/s/servers/d/app-1/root", "pid": 4242 })
        );
        assert_eq!(LocalHandle::of(&handle).unwrap(), h);
        let other = ProviderHandle {
            provider: "edge".into(),
            data: serde_json::json!({ "instance": "i-1" }),
        };
        assert!(LocalHandle::of(&other).is_err());
    }
}
