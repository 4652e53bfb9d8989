use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o777
}

#[test]
fn a_generated_identity_round_trips_through_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let first =
        ControlIdentity::load_or_generate_with_names(tmp.path(), &["10.0.0.7".into()]).unwrap();
    let dir = tmp.path().join(TLS_DIR);
    assert_eq!(mode(&dir.join(KEY_FILE)), KEY_MODE);
    assert_eq!(mode(&dir), TLS_DIR_MODE);
    assert_eq!(first.fingerprint, Fingerprint::of(&first.cert_der));

    // The next start loads the same identity: running agents pinned it.
    let again = ControlIdentity::load_or_generate(tmp.path()).unwrap();
    assert_eq!(again.fingerprint, first.fingerprint);
    let given = ControlIdentity::from_files(&dir.join(CERT_FILE), &dir.join(KEY_FILE)).unwrap();
    assert_eq!(given.fingerprint, first.fingerprint);
    assert!(!dir.join("control.tmp").exists());

    // Another state directory gets another identity.
    let other = tempfile::tempdir().unwrap();
    let second = ControlIdentity::load_or_generate(other.path()).unwrap();
    assert_ne!(second.fingerprint, first.fingerprint);
}

#[test]
fn the_debug_of_an_identity_shows_no_key() {
    let tmp = tempfile::tempdir().unwrap();
    let id = ControlIdentity::load_or_generate(tmp.path()).unwrap();
    let key = std::fs::read_to_string(tmp.path().join(TLS_DIR).join(KEY_FILE)).unwrap();
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let shown = format!("{id:?}");
    assert!(shown.contains(&id.fingerprint.to_string()), "{shown}");
    assert!(!shown.contains(&body[..16]), "{shown}");
}

#[test]
fn a_key_others_can_read_is_refused_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    ControlIdentity::load_or_generate(tmp.path()).unwrap();
    let key = tmp.path().join(TLS_DIR).join(KEY_FILE);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = ControlIdentity::load_or_generate(tmp.path()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&key.display().to_string()), "{text}");
    assert!(text.contains("mode 644"), "{text}");
}

#[test]
fn half_an_identity_is_refused_not_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    ControlIdentity::load_or_generate(tmp.path()).unwrap();
    let cert = tmp.path().join(TLS_DIR).join(CERT_FILE);
    std::fs::remove_file(&cert).unwrap();
    let err = ControlIdentity::load_or_generate(tmp.path()).unwrap_err();
    assert!(
        err.to_string().contains(&cert.display().to_string()),
        "{err}"
    );
    assert!(!cert.exists(), "no new certificate beside the old key");
}

#[test]
fn a_linked_key_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    ControlIdentity::load_or_generate(tmp.path()).unwrap();
    let dir = tmp.path().join(TLS_DIR);
    std::fs::rename(dir.join(KEY_FILE), tmp.path().join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("elsewhere"), dir.join(KEY_FILE)).unwrap();
    let err = ControlIdentity::load_or_generate(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
}

#[test]
fn a_certificate_with_another_key_is_refused() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    ControlIdentity::load_or_generate(a.path()).unwrap();
    ControlIdentity::load_or_generate(b.path()).unwrap();
    let cert = a.path().join(TLS_DIR).join(CERT_FILE);
    let key = b.path().join(TLS_DIR).join(KEY_FILE);
    let err = ControlIdentity::from_files(&cert, &key).unwrap_err();
    assert!(
        err.to_string().contains(&cert.display().to_string()),
        "{err}"
    );
}

#[test]
fn files_that_are_not_pem_are_refused_without_quoting_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = (tmp.path().join("c.pem"), tmp.path().join("k.pem"));
    std::fs::write(&cert, "hello").unwrap();
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nSECRETSECRET\n").unwrap();
    let err = ControlIdentity::from_files(&cert, &key).unwrap_err();
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
    ControlIdentity::load_or_generate(tmp.path()).unwrap();
    let good = tmp.path().join(TLS_DIR).join(CERT_FILE);
    let err = ControlIdentity::from_files(&good, &key).unwrap_err();
    assert!(err.to_string().contains("not a PEM private key"), "{err}");
    assert!(!err.to_string().contains("SECRET"), "{err}");
    // A huge file is not read whole.
    let big = tmp.path().join("big.pem");
    std::fs::write(&big, vec![b'a'; MAX_PEM_BYTES as usize + 1]).unwrap();
    let err = ControlIdentity::from_files(&big, &key).unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
}

