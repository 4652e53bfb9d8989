//! The control plane's TLS identity and how its peers pin it.
//!
//! The control plane has one certificate ([`ControlIdentity`]): generated (self-signed, rcgen)
//! at first start under `<state>/tls/`, or given by the operator. Its peers do not check it
//! against any authority: each is handed the sha256 of the leaf certificate
//! ([`Fingerprint`]) and accepts exactly that certificate, whatever names it carries
//! ([`pinned_client_config`]), while rustls still checks that the server holds its key.
//! Only TLS 1.3 is spoken: both ends are ours, and it has no weak choices left to make.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The directory under the state directory that holds the generated identity.
pub const TLS_DIR: &str = "tls";
/// The generated certificate (PEM) in [`TLS_DIR`].
pub const CERT_FILE: &str = "control.crt";
/// The generated private key (PEM, PKCS#8) in [`TLS_DIR`], mode [`KEY_MODE`].
pub const KEY_FILE: &str = "control.key";
/// Mode of the key file: the control plane's user alone may read it.
pub const KEY_MODE: u32 = 0o600;
/// Mode of [`TLS_DIR`].
pub const TLS_DIR_MODE: u32 = 0o700;
/// Largest certificate or key file read: a PEM chain of a few RSA-4096 certificates is far
/// below it, and a file that is not one cannot make the control plane read without end.
pub const MAX_PEM_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("not a certificate fingerprint ({0}): expected sha256:<64 hex digits>")]
    Fingerprint(&'static str),
    #[error("generating the control plane's certificate: {0}")]
    Generate(String),
    #[error("not a server name: {0}")]
    ServerName(String),
}

fn file_error(path: &Path) -> impl FnOnce(String) -> TlsError + '_ {
    move |message| TlsError::File {
        path: path.to_path_buf(),
        message,
    }
}

/// The sha256 of a leaf certificate's DER, written `sha256:<64 lowercase hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of(cert_der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(cert_der).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Fingerprint, TlsError> {
        let digits = s
            .strip_prefix("sha256:")
            .ok_or(TlsError::Fingerprint("no sha256: prefix"))?;
        if digits.len() != 64 {
            return Err(TlsError::Fingerprint("not 64 digits"));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(digits, &mut bytes)
            .map_err(|_| TlsError::Fingerprint("not hexadecimal"))?;
        Ok(Fingerprint(bytes))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Fingerprint, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The control plane's certificate chain and key, ready to serve.
pub struct ControlIdentity {
    /// The leaf certificate, the one peers pin.
    pub cert_der: CertificateDer<'static>,
    /// Its private key (its `Debug` shows no key material).
    pub key_der: PrivateKeyDer<'static>,
    pub fingerprint: Fingerprint,
    /// Built once, so a certificate and key that do not match are refused at load.
    server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for ControlIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl ControlIdentity {
    /// The identity in `<state_dir>/tls/`, generated there (names `localhost`, 127.0.0.1 and
    /// ::1) when neither file exists yet.
    pub fn load_or_generate(state_dir: &Path) -> Result<ControlIdentity, TlsError> {
        ControlIdentity::load_or_generate_with_names(state_dir, &[])
    }

    /// Like [`ControlIdentity::load_or_generate`], a new certificate also naming `names`
    /// (e.g. the listen address). An existing identity is kept as it is, whatever its names:
    /// agents pin its fingerprint, and a new certificate would lock them all out.
    pub fn load_or_generate_with_names(
        state_dir: &Path,
        names: &[String],
    ) -> Result<ControlIdentity, TlsError> {
        let dir = state_dir.join(TLS_DIR);
        exists(&dir)?;
        let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        match (exists(&cert)?, exists(&key)?) {
            (true, true) => {
                check_key_mode(&key)?;
                ControlIdentity::from_files(&cert, &key)
            }
            (false, false) => generate(&dir, names),
            (true, false) => Err(file_error(&key)(format!(
                "missing while {} exists; restore it, or remove both to generate a new \
                 identity (agents pinning the old one will be refused)",
                cert.display()
            ))),
            (false, true) => Err(file_error(&cert)(format!(
                "missing while {} exists; restore it, or remove both to generate a new \
                 identity (agents pinning the old one will be refused)",
                key.display()
            ))),
        }
    }

    /// An identity an operator gives: a PEM certificate chain (leaf first) and its PEM key.
    pub fn from_files(cert: &Path, key: &Path) -> Result<ControlIdentity, TlsError> {
        let cert_pem = read_bounded(cert)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_error(cert)(format!("not a PEM certificate chain: {e}")))?;
        if chain.is_empty() {
            return Err(file_error(cert)("no PEM certificate in it".into()));
        }
        let key_pem = read_bounded(key)?;
        // A fixed message: the parser's own may quote a line of the file, i.e. of the key.
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
            file_error(key)("not a PEM private key (PKCS#8, PKCS#1 or SEC1)".into())
        })?;
        ControlIdentity::from_der(chain, key_der)
            .map_err(|e| file_error(cert)(format!("unusable with {}: {e}", key.display())))
    }

    fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key_der: PrivateKeyDer<'static>,
    ) -> Result<ControlIdentity, rustls::Error> {
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key_der.clone_key())?;
        // Peers never resume (each dial builds its client anew): tickets would be work and
        // bytes per connection for nothing, a thousand agents at once.
        server.send_tls13_tickets = 0;
        Ok(ControlIdentity {
            fingerprint: Fingerprint::of(&chain[0]),
            cert_der: chain[0].clone(),
            key_der,
            server: Arc::new(server),
        })
    }

    /// The server side of a TLS 1.3 connection with this identity (no client certificates:
    /// peers prove who they are inside the connection).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }
}

