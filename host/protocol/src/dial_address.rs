//! The address peers dial to reach the control plane (`--advertise`, a bootstrap's
//! `control`): `host:port`, the host a DNS name or an IP address. A name is resolved by the
//! peer when it dials; the peer pins the certificate's fingerprint, so the name only has to
//! lead to the control plane, it proves nothing.

use crate::bootstrap::{is_loopback_host, split_host_port};
use std::net::{IpAddr, SocketAddr};

/// Longest host name accepted (DNS's limit for a whole name).
pub const MAX_HOST_NAME_BYTES: usize = 253;

/// `host:port` as peers dial it; displayed as given (an IPv6 address in brackets).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialAddress {
    host: String,
    port: u16,
}

/// Why a text is not a [`DialAddress`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a host:port a peer can dial: {why}")]
pub struct BadDialAddress {
    text: String,
    why: String,
}

impl DialAddress {
    /// The host without brackets: a name, or an IP address.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host as an IP address, when it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// Whether the host is this machine's loopback (`localhost`, 127.0.0.0/8, ::1).
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.host)
    }

    /// The same host at another port (the file endpoint's, beside the control port).
    pub fn with_port(&self, port: u16) -> DialAddress {
        DialAddress {
            host: self.host.clone(),
            port,
        }
    }
}

impl From<SocketAddr> for DialAddress {
    fn from(addr: SocketAddr) -> DialAddress {
        DialAddress {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl std::fmt::Display for DialAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip() {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

impl std::str::FromStr for DialAddress {
    type Err = BadDialAddress;

    fn from_str(text: &str) -> Result<DialAddress, BadDialAddress> {
        let bad = |why: &str| BadDialAddress {
            text: text.to_string(),
            why: why.to_string(),
        };
        let (host, port) = split_host_port(text).map_err(bad)?;
        if host.parse::<IpAddr>().is_err() {
            check_host_name(host).map_err(bad)?;
        }
        Ok(DialAddress {
            host: host.to_string(),
            port,
        })
    }
}

/// A DNS name: dot-separated labels of letters, digits and `-` (not at a label's ends).
fn check_host_name(host: &str) -> Result<(), &'static str> {
    if host.len() > MAX_HOST_NAME_BYTES {
        return Err("the host name is longer than 253 bytes");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !host.trim_end_matches('.').split('.').all(label_ok) {
        return Err("the host is neither an IP address nor a DNS name (letters, digits, `-`, `.`)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_are_taken_and_shown_as_given() {
        for text in [
            "localhost:7000",
            "control.example.com:443",
            "10.0.0.1:9",
            "[::1]:80",
        ] {
            let a: DialAddress = text.parse().unwrap();
            assert_eq!(a.to_string(), text);
        }
        let a: DialAddress = "[fe80::1]:80".parse().unwrap();
        assert_eq!((a.host(), a.port()), ("fe80::1", 80));
        assert_eq!(a.with_port(9).to_string(), "[fe80::1]:9");
        assert!("LocalHost:1".parse::<DialAddress>().unwrap().is_loopback());
        assert!(
            !"control.example:1"
                .parse::<DialAddress>()
                .unwrap()
                .is_loopback()
        );
        let from: DialAddress = SocketAddr::from(([127, 0, 0, 1], 5)).into();
        assert_eq!(from, "127.0.0.1:5".parse().unwrap());
    }

    #[test]
    fn what_is_no_dialable_address_is_refused_naming_it() {
        for text in [
            "localhost",
            "localhost:0",
            "::1:80",
            "a b:80",
            "-bad.example:80",
            "under_score:80",
            "evil\n.example:80",
            "x..y:80",
        ] {
            let err = text.parse::<DialAddress>().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("`{text}` is not a host:port")),
                "{err}"
            );
        }
        let long = format!("{}:80", "a.".repeat(130));
        assert!(long.parse::<DialAddress>().is_err());
    }
}
