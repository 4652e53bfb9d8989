//! A server's address when its provider could not give it (a cloud's API answers before the
//! instance has booted, or never says): its agent takes the local address of its control
//! connection and reports it in its hello, and at the launch's handshake the engine decides
//! whether to record it (store, status, the facts hooks see, the load balancer's nodes).
//!
//! The agent's word alone is never enough: a claim is recorded only when the connection
//! really comes from that address, or when the provider gave that same address (an agent
//! behind NAT), and never when another server of the deployment holds it. A checked claim
//! wins over the provider's address: it is where the control plane sees the server, while a
//! cloud's API may name an address that is not reachable from here.

use crate::agents::ReportedAddress;
use crate::engine::{Engine, EngineError};
use crate::facts::Server;
use crate::logs::{Component, Subject};
use std::net::IpAddr;
use stratus_model::state::AgentState;

/// What becomes of a server's address at its agent's handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The address recorded at launch stands (the agent reported none, or the same).
    Keep,
    /// The address the agent reported, which its control connection comes from, is recorded.
    Learn(IpAddr),
    /// The agent's claim is refused (why); the address recorded at launch stands.
    Refused(String),
    /// No address anyone vouches for: the server cannot be used (why).
    Unknown(String),
}

/// The address a provider recorded, unless it gave none (stored as `0.0.0.0`).
pub fn recorded(address: &str) -> Option<IpAddr> {
    address
        .parse::<IpAddr>()
        .ok()
        .map(|a| a.to_canonical())
        .filter(|a| !a.is_unspecified())
}

/// Decides a server's address from what its provider recorded, what its agent reported,
/// and the addresses the deployment's other live servers hold (`taken`, with their ids).
pub fn decide(
    recorded: Option<IpAddr>,
    reported: Option<ReportedAddress>,
    taken: &[(String, IpAddr)],
) -> Decision {
    let Some(r) = reported else {
        return match recorded {
            Some(_) => Decision::Keep,
            None => {
                Decision::Unknown("its provider gave no address and its agent reported none".into())
            }
        };
    };
    let claimed = r.claimed.to_canonical();
    let refuse = |why: String| match recorded {
        Some(_) => Decision::Refused(why),
        None => Decision::Unknown(why),
    };
    if claimed.is_unspecified() || claimed.is_multicast() || claimed == IpAddr::from([255; 4]) {
        return refuse(format!(
            "its agent reported {claimed}, which is no server's address"
        ));
    }
    let from_connection = r.peer.map(|p| p.to_canonical()) == Some(claimed);
    // Behind a NAT the connection comes from elsewhere; the provider's word then vouches.
    if recorded == Some(claimed) {
        return Decision::Keep;
    }
    if !from_connection {
        let from = r
            .peer
            .map_or("an unknown address".into(), |p| p.to_string());
        return refuse(format!(
            "its agent reported {claimed}, but its connection comes from {from} and its \
             provider did not give that address"
        ));
    }
    if let Some((other, _)) = taken.iter().find(|(_, a)| a.to_canonical() == claimed) {
        return refuse(format!(
            "its agent reported {claimed}, which is server {other}'s address"
        ));
    }
    Decision::Learn(claimed)
}

impl Engine {
    /// After the handshake of `server`: records the address its agent reported when checked
    /// (see [`decide`]); fails when the server ends up with no address at all.
    pub(crate) async fn learn_address(
        &self,
        dep: &str,
        server: Server,
    ) -> Result<Server, EngineError> {
        let id = server.id.to_string();
        let reported = self.parts.agents.reported_address(dep, &id).await;
        let recorded = recorded(&server.address);
        if reported.is_none() && recorded.is_some() {
            return Ok(server);
        }
        let taken = self.taken_addresses(dep, &id)?;
        let subject = Subject {
            deployment: Some(dep),
            tier: Some(server.tier.as_str()),
            server: Some(&id),
            ..Subject::default()
        };
        let logs = &self.parts.logs;
        match decide(recorded, reported, &taken) {
            Decision::Keep => Ok(server),
            Decision::Learn(address) => {
                let address = address.to_string();
                self.parts.store.set_server_address(dep, &id, &address)?;
                let message = format!(
                    "server {} is at {address}, as its agent reported (its control \
                     connection comes from there)",
                    server.name
                );
                logs.info(Component::MonitorServer, subject, &message);
                Ok(Server { address, ..server })
            }
            Decision::Refused(why) => {
                let message = format!(
                    "address of server {} not changed: {why}; it stays {}",
                    server.name, server.address
                );
                logs.warn(Component::MonitorServer, subject, &message);
                Ok(server)
            }
            Decision::Unknown(why) => Err(EngineError::Provider {
                step: format!("server/{id}/address"),
                message: format!("server {} has no address: {why}", server.name),
            }),
        }
    }

