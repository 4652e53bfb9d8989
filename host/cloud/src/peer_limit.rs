//! How many connections one peer may hold open before proving who it is.
//!
//! A port that anyone may reach gives every connection a place while it handshakes; a
//! stranger opening connections and never finishing them would otherwise take every place
//! (and the queue behind them), so that agents wait past their own time limits. A
//! [`PeerLimit`] counts unproven connections per peer and turns away one more at once.
//!
//! A peer on another machine is its address (an IPv4 address, or an IPv6 /64, which one host
//! usually holds whole). A peer on this machine is the user that opened its end of the
//! connection ([`socket_owner`](crate::socket_owner)): addresses say nothing there, as any
//! local process may connect from any of 127.0.0.0/8 or share 127.0.0.1 with the local
//! provider's agents. The control plane's own uid (its local agents, and root's operators
//! when it runs as root) is not counted; every other uid, a plugin's program user included,
//! is one peer whatever address it uses. A local connection whose owner cannot be named (its
//! socket already closed) counts against one shared unknown peer, never as the control plane.
//!
//! Per-peer limits alone let a few peers together take every place: eight local uids of 32
//! each fill 256, and one plugin deployed on eight local servers has eight program users. So
//! local peers other than the control plane's uid together hold at most
//! [`PeerLimit::with_totals`]' `local`, and all counted peers together at most its
//! `strangers`; a port whose places exceed `strangers` always has room for the control
//! plane's own connections, and remote agents always have room beside local programs.

use crate::socket_owner;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

/// Where connections are counted: one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    V4(std::net::Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6Net(u64),
    /// A process of this machine, by the uid that opened its socket.
    User(u32),
    /// A connection from this machine whose socket no process holds any more.
    UnknownLocal,
}

impl Peer {
    /// The peer an address on another machine belongs to (an IPv4-mapped IPv6 address is its
    /// IPv4 peer).
    pub fn of(ip: IpAddr) -> Peer {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Peer::V4(v4),
            IpAddr::V6(v6) => Peer::V6Net((v6.to_bits() >> 64) as u64),
        }
    }

    /// The peer a connection from `peer` to `local` belongs to: its owner's uid when its
    /// other end is a socket of this machine, else its address. Every connection is looked
    /// up, not only loopback ones, as a local process may also connect from any of the
    /// machine's other addresses; the lookup is one exact kernel request (about 15 µs
    /// whatever the number of sockets open, see [`socket_owner`]).
    pub fn of_connection(peer: SocketAddr, local: SocketAddr) -> Peer {
        match socket_owner::peer_uid(peer, local) {
            Ok(uid) => Peer::User(uid),
            Err(e) if is_local(peer, local) => {
                warn_once_unavailable(&e);
                Peer::UnknownLocal
            }
            // Another machine, or a socket of one of this machine's other addresses that
            // closed already: it holds no place for longer than its close takes to arrive.
            Err(_) => Peer::of(peer.ip()),
        }
    }
}

/// Tells the operator once when the kernel cannot be asked at all (a seccomp filter, a
/// kernel without `inet_diag`): every local agent then shares the unknown peer's places.
fn warn_once_unavailable(e: &socket_owner::SocketOwnerError) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    if let socket_owner::SocketOwnerError::Netlink(_) = e {
        WARNED.call_once(|| {
            tracing::warn!(
                error = %e,
                "cannot tell which user opened a local connection: every local connection \
                 counts against one peer"
            );
        });
    }
}

/// Whether `peer` is this machine by its address alone.
fn is_local(peer: SocketAddr, local: SocketAddr) -> bool {
    let ip = peer.ip().to_canonical();
    ip.is_loopback() || ip == local.ip().to_canonical()
}

