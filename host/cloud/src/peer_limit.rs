//! How many connections one peer may hold open before proving who it is.
//!
//! A port that anyone may reach gives every connection a place while it handshakes; a
//! stranger opening connections and never finishing them would otherwise take every place
//! (and the queue behind them), so that agents wait past their own time limits. A
//! [`PeerLimit`] counts unproven connections per peer (an IPv4 address, or an IPv6 /64, which
//! one host usually holds whole) and turns away one more at once. Connections from the
//! machine itself (the peer's address is the one it reached us at: every agent of the local
//! provider, which dials 127.0.0.1) are not counted: a local process shares that address with
//! the local agents, and can do more harm on the machine than fill a queue anyway.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

/// Where connections are counted: one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    V4(std::net::Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6Net(u64),
}

impl Peer {
    /// The peer an address belongs to (an IPv4-mapped IPv6 address is its IPv4 peer).
    pub fn of(ip: IpAddr) -> Peer {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Peer::V4(v4),
            IpAddr::V6(v6) => Peer::V6Net((v6.to_bits() >> 64) as u64),
        }
    }
}

/// Unproven connections per peer, at most `max` each.
#[derive(Debug, Clone)]
pub struct PeerLimit {
    max: usize,
    open: Arc<Mutex<HashMap<Peer, usize>>>,
}

/// One unproven connection, counted against its peer until [`PeerTicket::proven`] or drop.
#[derive(Debug)]
pub struct PeerTicket {
    limit: PeerLimit,
    peer: Option<Peer>,
}

impl PeerLimit {
    pub fn new(max: usize) -> PeerLimit {
        PeerLimit {
            max,
            open: Arc::default(),
        }
    }

    /// A ticket for a connection from `peer` to `local`, or `None` when that peer already
    /// holds `max` unproven connections.
    pub fn admit(&self, peer: SocketAddr, local: SocketAddr) -> Option<PeerTicket> {
        if peer.ip().to_canonical() == local.ip().to_canonical() {
            return Some(PeerTicket {
                limit: self.clone(),
                peer: None,
            });
        }
        let key = Peer::of(peer.ip());
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(PeerTicket {
            limit: self.clone(),
            peer: Some(key),
        })
    }

    /// Unproven connections `peer` holds now.
    pub fn open(&self, peer: Peer) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&peer).copied().unwrap_or(0)
    }

    fn release(&self, peer: Peer) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&peer) {
            *count -= 1;
            if *count == 0 {
                open.remove(&peer);
            }
        }
    }
}

impl PeerTicket {
    /// The connection proved who it is: it no longer counts against its peer.
    pub fn proven(&mut self) {
        if let Some(peer) = self.peer.take() {
            self.limit.release(peer);
        }
    }
}

impl Drop for PeerTicket {
    fn drop(&mut self) {
        self.proven();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 4000)
    }

    #[test]
    fn a_peer_gets_max_unproven_connections_and_no_more() {
        let limit = PeerLimit::new(2);
        let local = at("10.0.0.1");
        let a = limit.admit(at("10.0.0.9"), local).unwrap();
        let mut b = limit.admit(at("10.0.0.9"), local).unwrap();
        assert!(limit.admit(at("10.0.0.9"), local).is_none());
        // Another peer is not held up.
        assert!(limit.admit(at("10.0.0.8"), local).is_some());
        b.proven();
        let c = limit.admit(at("10.0.0.9"), local).unwrap();
        drop((a, c));
        assert_eq!(limit.open(Peer::of("10.0.0.9".parse().unwrap())), 0);
    }

    #[test]
    fn an_ipv6_64_is_one_peer_and_mapped_ipv4_is_its_ipv4() {
        let limit = PeerLimit::new(1);
        let local = at("2001:db8::1");
        let _a = limit.admit(at("2001:db8:0:7::1"), local).unwrap();
        assert!(limit.admit(at("2001:db8:0:7::ffff"), local).is_none());
        assert!(limit.admit(at("2001:db8:0:8::1"), local).is_some());
        let _b = limit.admit(at("::ffff:10.1.2.3"), local).unwrap();
        assert!(limit.admit(at("10.1.2.3"), local).is_none());
    }

    #[test]
    fn the_machine_itself_is_not_counted() {
        let limit = PeerLimit::new(1);
        let tickets: Vec<_> = (0..10)
            .map(|_| limit.admit(at("127.0.0.1"), at("127.0.0.1")).unwrap())
            .collect();
        assert_eq!(tickets.len(), 10);
        // Another loopback address is another peer.
        let _x = limit.admit(at("127.0.0.2"), at("127.0.0.1")).unwrap();
        assert!(limit.admit(at("127.0.0.2"), at("127.0.0.1")).is_none());
    }
}
