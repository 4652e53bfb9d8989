//! Why the HTTP API could not start.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "--http {0} is not a loopback address: serve it with TLS (--tls-cert and --tls-key) or \
         say --insecure-http to send the operator token in clear text"
    )]
    PlainNonLoopback(SocketAddr),
    #[error("--tls-cert and --tls-key go together: {0} is missing")]
    HalfTls(&'static str),
    #[error("binding the HTTP API on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS {path}: {message}")]
    Tls { path: PathBuf, message: String },
    #[error("operator token: {0}")]
    Token(#[from] stratus_cloud::KeyError),
}