#[test]
fn a_fingerprint_reads_back_as_written() {
    let fp = Fingerprint::of(b"certificate");
    let text = fp.to_string();
    assert!(
        text.starts_with("sha256:") && text.len() == 7 + 64,
        "{text}"
    );
    assert_eq!(text, text.to_lowercase());
    assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
    assert_eq!(
        text.to_uppercase()
            .replace("SHA256", "sha256")
            .parse::<Fingerprint>()
            .unwrap(),
        fp
    );
    let json = serde_json::to_string(&fp).unwrap();
    assert_eq!(json, format!("\"{text}\""));
    assert_eq!(serde_json::from_str::<Fingerprint>(&json).unwrap(), fp);
    for bad in [
        "",
        &text[7..],
        "sha1:abcd",
        &text[..70],
        &format!("{text}00"),
        &format!("sha256:{}", "g".repeat(64)),
        &format!("sha256:{}é", "a".repeat(62)),
    ] {
        assert!(bad.parse::<Fingerprint>().is_err(), "{bad} accepted");
    }
    let err = serde_json::from_str::<Fingerprint>("\"sha256:12\"").unwrap_err();
    assert!(err.to_string().contains("not 64 digits"), "{err}");
}

/// Runs a handshake over an in-memory pipe; the client's error, if any.
async fn handshake(server: &ControlIdentity, pinned: &Fingerprint) -> Result<String, String> {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(server.server_config());
    let connector = tokio_rustls::TlsConnector::from(pinned_client_config(pinned));
    let serving = tokio::spawn(async move {
        let mut tls = acceptor.accept(b).await.map_err(|e| e.to_string())?;
        let mut got = String::new();
        tls.read_to_string(&mut got)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(got)
    });
    let name = server_name("control.example").unwrap();
    let client = async {
        let mut tls = connector
            .connect(name, a)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"secret hello")
            .await
            .map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())
    };
    let sent = client.await;
    let received = serving.await.unwrap();
    sent?;
    received
}

#[tokio::test]
async fn a_pinned_client_accepts_its_certificate_whatever_the_name() {
    let tmp = tempfile::tempdir().unwrap();
    let id = ControlIdentity::load_or_generate(tmp.path()).unwrap();
    assert_eq!(
        handshake(&id, &id.fingerprint).await.unwrap(),
        "secret hello"
    );
}

#[tokio::test]
async fn a_pinned_client_refuses_another_certificate_before_sending_anything() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let real = ControlIdentity::load_or_generate(a.path()).unwrap();
    let impostor = ControlIdentity::load_or_generate(b.path()).unwrap();
    let err = handshake(&impostor, &real.fingerprint).await.unwrap_err();
    // rustls shows the mismatch with Debug; `dial` turns it into words (see its tests).
    let expected = format!(
        "PinMismatch {{ presented: {}, pinned: {} }}",
        impostor.fingerprint, real.fingerprint
    );
    assert!(err.contains(&expected), "{err}");
}

#[tokio::test]
async fn an_impostor_presenting_the_pinned_certificate_without_its_key_is_refused() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let real = ControlIdentity::load_or_generate(a.path()).unwrap();
    ControlIdentity::load_or_generate(b.path()).unwrap();
    // The impostor has the real (public) certificate, but signs with its own key: rustls
    // refuses such a pair at load, so build the server config past that check.
    let key = PrivateKeyDer::from_pem_file(b.path().join(TLS_DIR).join(KEY_FILE)).unwrap();
    let signer = provider().key_provider.load_private_key(key).unwrap();
    let certified = rustls::sign::CertifiedKey::new(vec![real.cert_der.clone()], signer);
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    let impostor = ControlIdentity {
        server: Arc::new(config),
        ..ControlIdentity::load_or_generate(b.path()).unwrap()
    };
    let err = handshake(&impostor, &real.fingerprint).await.unwrap_err();
    assert!(!err.contains("secret hello"), "{err}");
}

#[test]
fn server_names_accept_hosts_and_addresses() {
    assert!(server_name("localhost").is_ok());
    assert!(server_name("10.1.2.3").is_ok());
    assert!(server_name("[::1]").is_ok());
    assert!(server_name("not a name!").is_err());
}

#[tokio::test]
async fn frames_inside_tls_are_still_bounded() {
    use crate::framing::{Connection, FramingError};
    let tmp = tempfile::tempdir().unwrap();
    let id = ControlIdentity::load_or_generate(tmp.path()).unwrap();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(id.server_config());
    let connector = tokio_rustls::TlsConnector::from(pinned_client_config(&id.fingerprint));
    let writer = tokio::spawn(async move {
        let mut tls = connector
            .connect(server_name("localhost").unwrap(), a)
            .await
            .unwrap();
        // 4 MiB without a newline: the reader must give up long before.
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..64 {
            if tls.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    let tls = acceptor.accept(b).await.unwrap();
    let mut conn = Connection::with_max_frame(tls, 1024);
    let err = conn.recv::<String>().await.unwrap_err();
    assert!(matches!(err, FramingError::TooLarge), "{err}");
    drop(conn);
    let _ = writer.await;
}
