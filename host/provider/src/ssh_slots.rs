//! Which server holds which SSH slot. A slot (an entry of some provider's `hosts`: an address)
//! holds at most one server of any deployment at a time, whatever provider table lists it, so
//! every SSH provider of a control plane shares one ledger, kept in
//! `<state>/ssh/slots.json` so that a restarted control plane still knows what is taken.

use crate::ProviderError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
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
    /// (a launch retried after a restart), then the free ones spread over machines
    /// (`machine_of`: a slot's machine; a slot missing there is a machine of its own): first
    /// the free slots of machines holding the fewest servers, a machine's second free slot
    /// only after every other machine's first, and so on; in list order among equals.
    pub fn candidates(
        &self,
        hosts: &[Ipv4Addr],
        holder: &Holder,
        machine_of: &HashMap<Ipv4Addr, String>,
    ) -> Vec<Ipv4Addr> {
        let held = self.lock();
        let machine = |h: &Ipv4Addr| machine_of.get(h).cloned().unwrap_or_else(|| h.to_string());
        let mut load: HashMap<String, usize> = HashMap::new();
        for h in hosts.iter().filter(|h| held.contains_key(h)) {
            *load.entry(machine(h)).or_default() += 1;
        }
        let mut free: Vec<(usize, usize, Ipv4Addr)> = Vec::new();
        let mut rank: HashMap<String, usize> = HashMap::new();
        for (i, h) in hosts.iter().enumerate() {
            if held.contains_key(h) {
                continue;
            }
            let m = machine(h);
            let r = rank.entry(m.clone()).or_default();
            free.push((load.get(&m).copied().unwrap_or(0) + *r, i, *h));
            *r += 1;
        }
        free.sort_unstable();
        let own = hosts
            .iter()
            .filter(|h| held.get(h) == Some(holder))
            .copied();
        own.chain(free.into_iter().map(|(_, _, h)| h)).collect()
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

    /// Three machines with two addresses each: servers land one per machine before any
    /// machine gets a second, the least loaded machine first.
    #[test]
    fn free_slots_spread_over_machines() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::open(dir.path().join("slots.json")).unwrap();
        let hosts: Vec<Ipv4Addr> = (2..8).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        let machines: HashMap<Ipv4Addr, String> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (*h, format!("m{}", i / 2)))
            .collect();
        let order = |who: &Holder| slots.candidates(&hosts, who, &machines);
        let first = order(&holder("shop", "app-1"));
        assert_eq!(first[..3], [hosts[0], hosts[2], hosts[4]]);
        assert!(slots.take(hosts[0], &holder("shop", "app-1")).unwrap());
        assert!(slots.take(hosts[4], &holder("shop", "db-1")).unwrap());
        // Machine 1 holds nothing: its first slot comes first, then the others' second ones.
        assert_eq!(
            order(&holder("shop", "lb-1")),
            [hosts[2], hosts[1], hosts[3], hosts[5]]
        );
        // Without a map every slot is its own machine: list order.
        let plain = slots.candidates(&hosts, &holder("shop", "lb-1"), &HashMap::new());
        assert_eq!(plain, [hosts[1], hosts[2], hosts[3], hosts[5]]);
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
        assert_eq!(slots.candidates(&hosts, &b, &HashMap::new()), [hosts[1]]);
        assert!(slots.take(hosts[1], &c).unwrap());
        assert!(slots.candidates(&hosts, &b, &HashMap::new()).is_empty());
        assert_eq!(slots.used(&hosts), 2);
        // A restarted control plane reads the same ledger; a retried launch finds its slot.
        let again = Slots::open(path.clone()).unwrap();
        assert_eq!(again.candidates(&hosts, &a, &HashMap::new()), [hosts[0]]);
        assert_eq!(again.of_deployment("shop").len(), 2);
        again.release(hosts[0], &b).unwrap();
        assert_eq!(again.used(&hosts), 2, "only its holder frees a slot");
        again.release(hosts[0], &a).unwrap();
        assert_eq!(again.candidates(&hosts, &b, &HashMap::new()), [hosts[0]]);
        std::fs::write(&path, "{ not json").unwrap();
        let e = Slots::open(path.clone()).err().unwrap().to_string();
        assert!(e.contains("slots.json"), "{e}");
    }
}