    /// The addresses the other servers of `dep` that are not terminated hold.
    fn taken_addresses(&self, dep: &str, id: &str) -> Result<Vec<(String, IpAddr)>, EngineError> {
        Ok(self
            .parts
            .store
            .servers::<AgentState>(dep)?
            .into_iter()
            .filter(|r| r.id != id && r.agent_state != AgentState::Terminated)
            .filter_map(|r| recorded(&r.address).map(|a| (r.id, a)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn said(claimed: &str, peer: &str) -> Option<ReportedAddress> {
        Some(ReportedAddress {
            claimed: ip(claimed),
            peer: Some(ip(peer)),
        })
    }

    #[test]
    fn a_claim_its_connection_comes_from_is_learned_and_wins_over_the_providers() {
        let learned = Decision::Learn(ip("10.0.0.5"));
        assert_eq!(decide(None, said("10.0.0.5", "10.0.0.5"), &[]), learned);
        assert_eq!(
            decide(Some(ip("172.31.9.9")), said("10.0.0.5", "10.0.0.5"), &[]),
            learned
        );
        // An IPv4 peer seen on a dual-stack socket is the same address.
        assert_eq!(
            decide(None, said("10.0.0.5", "::ffff:10.0.0.5"), &[]),
            learned
        );
        // The provider's address, confirmed, just stands.
        assert_eq!(
            decide(Some(ip("10.0.0.5")), said("10.0.0.5", "10.0.0.5"), &[]),
            Decision::Keep
        );
    }

    #[test]
    fn behind_nat_only_the_providers_own_address_is_believed() {
        assert_eq!(
            decide(Some(ip("10.0.0.5")), said("10.0.0.5", "203.0.113.7"), &[]),
            Decision::Keep
        );
        let d = decide(None, said("10.0.0.5", "203.0.113.7"), &[]);
        let Decision::Unknown(why) = d else {
            panic!("{d:?}")
        };
        assert!(why.contains("comes from 203.0.113.7"), "{why}");
        let d = decide(Some(ip("10.0.0.6")), said("10.0.0.5", "203.0.113.7"), &[]);
        assert!(matches!(d, Decision::Refused(_)), "{d:?}");
    }

    #[test]
    fn no_server_takes_another_servers_address() {
        let taken = [("app-1".to_string(), ip("10.0.0.5"))];
        let d = decide(None, said("10.0.0.5", "10.0.0.5"), &taken);
        let Decision::Unknown(why) = d else {
            panic!("{d:?}")
        };
        assert!(why.contains("server app-1's address"), "{why}");
        let d = decide(Some(ip("10.0.0.9")), said("10.0.0.5", "10.0.0.5"), &taken);
        assert!(matches!(d, Decision::Refused(_)), "{d:?}");
    }

    #[test]
    fn nonsense_claims_and_silence_leave_no_address() {
        for bad in ["0.0.0.0", "224.0.0.1", "255.255.255.255", "::"] {
            let d = decide(None, said(bad, bad), &[]);
            assert!(matches!(d, Decision::Unknown(_)), "{bad}: {d:?}");
        }
        assert!(matches!(decide(None, None, &[]), Decision::Unknown(_)));
        assert_eq!(decide(Some(ip("127.1.0.2")), None, &[]), Decision::Keep);
        assert_eq!(recorded("0.0.0.0"), None);
        assert_eq!(recorded("127.1.0.2"), Some(ip("127.1.0.2")));
    }
}