/// The client side of a TLS 1.3 connection that accepts exactly the certificate whose
/// fingerprint is `pinned`, whatever its names and dates; the handshake signature is still
/// checked (ring), so only the holder of that certificate's key gets through.
pub fn pinned_client_config(pinned: &Fingerprint) -> Arc<rustls::ClientConfig> {
    let provider = provider();
    let verifier = Arc::new(PinnedVerifier {
        pinned: *pinned,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // Every connection checks the pin in a full handshake.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// The name a client gives for `host` (a DNS name or an IP address): with a pinned
/// certificate it is not checked, but rustls needs one.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| TlsError::ServerName(e.to_string()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate other than the pinned one, in the words an operator reads in a log.
#[derive(Debug, thiserror::Error)]
#[error("control plane certificate {presented} does not match the pinned {pinned}")]
pub struct PinMismatch {
    pub presented: Fingerprint,
    pub pinned: Fingerprint,
}

#[derive(Debug)]
struct PinnedVerifier {
    pinned: Fingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of(end_entity);
        if presented == self.pinned {
            return Ok(ServerCertVerified::assertion());
        }
        let mismatch = PinMismatch {
            presented,
            pinned: self.pinned,
        };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(mismatch)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Whether `path` exists, refusing a symbolic link (someone who could write the state
/// directory could otherwise point the key at a file of their choosing).
fn exists(path: &Path) -> Result<bool, TlsError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            Err(file_error(path)("is a symbolic link; refused".into()))
        }
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(file_error(path)(e.to_string())),
    }
}

/// Refuses a generated key that others may read: the file was made [`KEY_MODE`], so a wider
/// mode means someone changed it, and the key may be known.
fn check_key_mode(key: &Path) -> Result<(), TlsError> {
    let mode = std::fs::metadata(key)
        .map_err(|e| file_error(key)(e.to_string()))?
        .mode()
        & 0o777;
    if mode & !KEY_MODE != 0 {
        return Err(file_error(key)(format!(
            "mode {mode:o} lets others read the control plane's private key; it must be \
             {KEY_MODE:o} (chmod {KEY_MODE:o}, and consider the key disclosed)"
        )));
    }
    Ok(())
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, TlsError> {
    let file = std::fs::File::open(path).map_err(|e| file_error(path)(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| file_error(path)(e.to_string()))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(file_error(path)(format!(
            "larger than {MAX_PEM_BYTES} bytes; not a certificate or key"
        )));
    }
    Ok(bytes)
}

/// A new self-signed identity, written to `dir` (key first, each file whole or not at all).
fn generate(dir: &Path, names: &[String]) -> Result<ControlIdentity, TlsError> {
    let generate_error = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let mut sans = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    sans.extend(
        names
            .iter()
            .filter(|n| !sans.contains(n))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let mut params = rcgen::CertificateParams::new(sans).map_err(generate_error)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "stratus control plane");
    let key_pair = rcgen::KeyPair::generate().map_err(generate_error)?;
    let cert = params.self_signed(&key_pair).map_err(generate_error)?;
    create_private_dir(dir)?;
    write_new(
        &dir.join(KEY_FILE),
        key_pair.serialize_pem().as_bytes(),
        KEY_MODE,
    )?;
    write_new(&dir.join(CERT_FILE), cert.pem().as_bytes(), 0o644)?;
    let key_der = PrivateKeyDer::Pkcs8(key_pair.serialize_der().into());
    ControlIdentity::from_der(vec![cert.der().clone()], key_der)
        .map_err(|e| TlsError::Generate(e.to_string()))
}

fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    let problem = |e: std::io::Error| file_error(dir)(e.to_string());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(TLS_DIR_MODE)
        .create(dir)
        .map_err(problem)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(TLS_DIR_MODE)).map_err(problem)
}

/// Writes `bytes` to a temporary file of `mode` beside `path`, then renames it over `path`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let problem = |e: std::io::Error| file_error(path)(e.to_string());
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(problem(e)),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(problem)?;
    file.write_all(bytes).map_err(problem)?;
    file.sync_all().map_err(problem)?;
    std::fs::rename(&tmp, path).map_err(problem)
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
