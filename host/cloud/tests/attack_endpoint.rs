//! Strangers against the file endpoint's places, over real TLS on loopback: the endpoint on
//! 127.0.0.1 in this process, the agent from this process too (the control plane's own uid,
//! as the local provider's agents are), the stranger a program running as another user (a
//! plugin's program user) from many loopback addresses.

mod local_program;

use futures::future::BoxFuture;
use local_program::LocalProgram;
use std::sync::Arc;
use std::time::Duration;
use stratus_cloud::endpoint::{MAX_CONNECTIONS, MAX_UNPROVEN_LOCAL, MAX_UNPROVEN_PER_PEER};
use stratus_cloud::{AgentIdentity, Authorize, CloudFiles, FileEndpoint, RemoteFiles, Secret};
use stratus_protocol::tls::{ControlIdentity, pinned_client_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The stranger's uid: no user of the machine, no program user of a provider.
const STRANGER_UID: u32 = 0x6b5e_0001;

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

/// The agent of `shop`/`web-1` fetches `package` from the endpoint at `addr`.
async fn agent_fetches(
    addr: std::net::SocketAddr,
    identity: &ControlIdentity,
    package: &stratus_cloud::PackageRef,
) {
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
    agent.fetch_package(package).await.unwrap();
}

/// Every place used to go to whoever connected first: a stranger holding `MAX_CONNECTIONS`
/// silent connections (each renewed after the 10 s handshake limit) kept agents waiting past
/// their own 10 s connect limit. One peer then held at most `MAX_UNPROVEN_PER_PEER` before it
/// proved who it was, but the machine itself was not counted, so a local program (a plugin's,
/// as its own program user) still took every place. Now a local peer is its user: whatever
/// loopback addresses it connects from, it holds `MAX_UNPROVEN_PER_PEER`, the rest are closed
/// at once and the agent is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_program_of_another_user_cannot_take_every_place() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root (to run the stranger as another user)");
        return;
    }
    let (_tmp, addr, identity, package) = serving().await;
    let sources = [
        "127.0.0.1",
        "127.0.0.2",
        "127.0.0.3",
        "127.1.2.3",
        "127.255.0.9",
    ];
    let mut stranger = LocalProgram::hold(STRANGER_UID, addr, MAX_CONNECTIONS + 100, &sources);
    assert_eq!(
        stranger.open_once_settled(MAX_UNPROVEN_PER_PEER),
        MAX_UNPROVEN_PER_PEER,
        "the stranger's connections still open"
    );

    agent_fetches(addr, &identity, &package).await;
    drop(stranger);
}

/// One plugin on nine local servers has nine program users: 64 unproven connections each
/// took all 512 places. Now local programs together hold at most `MAX_UNPROVEN_LOCAL`, and
/// the agent is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_local_programs_together_cannot_take_every_place() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root (to run the strangers as other users)");
        return;
    }
    let (_tmp, addr, identity, package) = serving().await;
    let users = MAX_CONNECTIONS / MAX_UNPROVEN_PER_PEER + 1;
    let mut strangers: Vec<LocalProgram> = (0..users as u32)
        .map(|i| {
            LocalProgram::hold(
                STRANGER_UID + 16 + i,
                addr,
                MAX_UNPROVEN_PER_PEER,
                &["127.0.0.1", "127.0.0.2"],
            )
        })
        .collect();
    assert_eq!(
        local_program::open_together(&mut strangers, MAX_UNPROVEN_LOCAL),
        MAX_UNPROVEN_LOCAL,
        "the strangers' connections left open"
    );
    agent_fetches(addr, &identity, &package).await;
    drop(strangers);
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