/// Unproven connections per peer, at most `max` each, with totals for local peers and for
/// every counted peer; the control plane's own uid unlimited.
#[derive(Debug, Clone)]
pub struct PeerLimit {
    max: usize,
    own_uid: u32,
    /// At most this many for every local peer but the control plane's uid, together.
    local_max: usize,
    /// At most this many for every counted peer, together.
    strangers_max: usize,
    open: Arc<Mutex<Open>>,
}

#[derive(Debug, Default)]
struct Open {
    by_peer: HashMap<Peer, usize>,
    local: usize,
    all: usize,
}

impl Peer {
    /// A process of this machine (its uid known or not).
    fn is_local(self) -> bool {
        matches!(self, Peer::User(_) | Peer::UnknownLocal)
    }
}

/// One unproven connection, counted against its peer until [`PeerTicket::proven`] or drop.
#[derive(Debug)]
pub struct PeerTicket {
    limit: PeerLimit,
    peer: Option<Peer>,
}

impl PeerLimit {
    /// A limit for a control plane running as this process's effective uid.
    pub fn new(max: usize) -> PeerLimit {
        PeerLimit::for_uid(max, rustix::process::geteuid().as_raw())
    }

    /// A limit for a control plane running as `own_uid`.
    pub fn for_uid(max: usize, own_uid: u32) -> PeerLimit {
        PeerLimit {
            max,
            own_uid,
            local_max: usize::MAX,
            strangers_max: usize::MAX,
            open: Arc::default(),
        }
    }

    /// The same limit, with local peers (but the control plane's uid) together held to
    /// `local` and every counted peer together to `strangers`.
    pub fn with_totals(self, local: usize, strangers: usize) -> PeerLimit {
        PeerLimit {
            local_max: local,
            strangers_max: strangers,
            ..self
        }
    }

    /// A ticket for a connection from `peer` to `local`, or `None` when that peer already
    /// holds `max` unproven connections.
    pub fn admit(&self, peer: SocketAddr, local: SocketAddr) -> Option<PeerTicket> {
        let key = Peer::of_connection(peer, local);
        if key == Peer::User(self.own_uid) {
            return Some(PeerTicket {
                limit: self.clone(),
                peer: None,
            });
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let full = open.all >= self.strangers_max
            || (key.is_local() && open.local >= self.local_max)
            || open.by_peer.get(&key).is_some_and(|&n| n >= self.max);
        if full {
            return None;
        }
        *open.by_peer.entry(key).or_default() += 1;
        open.all += 1;
        open.local += usize::from(key.is_local());
        Some(PeerTicket {
            limit: self.clone(),
            peer: Some(key),
        })
    }

    /// Unproven connections `peer` holds now.
    pub fn open(&self, peer: Peer) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.by_peer.get(&peer).copied().unwrap_or(0)
    }

