//! A plain HTTP/1.1 `GET /` against a deployment's endpoint (a load balancer), as a browser's
//! first request: no client library between the test and what HAProxy answers.

use std::io::{Read, Write};
use std::time::Duration;

/// The whole response (status line, headers, body) to `GET /` on `endpoint`; what arrived
/// before a read error or the 10 s timeout, so a test sees what a reset connection gave.
pub fn get_root(endpoint: &str) -> String {
    let mut stream = std::net::TcpStream::connect(endpoint).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {endpoint}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}
