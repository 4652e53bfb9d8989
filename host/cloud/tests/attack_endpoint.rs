//! A stranger on another machine against the file endpoint's places: over real TLS on
//! loopback, the stranger connecting from 127.0.0.2 (another peer than the endpoint's own
//! address), the agent from 127.0.0.1.

use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stratus_cloud::endpoint::{MAX_CONNECTIONS, MAX_UNPROVEN_PER_PEER};
use stratus_cloud::{AgentIdentity, Authorize, CloudFiles, FileEndpoint, RemoteFiles, Secret};
use stratus_protocol::tls::{ControlIdentity, pinned_client_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

struct OneServer;

impl Authorize for OneServer {
    fn verify<'a>(
        &'a self,
        deployment: &'a str,
        server: &'a str,
        credential: &'a Secret,
    ) -> BoxFuture<'a, bool> {
        let ok = (deployment, server, credential.expose()) == ("shop", "web-1", "cred-shop");
        Box::pin(async move { ok })
    }
}

/// A connection from 127.0.0.2 that sends nothing.
async fn stranger(addr: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Whether the endpoint closed `tcp` within `limit`.
async fn closed(tcp: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(limit, tcp.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// A bucket with one package granted to `shop`, served on 127.0.0.1 with a fresh identity.
async fn serving() -> (
    tempfile::TempDir,
    std::net::SocketAddr,
    ControlIdentity,
    stratus_cloud::PackageRef,
) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("pkg");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("plugin.toml"), "name = 'app'").unwrap();
    std::fs::write(src.join("plugin.wasm"), b"\0asm").unwrap();
    let files = CloudFiles::local(tmp.path().join("bucket")).unwrap();
    let package = files.put_package("shop-app", &src).await.unwrap();
    files.grant_package("shop", &package).await.unwrap();
    let identity = ControlIdentity::load_or_generate(tmp.path()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let endpoint = FileEndpoint::new(files, Arc::new(OneServer), identity.server_config());
    tokio::spawn(endpoint.serve(listener));
    (tmp, addr, identity, package)
}

/// Every place used to go to whoever connected first: a stranger holding `MAX_CONNECTIONS`
/// silent connections (each renewed after the 10 s handshake limit) kept agents waiting past
/// their own 10 s connect limit. Now one peer holds at most `MAX_UNPROVEN_PER_PEER` before it
/// proves who it is; the rest are closed at once and the agent is served meanwhile.
#[tokio::test]
async fn a_stranger_cannot_take_every_place() {
    let (_tmp, addr, identity, package) = serving().await;

    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS + 100 {
        held.push(stranger(addr).await);
    }
    // The first MAX_UNPROVEN_PER_PEER are handshaking; every one beyond is closed at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut open = 0;
    for tcp in &mut held {
        if !closed(tcp, Duration::from_millis(20)).await {
            open += 1;
        }
    }
    assert_eq!(
        open, MAX_UNPROVEN_PER_PEER,
        "the stranger's connections still open"
    );

    let agent = RemoteFiles::new(
        &format!("https://{addr}"),
        pinned_client_config(&identity.fingerprint),
        AgentIdentity {
            deployment: "shop".into(),
            server_id: "web-1".into(),
            credential: Secret::new("cred-shop"),
        },
    )
    .unwrap();
    let started = Instant::now();
    let fetched = agent.fetch_package(&package).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the agent waited {:?} behind the stranger",
        started.elapsed()
    );
    drop(fetched);
}

/// A refused request ends its connection: a peer that has not proven who it is used to keep
/// a place for as long as it sent a wrong credential every few seconds (the head limit
/// restarts with each request), and could pipeline refusals by the thousand.
#[tokio::test]
async fn a_refused_request_ends_its_connection() {
    let (_tmp, addr, identity, _package) = serving().await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(pinned_client_config(&identity.fingerprint));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let forged = format!(
        "GET /v1/objects/sha256/{} HTTP/1.1\r\nhost: x\r\nx-stratus-deployment: shop\r\n\
         x-stratus-server: web-1\r\nauthorization: Bearer guess\r\n\r\n",
        "0".repeat(64)
    );
    let not_hex = "GET /v1/objects/sha256/zz HTTP/1.1\r\nhost: x\r\n\r\n";
    tls.write_all(format!("{forged}{not_hex}{forged}").as_bytes())
        .await
        .unwrap();
    let mut answers = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answers)).await;
    assert!(read.is_ok(), "the connection was kept open after a refusal");
    let answers = String::from_utf8_lossy(&answers);
    assert_eq!(answers.matches("HTTP/1.1 ").count(), 1, "{answers}");
    assert!(answers.starts_with("HTTP/1.1 401 "), "{answers}");
}
