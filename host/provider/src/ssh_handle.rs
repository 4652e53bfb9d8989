//! What the SSH provider keeps in a server's handle: where the server is (host, port, user, its
//! directory there) and which process its agent is. A pid alone could be reused by another
//! process after the agent ends; with the host's boot id and the process's start time (clock
//! ticks since boot, `/proc/<pid>/stat` field 22) it names one process only.

use crate::{LaunchedServer, ProviderError, ProviderHandle};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// The `data` of an SSH server's [`ProviderHandle`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshHandle {
    /// The slot: the server's address and the host SSH reaches.
    pub host: Ipv4Addr,
    pub port: u16,
    pub user: String,
    /// The server's directory on the host, which is the agent's `--root`.
    pub dir: String,
    /// The agent's pid on the host (also its session id: it runs under `setsid`).
    pub pid: u32,
    /// The agent's start time, in clock ticks since the host booted.
    pub start_time: u64,
    /// The host's `/proc/sys/kernel/random/boot_id` when the agent started.
    pub boot_id: String,
}

impl SshHandle {
    /// The handle of a server launched under the registry name `provider`.
    pub fn to_handle(&self, provider: &str) -> ProviderHandle {
        ProviderHandle {
            provider: provider.to_string(),
            data: serde_json::to_value(self).expect("strings and numbers serialize"),
        }
    }

    /// The SSH data of `handle`, or an error naming its provider.
    pub fn of(handle: &ProviderHandle) -> Result<SshHandle, ProviderError> {
        let h: SshHandle = handle.decode()?;
        h.check().map_err(|message| ProviderError::Handle {
            provider: handle.provider.clone(),
            message,
        })?;
        Ok(h)
    }

    pub fn of_server(server: &LaunchedServer) -> Result<SshHandle, ProviderError> {
        Self::of(&server.handle)
    }

    /// The handle's words go into commands run on the host (quoted, but a row edited in the
    /// store must still not name a directory outside a provider's tree or a process of init).
    fn check(&self) -> Result<(), String> {
        let dir_ok = self.dir.starts_with('/')
            && self.dir.split('/').skip(1).all(|c| {
                !c.is_empty()
                    && c != "."
                    && c != ".."
                    && c.chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
            })
            && self.dir.split('/').rev().nth(2) == Some("servers");
        let boot_ok = !self.boot_id.is_empty()
            && self.boot_id.len() <= 64
            && self
                .boot_id
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == '-');
        if !dir_ok {
            return Err(format!("{:?} is not a server directory", self.dir));
        }
        if self.pid <= 1 || !boot_ok {
            return Err("its agent's pid or boot id is not one a host gives".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle() -> SshHandle {
        SshHandle {
            host: "10.231.7.2".parse().unwrap(),
            port: 22,
            user: "root".into(),
            dir: "/var/lib/stratus-agent/servers/shop/app-1".into(),
            pid: 4242,
            start_time: 123_456,
            boot_id: "0b2c1e7e-5d3a-4c4f-9a53-1f0c2b7d8e9f".into(),
        }
    }

    #[test]
    fn a_handle_round_trips_through_its_json() {
        let h = handle();
        let stored = h.to_handle("lab");
        assert_eq!(stored.provider, "lab");
        assert_eq!(stored.data["host"], "10.231.7.2");
        assert_eq!(stored.data["start_time"], 123_456);
        let text = serde_json::to_string(&stored).unwrap();
        let back: ProviderHandle = serde_json::from_str(&text).unwrap();
        assert_eq!(SshHandle::of(&back).unwrap(), h);
    }

    #[test]
    fn edited_or_foreign_handles_are_refused_naming_the_provider() {
        let mut bad = Vec::new();
        for dir in [
            "/etc",
            "relative/servers/a/b",
            "/x/servers/../b",
            "/x/servers/a/$(id)",
        ] {
            let mut h = handle();
            h.dir = dir.into();
            bad.push(serde_json::to_value(h).unwrap());
        }
        let mut h = handle();
        h.pid = 1;
        bad.push(serde_json::to_value(h).unwrap());
        let mut h = handle();
        h.boot_id = "'; reboot".into();
        bad.push(serde_json::to_value(h).unwrap());
        bad.push(serde_json::json!({ "root": "/s/servers/d/app-1/root", "pid": 42 }));
        for data in bad {
            let stored = ProviderHandle {
                provider: "lab".into(),
                data: data.clone(),
            };
            let e = SshHandle::of(&stored).unwrap_err().to_string();
            assert!(e.contains("`lab`"), "{data}: {e}");
        }
    }
}
