//! Where the HTTP API listens, and the rule that only loopback may go without TLS.

use crate::HttpError;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// The default: loopback and an OS-chosen port, recorded in `control.json`.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// A PEM certificate chain and its private key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    pub tls: Option<TlsFiles>,
    /// Serve plain HTTP on a non-loopback address anyway.
    pub insecure_http: bool,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            addr: DEFAULT_ADDR,
            tls: None,
            insecure_http: false,
        }
    }
}

impl HttpConfig {
    /// From the command line's flags; a certificate without its key (or the reverse) is refused.
    pub fn from_flags(
        addr: Option<SocketAddr>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        insecure_http: bool,
    ) -> Result<HttpConfig, HttpError> {
        let tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (Some(_), None) => return Err(HttpError::HalfTls("--tls-key")),
            (None, Some(_)) => return Err(HttpError::HalfTls("--tls-cert")),
            (None, None) => None,
        };
        let config = HttpConfig {
            addr: addr.unwrap_or(DEFAULT_ADDR),
            tls,
            insecure_http,
        };
        config.check()?;
        Ok(config)
    }

    /// The bearer token must not cross a network in clear text unless the operator says so.
    pub fn check(&self) -> Result<(), HttpError> {
        if self.addr.ip().is_loopback() || self.tls.is_some() || self.insecure_http {
            Ok(())
        } else {
            Err(HttpError::PlainNonLoopback(self.addr))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_goes_without_tls_unless_told() {
        let any: SocketAddr = "0.0.0.0:8443".parse().unwrap();
        let err = HttpConfig::from_flags(Some(any), None, None, false).unwrap_err();
        assert!(err.to_string().contains("not a loopback address"), "{err}");
        assert!(HttpConfig::from_flags(Some(any), None, None, true).is_ok());
        let tls = HttpConfig::from_flags(Some(any), Some("c".into()), Some("k".into()), false);
        assert!(tls.is_ok());
        let v6: SocketAddr = "[::1]:0".parse().unwrap();
        assert!(HttpConfig::from_flags(Some(v6), None, None, false).is_ok());
        let half = HttpConfig::from_flags(None, Some("c".into()), None, false).unwrap_err();
        assert!(half.to_string().contains("--tls-key"), "{half}");
    }
}