    fn release(&self, peer: Peer) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.by_peer.get_mut(&peer) {
            *count -= 1;
            if *count == 0 {
                open.by_peer.remove(&peer);
            }
            open.all -= 1;
            open.local -= usize::from(peer.is_local());
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

    /// Many peers within their own limits cannot together take what is kept for the others.
    #[test]
    fn peers_together_stay_within_the_totals() {
        let limit = PeerLimit::for_uid(2, me()).with_totals(3, 5);
        let local = at("10.0.0.1");
        // Local peers of no known owner (no socket holds these ends): one peer, limited...
        let _l1 = limit.admit(at("127.0.0.5"), at("127.0.0.1")).unwrap();
        let _l2 = limit.admit(at("127.0.0.6"), at("127.0.0.1")).unwrap();
        // ...and remote peers each within their own two, until every counted place is taken.
        let remote: Vec<_> = ["10.0.0.7", "10.0.0.7", "10.0.0.8"]
            .iter()
            .map(|p| limit.admit(at(p), local).unwrap())
            .collect();
        assert!(
            limit.admit(at("10.0.0.9"), local).is_none(),
            "strangers' total"
        );
        drop(remote);
        let _r = limit.admit(at("10.0.0.9"), local).unwrap();
        assert_eq!(limit.open(Peer::UnknownLocal), 2);
    }

    #[test]
    fn local_peers_together_stay_within_their_total() {
        let real = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(real.local_addr().unwrap()).unwrap();
        let (accepted, peer) = real.accept().unwrap();
        let here = accepted.local_addr().unwrap();
        let to = at("127.0.0.1");
        // This process plays a plugin's program (another uid than the control plane's).
        let limit = PeerLimit::for_uid(5, me().wrapping_add(1)).with_totals(1, 10);
        let _unknown = limit.admit(at("127.0.0.5"), to).unwrap();
        assert!(limit.admit(peer, here).is_none(), "a second local peer");
        assert_eq!(limit.open(Peer::User(me())), 0);
        // A remote peer is not held up by local ones.
        assert!(limit.admit(at("10.0.0.7"), at("10.0.0.1")).is_some());
        // The control plane's own uid is never counted, even with the local total reached.
        let own = PeerLimit::for_uid(5, me()).with_totals(1, 1);
        let _unknown = own.admit(at("127.0.0.5"), to).unwrap();
        assert!(own.admit(peer, here).is_some());
        drop(client);
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

    /// Connections to a listener on 127.0.0.1, each from its own loopback source address, as
    /// the listener sees them (peer, local), with both ends kept open.
    struct Local {
        ends: Vec<(SocketAddr, SocketAddr)>,
        _held: Vec<tokio::net::TcpStream>,
    }

    async fn local_connections(sources: &[&str]) -> Local {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut local = Local {
            ends: Vec::new(),
            _held: Vec::new(),
        };
        for source in sources {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
            let client = socket.connect(addr).await.unwrap();
            let (accepted, peer) = listener.accept().await.unwrap();
            local.ends.push((peer, accepted.local_addr().unwrap()));
            local._held.extend([client, accepted]);
        }
        local
    }

    fn me() -> u32 {
        rustix::process::geteuid().as_raw()
    }

    #[tokio::test]
    async fn the_control_planes_own_uid_is_not_counted() {
        let limit = PeerLimit::for_uid(1, me());
        let local = local_connections(&["127.0.0.1"; 10]).await;
        let tickets: Vec<_> = local
            .ends
            .iter()
            .map(|&(peer, at)| limit.admit(peer, at).unwrap())
            .collect();
        assert_eq!(tickets.len(), 10);
        assert_eq!(limit.open(Peer::User(me())), 0);
    }

    #[tokio::test]
    async fn another_local_uid_is_one_peer_from_any_loopback_address() {
        // This process plays a plugin's program: the control plane runs as another uid.
        let limit = PeerLimit::for_uid(2, me().wrapping_add(1));
        let sources = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.9.8.7"];
        let local = local_connections(&sources).await;
        let admitted: Vec<_> = local
            .ends
            .iter()
            .map(|&(peer, at)| limit.admit(peer, at))
            .collect();
        assert_eq!(
            admitted.iter().map(Option::is_some).collect::<Vec<_>>(),
            [true, true, false, false]
        );
        assert_eq!(limit.open(Peer::User(me())), 2);
        // Addresses do not count for it: 127.0.0.2 holds nothing of its own.
        assert_eq!(limit.open(Peer::of("127.0.0.2".parse().unwrap())), 0);
        drop(admitted);
        assert_eq!(limit.open(Peer::User(me())), 0);
    }

    #[test]
    fn a_local_connection_of_no_known_owner_is_a_limited_peer() {
        // No socket holds these ends (its owner closed it before the lookup).
        let limit = PeerLimit::for_uid(1, me());
        let (gone, to) = (at("127.0.0.5"), at("127.0.0.1"));
        let _first = limit.admit(gone, to).unwrap();
        assert!(limit.admit(at("127.0.0.6"), to).is_none());
        assert!(limit.admit(at("::1"), at("::1")).is_none());
        assert_eq!(limit.open(Peer::UnknownLocal), 1);
    }
}
