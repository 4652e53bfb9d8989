//! Network policy: a plugin reaches only the `host:port` pairs it was granted; every refusal
//! is recorded so a failed call can say what was denied.

use crate::capabilities::NetworkGrant;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use wasmtime_wasi::sockets::SocketAddrUse;

/// Capability refusals of one call, shared between the host functions and WASI's socket check.
pub(crate) type Denials = Arc<Mutex<Vec<String>>>;

pub(crate) fn record(denials: &Denials, what: String) {
    let mut denials = denials.lock().unwrap();
    // A plugin retrying a refused call in a loop must not flood the agent log.
    if denials.len() >= stratus_protocol::bounds::MAX_LOG_RECORDS {
        return;
    }
    tracing::warn!(denied = %what, "plugin capability denied");
    denials.push(what);
}

#[derive(Debug, Clone)]
pub(crate) struct NetPolicy {
    pub grants: Vec<NetworkGrant>,
    /// This server's address (for `self` grants), if it parses as an IP.
    pub server: Option<IpAddr>,
}

impl NetPolicy {
    pub fn allows(&self, addr: SocketAddr) -> bool {
        let ip = canonical(addr.ip());
        self.grants
            .iter()
            .any(|g| g.allows(ip, addr.port(), self.server))
    }

    /// Resolves a `wait-for-port` address (an IP literal, `localhost` or `self`).
    pub fn resolve(&self, address: &str) -> Option<IpAddr> {
        match address {
            "self" => self.server,
            "localhost" => Some(IpAddr::from([127, 0, 0, 1])),
            a => a.trim_start_matches('[').trim_end_matches(']').parse().ok(),
        }
    }
}

/// IPv4-mapped IPv6 addresses are compared as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

type CheckFuture = Pin<Box<dyn Future<Output = bool> + Send + Sync>>;

/// The `socket_addr_check` for WASI: connects only to granted addresses; the implicit
/// wildcard bind that precedes a connect is allowed, listening and explicit binds are not.
pub(crate) fn socket_check(
    policy: Arc<NetPolicy>,
    denials: Denials,
) -> impl Fn(SocketAddr, SocketAddrUse) -> CheckFuture + Send + Sync + 'static {
    move |addr, use_| {
        let (allowed, verb) = match use_ {
            SocketAddrUse::TcpBind => (addr.ip().is_unspecified() && addr.port() == 0, "bind to"),
            SocketAddrUse::TcpConnect => (policy.allows(addr), "connect to"),
            SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept => (false, "listen on"),
            _ => (false, "UDP use of"),
        };
        if !allowed {
            record(&denials, format!("network {verb} {addr} is not granted"));
        }
        Box::pin(std::future::ready(allowed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(grants: &[&str], server: Option<&str>) -> NetPolicy {
        NetPolicy {
            grants: grants
                .iter()
                .map(|g| NetworkGrant::try_from(g.to_string()).unwrap())
                .collect(),
            server: server.map(|s| s.parse().unwrap()),
        }
    }

    #[test]
    fn only_granted_pairs_connect() {
        let p = policy(&["127.0.0.1:3306", "self:*"], Some("127.0.0.5"));
        assert!(p.allows("127.0.0.1:3306".parse().unwrap()));
        assert!(!p.allows("127.0.0.1:22".parse().unwrap()));
        assert!(p.allows("127.0.0.5:22".parse().unwrap()));
        assert!(p.allows("[::ffff:127.0.0.1]:3306".parse().unwrap()));
        assert!(!policy(&["self:*"], None).allows("127.0.0.5:1".parse().unwrap()));
    }

    #[tokio::test]
    async fn refusals_are_recorded() {
        let denials = Denials::default();
        let check = socket_check(Arc::new(policy(&["127.0.0.1:80"], None)), denials.clone());
        assert!(check("0.0.0.0:0".parse().unwrap(), SocketAddrUse::TcpBind).await);
        assert!(check("127.0.0.1:80".parse().unwrap(), SocketAddrUse::TcpConnect).await);
        assert!(!check("127.0.0.1:22".parse().unwrap(), SocketAddrUse::TcpConnect).await);
        assert!(!check("127.0.0.1:80".parse().unwrap(), SocketAddrUse::TcpListen).await);
        let d = denials.lock().unwrap().clone();
        assert_eq!(
            d,
            vec![
                "network connect to 127.0.0.1:22 is not granted",
                "network listen on 127.0.0.1:80 is not granted"
            ]
        );
    }
}
