//! Which server holds which SSH slot. A slot (an entry of some provider's `hosts`: an address)
//! holds at most one server of any deployment at a time, whatever provider table lists it, so
//! every SSH provider of a control plane shares one ledger, kept in
//! `<state>/ssh/slots.json` so that a restarted control plane still knows what is taken.

use crate::ProviderError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;

/// The server holding a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Holder {
    pub deployment: String,
    pub server_id: String,
}

/// The ledger: slot → holder, on disk after every change.
pub(crate) struct Slots {
    path: PathBuf,
    held: Mutex<BTreeMap<Ipv4Addr, Holder>>,
}

impl Slots {
    /// The ledger in `path`, empty when there is none yet. A ledger that cannot be read is
    /// an error: taking its slots for free would put two servers on one address.
    pub fn open(path: PathBuf) -> Result<Slots, ProviderError> {
        let held = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| ProviderError::Leases {
                    path: path.clone(),
                    source,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(ProviderError::io(format!("reading {}", path.display()))(e)),
        };
        Ok(Slots {
            path,
            held: Mutex::new(held),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Ipv4Addr, Holder>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The slots of `hosts` a launch of `holder` may try, in order: the one it already holds
    /// (a launch retried after a restart), then the free ones.
    pub fn candidates(&self, hosts: &[Ipv4Addr], holder: &Holder) -> Vec<Ipv4Addr> {
        let held = self.lock();
        let mut out: Vec<Ipv4Addr> = hosts
            .iter()
            .filter(|h| held.get(h) == Some(holder))
            .copied()
            .collect();
        out.extend(hosts.iter().filter(|h| !held.contains_key(h)));
        out
    }

    /// Takes `host` for `holder` unless another server holds it.
    pub fn take(&self, host: Ipv4Addr, holder: &Holder) -> Result<bool, ProviderError> {
        let mut held = self.lock();
        match held.get(&host) {
            Some(h) if h == holder => Ok(true),
            Some(_) => Ok(false),
            None => {
                held.insert(host, holder.clone());
                self.save(&held).inspect_err(|_| {
                    held.remove(&host);
                })?;
                Ok(true)
            }
        }
    }

    /// Frees `host` if `holder` holds it.
    pub fn release(&self, host: Ipv4Addr, holder: &Holder) -> Result<(), ProviderError> {
        let mut held = self.lock();
        if held.get(&host) == Some(holder) {
            held.remove(&host);
            self.save(&held)?;
        }
        Ok(())
    }

    /// The slots servers of `deployment` hold, with the server ids.
    pub fn of_deployment(&self, deployment: &str) -> Vec<(Ipv4Addr, String)> {
        self.lock()
            .iter()
            .filter(|(_, h)| h.deployment == deployment)
            .map(|(a, h)| (*a, h.server_id.clone()))
            .collect()
    }

    /// How many of `hosts` are held.
    pub fn used(&self, hosts: &[Ipv4Addr]) -> u64 {
        let held = self.lock();
        hosts.iter().filter(|h| held.contains_key(h)).count() as u64
    }

    fn save(&self, held: &BTreeMap<Ipv4Addr, Holder>) -> Result<(), ProviderError> {
        let context = || format!("writing {}", self.path.display());
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(ProviderError::io(context()))?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(held).expect("addresses and names serialize");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(ProviderError::io(context()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(dep: &str, id: &str) -> Holder {
        Holder {
            deployment: dep.into(),
            server_id: id.into(),
        }
    }

    #[test]
    fn a_slot_holds_one_server_of_any_deployment_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh/slots.json");
        let hosts: Vec<Ipv4Addr> = ["10.0.0.2", "10.0.0.3"]
            .map(|h| h.parse().unwrap())
            .to_vec();
        let slots = Slots::open(path.clone()).unwrap();
        let (a, b, c) = (
            holder("shop", "app-1"),
            holder("blog", "app-1"),
            holder("shop", "db-1"),
        );
        assert!(slots.take(hosts[0], &a).unwrap());
        assert!(
            !slots.take(hosts[0], &b).unwrap(),
            "another deployment's server"
        );
        assert_eq!(slots.candidates(&hosts, &b), [hosts[1]]);
        assert!(slots.take(hosts[1], &c).unwrap());
        assert!(slots.candidates(&hosts, &b).is_empty());
        assert_eq!(slots.used(&hosts), 2);
        // A restarted control plane reads the same ledger; a retried launch finds its slot.
        let again = Slots::open(path.clone()).unwrap();
        assert_eq!(again.candidates(&hosts, &a), [hosts[0]]);
        assert_eq!(again.of_deployment("shop").len(), 2);
        again.release(hosts[0], &b).unwrap();
        assert_eq!(again.used(&hosts), 2, "only its holder frees a slot");
        again.release(hosts[0], &a).unwrap();
        assert_eq!(again.candidates(&hosts, &b), [hosts[0]]);
        std::fs::write(&path, "{ not json").unwrap();
        let e = Slots::open(path.clone()).err().unwrap().to_string();
        assert!(e.contains("slots.json"), "{e}");
    }
}
