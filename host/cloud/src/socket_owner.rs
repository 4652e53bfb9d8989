//! Which user opened the other end of a TCP connection that came from this machine.
//!
//! Both ends of a connection between two sockets of one machine (over loopback or one of its
//! own addresses) live in the same network namespace, so the kernel can name the user who
//! opened the peer's end. [`peer_uid`] asks it with one exact `sock_diag` request (netlink
//! `SOCK_DIAG_BY_FAMILY` without `NLM_F_DUMP`, for the connection's four-tuple): a lookup in
//! the kernel's connection hash, where reading `/proc/net/tcp` would format every socket of
//! the machine, so a connection costs the same with ten sockets open or a hundred thousand.
//! A socket that no process holds any more (closed, orphaned, in `TIME_WAIT`) has no owner
//! to name and is an error, as is a tuple no local socket has (a peer on another machine).

use rustix::net::netlink::{SOCK_DIAG, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use std::net::{IpAddr, SocketAddr};

/// Why the owner of a connection's other end is not known.
#[derive(Debug, thiserror::Error)]
pub enum SocketOwnerError {
    #[error("asking the kernel over sock_diag netlink failed: {0}")]
    Netlink(#[from] std::io::Error),
    #[error("no socket of this machine holds the other end of the connection")]
    NotFound,
    #[error("the other end of the connection is held by no process (TCP state {0})")]
    Released(u8),
    #[error("an answer of {0} bytes that describes another socket or none")]
    Malformed(usize),
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const IPPROTO_TCP: u8 = 6;
/// `struct nlmsghdr`.
const HEADER: usize = 16;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, then the socket id.
const REQUEST: usize = HEADER + 8 + SOCKET_ID;
/// `struct inet_diag_sockid`: ports, two 16-byte addresses, interface, cookie.
const SOCKET_ID: usize = 48;
/// `struct inet_diag_msg`: family, state, timer, retrans, socket id, five u32 (uid and inode last).
const ANSWER: usize = HEADER + 4 + SOCKET_ID + 20;
/// TCP states that belong to no connected socket: `TIME_WAIT`, `LISTEN`, `NEW_SYN_RECV`.
const NOT_A_PEER_STATE: [u8; 3] = [6, 10, 12];

/// The uid that opened the socket at the other end of the connection from `peer` to `local`
/// (as the accepting side sees them), if that socket is on this machine and still held.
pub fn peer_uid(peer: SocketAddr, local: SocketAddr) -> Result<u32, SocketOwnerError> {
    let (peer, local) = (canonical(peer), canonical(local));
    let family = match (peer.ip(), local.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => AddressFamily::INET,
        (IpAddr::V6(_), IpAddr::V6(_)) => AddressFamily::INET6,
        _ => return Err(SocketOwnerError::NotFound),
    };
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(SOCK_DIAG),
    )
    .map_err(std::io::Error::from)?;
    let kernel = SocketAddrNetlink::new(0, 0);
    let request = request(family, peer, local);
    rustix::net::sendto(&fd, &request, SendFlags::empty(), &kernel)
        .map_err(std::io::Error::from)?;
    // The kernel answers an exact request within `sendto`: waiting would only hide a bug.
    let mut answer = [0u8; 512];
    let (_, len) =
        rustix::net::recv(&fd, &mut answer, RecvFlags::DONTWAIT).map_err(std::io::Error::from)?;
    owner(&answer[..len.min(answer.len())], peer, local)
}

/// The address without IPv4 mapping, as the kernel hashes an IPv4 connection of either family.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The request for the socket whose own end is `peer` and whose other end is `local`.
fn request(family: AddressFamily, peer: SocketAddr, local: SocketAddr) -> [u8; REQUEST] {
    let mut m = [0u8; REQUEST];
    m[0..4].copy_from_slice(&(REQUEST as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m[8..12].copy_from_slice(&1u32.to_ne_bytes());
    m[HEADER] = family.as_raw() as u8;
    m[HEADER + 1] = IPPROTO_TCP;
    m[HEADER + 4..HEADER + 8].copy_from_slice(&u32::MAX.to_ne_bytes());
    let id = &mut m[HEADER + 8..];
    write_id(id, peer, local);
    // No cookie (INET_DIAG_NOCOOKIE): the tuple alone names the socket.
    id[40..48].fill(0xff);
    m
}

/// Ports and addresses of an `inet_diag_sockid`, in network order.
fn write_id(id: &mut [u8], src: SocketAddr, dst: SocketAddr) {
    id[0..2].copy_from_slice(&src.port().to_be_bytes());
    id[2..4].copy_from_slice(&dst.port().to_be_bytes());
    for (at, ip) in [(4, src.ip()), (20, dst.ip())] {
        match ip {
            IpAddr::V4(v4) => id[at..at + 4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => id[at..at + 16].copy_from_slice(&v6.octets()),
        }
    }
}

/// The uid in the kernel's answer, once it is sure to describe the connected socket asked for.
fn owner(answer: &[u8], peer: SocketAddr, local: SocketAddr) -> Result<u32, SocketOwnerError> {
    let malformed = || SocketOwnerError::Malformed(answer.len());
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(answer.get(at..at + 4)?.try_into().ok()?))
    };
    let kind = answer
        .get(4..6)
        .map(|b| u16::from_ne_bytes([b[0], b[1]]))
        .ok_or_else(malformed)?;
    if kind == NLMSG_ERROR {
        let code = u32_at(HEADER).ok_or_else(malformed)? as i32;
        return Err(match -code {
            2 => SocketOwnerError::NotFound, // ENOENT
            errno => std::io::Error::from_raw_os_error(errno).into(),
        });
    }
    if kind != SOCK_DIAG_BY_FAMILY || answer.len() < ANSWER {
        return Err(malformed());
    }
    let state = answer[HEADER + 1];
    let (uid, inode) = (u32_at(HEADER + 64), u32_at(HEADER + 68));
    if NOT_A_PEER_STATE.contains(&state) || inode == Some(0) {
        return Err(SocketOwnerError::Released(state));
    }
    // A listener or another socket that the kernel fell back to is not the peer.
    let family = answer[HEADER];
    let described = id_addresses(&answer[HEADER + 4..HEADER + 4 + SOCKET_ID], family);
    if described != Some((peer, local)) {
        return Err(malformed());
    }
    uid.ok_or_else(malformed)
}

/// The (own, other) ends an `inet_diag_sockid` of `family` names, IPv4 mapping undone.
fn id_addresses(id: &[u8], family: u8) -> Option<(SocketAddr, SocketAddr)> {
    let ip = |at: usize| -> Option<IpAddr> {
        let ip = if family == AddressFamily::INET.as_raw() as u8 {
            IpAddr::from(<[u8; 4]>::try_from(&id[at..at + 4]).ok()?)
        } else if family == AddressFamily::INET6.as_raw() as u8 {
            IpAddr::from(<[u8; 16]>::try_from(&id[at..at + 16]).ok()?)
        } else {
            return None;
        };
        Some(ip.to_canonical())
    };
    let port = |at: usize| u16::from_be_bytes([id[at], id[at + 1]]);
    let src = SocketAddr::new(ip(4)?, port(0));
    let dst = SocketAddr::new(ip(20)?, port(2));
    Some((src, dst))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    /// A connection on `listen` (an address with port 0) as its accepting side sees it.
    fn connected(listen: &str) -> Option<(TcpStream, TcpStream)> {
        let listener = TcpListener::bind(listen).ok()?;
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        Some((client, accepted))
    }

    fn ends(accepted: &TcpStream) -> (SocketAddr, SocketAddr) {
        (
            accepted.peer_addr().unwrap(),
            accepted.local_addr().unwrap(),
        )
    }

    #[test]
    fn a_socket_of_this_process_is_found_with_its_uid() {
        let me = rustix::process::geteuid().as_raw();
        let (_client, accepted) = connected("127.0.0.1:0").unwrap();
        let (peer, local) = ends(&accepted);
        assert_eq!(peer_uid(peer, local).unwrap(), me);
        // Over IPv6 loopback, where the machine has it.
        if let Some((_client6, accepted6)) = connected("[::1]:0") {
            let (peer, local) = ends(&accepted6);
            assert_eq!(peer_uid(peer, local).unwrap(), me);
        }
    }

    #[test]
    fn an_ipv4_client_of_a_dual_stack_listener_is_found() {
        let Ok(listener) = TcpListener::bind("[::]:0") else {
            return;
        };
        let port = listener.local_addr().unwrap().port();
        let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        assert!(matches!(peer.ip(), IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some()));
        let me = rustix::process::geteuid().as_raw();
        assert_eq!(peer_uid(peer, accepted.local_addr().unwrap()).unwrap(), me);
    }

    #[test]
    fn a_closed_connection_is_unknown() {
        let (client, accepted) = connected("127.0.0.1:0").unwrap();
        let (peer, local) = ends(&accepted);
        drop(client);
        let closed = peer_uid(peer, local);
        assert!(
            matches!(
                closed,
                Err(SocketOwnerError::Released(_) | SocketOwnerError::NotFound)
            ),
            "{closed:?}"
        );
    }

    #[test]
    fn a_tuple_no_socket_has_is_not_found() {
        let (_client, accepted) = connected("127.0.0.1:0").unwrap();
        let (peer, local) = ends(&accepted);
        let other = SocketAddr::new(peer.ip(), peer.port().wrapping_add(1).max(1));
        assert!(matches!(
            peer_uid(other, local),
            Err(SocketOwnerError::NotFound)
        ));
        // A peer on another machine: no local socket has its address.
        let remote: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        assert!(matches!(
            peer_uid(remote, local),
            Err(SocketOwnerError::NotFound)
        ));
    }

    #[test]
    fn a_listener_at_the_peer_address_is_not_taken_for_the_peer() {
        // The kernel falls back to a listener bound where the peer's end would be.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let at = listener.local_addr().unwrap();
        let local: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let found = peer_uid(at, local);
        assert!(
            matches!(
                found,
                Err(SocketOwnerError::Released(10) | SocketOwnerError::NotFound)
            ),
            "{found:?}"
        );
    }
}
