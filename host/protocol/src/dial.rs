//! Dialing the control port as a peer (an agent or an operator's CLI): TCP, then TLS pinning
//! the control plane's certificate, all within one time limit.

use crate::tls::{Fingerprint, PinMismatch, pinned_client_config, server_name};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;

/// A peer's connection to the control port: TLS, or plaintext where the control plane was
/// started so on loopback.
pub type ClientStream = Either<tokio_rustls::client::TlsStream<TcpStream>, TcpStream>;

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("control plane {0}: bad address: {1}")]
    Address(String, &'static str),
    #[error("control plane {0} not reachable: {1}")]
    Unreachable(String, std::io::Error),
    #[error("control plane {0}: no answer within {1:?}")]
    Timeout(String, Duration),
    /// The peer at the address is not the control plane this peer pins.
    #[error(transparent)]
    PinMismatch(PinMismatch),
    #[error("control plane {0}: TLS handshake failed: {1}")]
    Tls(String, String),
}

/// Connects to `control` (`host:port`); with `pinned`, runs a TLS handshake that accepts only
/// that certificate (without it, plaintext: only for loopback, the caller's to check).
pub async fn dial(
    control: &str,
    pinned: Option<&Fingerprint>,
    limit: Duration,
) -> Result<ClientStream, DialError> {
    let (host, _) = crate::bootstrap::split_host_port(control)
        .map_err(|why| DialError::Address(control.to_string(), why))?;
    let name =
        server_name(host).map_err(|_| DialError::Address(control.to_string(), "bad host"))?;
    let attempt = async {
        let tcp = TcpStream::connect(control)
            .await
            .map_err(|e| DialError::Unreachable(control.to_string(), e))?;
        let _ = tcp.set_nodelay(true);
        let Some(pinned) = pinned else {
            return Ok(Either::Right(tcp));
        };
        let connector = TlsConnector::from(pinned_client_config(pinned));
        match connector.connect(name, tcp).await {
            Ok(tls) => Ok(Either::Left(tls)),
            Err(e) => Err(pin_mismatch(&e)
                .map(DialError::PinMismatch)
                .unwrap_or_else(|| DialError::Tls(control.to_string(), e.to_string()))),
        }
    };
    tokio::time::timeout(limit, attempt)
        .await
        .map_err(|_| DialError::Timeout(control.to_string(), limit))?
}

/// The pin mismatch a failed handshake carries, if that is why it failed.
fn pin_mismatch(e: &std::io::Error) -> Option<PinMismatch> {
    let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) =
        e.get_ref()?.downcast_ref::<rustls::Error>()?
    else {
        return None;
    };
    let m = other.0.downcast_ref::<PinMismatch>()?;
    Some(PinMismatch {
        presented: m.presented,
        pinned: m.pinned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ControlIdentity;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A TLS server with `id` on loopback that echoes one line's worth of bytes.
    async fn serve(id: &ControlIdentity) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let acceptor = tokio_rustls::TlsAcceptor::from(id.server_config());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 5];
                    if tls.read_exact(&mut buf).await.is_ok() {
                        let _ = tls.write_all(&buf).await;
                    }
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn dialing_pins_the_certificate() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let real = ControlIdentity::load_or_generate(a.path()).unwrap();
        let other = ControlIdentity::load_or_generate(b.path()).unwrap();
        let addr = serve(&real).await;
        let limit = Duration::from_secs(10);

        let mut ok = dial(&addr, Some(&real.fingerprint), limit).await.unwrap();
        ok.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        ok.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");

        let err = dial(&addr, Some(&other.fingerprint), limit)
            .await
            .unwrap_err();
        let DialError::PinMismatch(m) = &err else {
            panic!("{err}")
        };
        assert_eq!(
            (m.presented, m.pinned),
            (real.fingerprint, other.fingerprint)
        );
        assert_eq!(
            err.to_string(),
            format!(
                "control plane certificate {} does not match the pinned {}",
                real.fingerprint, other.fingerprint
            )
        );
    }

    #[tokio::test]
    async fn a_silent_peer_times_out_and_bad_addresses_are_named() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let fp = Fingerprint::of(b"x");
        let err = dial(&addr, Some(&fp), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, DialError::Timeout(..)), "{err}");
        drop(listener);
        let err = dial("nowhere", Some(&fp), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("nowhere: bad address"), "{err}");
    }
}
