//! What naming the owner of a local connection costs (a bench binary, not a timed test): the
//! exact `sock_diag` lookup every new connection to the control port and the file endpoint
//! makes (`stratus_cloud::socket_owner::peer_uid`), against reading `/proc/net/tcp` once (what
//! a lookup by scanning would cost), with more and more loopback connections open.
//!
//! Run: `cargo bench -p stratus-cloud --bench socket_owner -- [--open N,N,...] [--lookups N]`
//! (default 0,1000,5000 open connections, 10,000 lookups).

use std::net::{TcpListener, TcpStream};
use std::time::Instant;
use stratus_cloud::socket_owner::peer_uid;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        let at = args.iter().position(|a| a == flag)?;
        args.get(at + 1).cloned()
    };
    let open: Vec<usize> = value("--open")
        .unwrap_or_else(|| "0,1000,5000".into())
        .split(',')
        .map(|n| n.parse().expect("--open N,N,..."))
        .collect();
    let lookups: u32 = value("--lookups").map_or(10_000, |n| n.parse().expect("--lookups N"));
    println!("open connections | sock_diag lookup | /proc/net/tcp + tcp6 read once");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    for target in open {
        while held.len() < target {
            let client = TcpStream::connect(addr).unwrap();
            let (accepted, _) = listener.accept().unwrap();
            held.push((client, accepted));
        }
        let client = TcpStream::connect(addr).unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        let local = accepted.local_addr().unwrap();
        let started = Instant::now();
        for _ in 0..lookups {
            peer_uid(peer, local).unwrap();
        }
        let lookup = started.elapsed() / lookups;
        let started = Instant::now();
        let text = std::fs::read_to_string("/proc/net/tcp").unwrap()
            + &std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
        let scan = started.elapsed();
        println!(
            "{target:>16} | {lookup:>16.1?} | {scan:>10.1?} ({} KiB)",
            text.len() / 1024
        );
        drop((client, accepted));
    }
}
