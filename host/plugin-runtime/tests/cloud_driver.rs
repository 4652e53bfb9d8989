//! Cloud drivers as sandboxed components (`wit/cloud-driver.wit`).
//!
//! The EC2 driver runs against moto's EC2 mock (`moto_server`, from PyPI's `moto[server]`),
//! a stand-in for the cloud's API started by each test on a loopback port: what the driver
//! launched is checked by asking moto directly. A hostile driver tries what a malicious one
//! would (other origins, schemes, redirects, endless loops, huge answers, leaking secrets,
//! looking around) against a small HTTP server of the test's own.

mod common;
#[path = "../../../tests/common/moto.rs"]
mod moto;

use base64::Engine as _;
use common::shared_runtime;
use moto::{ACCESS_KEY_ID, IMAGE, Moto, free_port, tag};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use stratus_plugin_runtime::cloud_driver::{
    CloudDriver, DriverConfig, DriverError, MAX_REQUESTS_PER_CALL, MAX_RESPONSE_BYTES,
    ServerHandle, ServerState,
};

const SECRET_ACCESS_KEY: &str = "stratus/SECRET+never-shown-0123456789ab";
const CREDENTIAL: &str = "agent-credential-9f8e7d6c5b4a";

fn bootstrap() -> String {
    serde_json::json!({
        "control": "127.0.0.1:7000",
        "fingerprint": format!("sha256:{}", "ab".repeat(32)),
        "deployment": "shop",
        "server_id": "app-1",
        "address": "127.0.0.1",
        "credential": CREDENTIAL,
    })
    .to_string()
}

fn config(origin: &str, settings: &[(&str, &str)]) -> DriverConfig {
    DriverConfig {
        settings: settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        secrets: vec![
            ("access-key-id".into(), ACCESS_KEY_ID.into()),
            ("secret-access-key".into(), SECRET_ACCESS_KEY.into()),
        ],
        http: vec![origin.parse().unwrap()],
    }
}

fn ec2_config(moto: &Moto) -> DriverConfig {
    config(
        &moto.origin(),
        &[
            ("endpoint", &moto.origin()),
            ("region", "us-east-1"),
            ("image", IMAGE),
            ("instance-type", "t3.micro"),
        ],
    )
}

async fn driver(name: &str) -> CloudDriver {
    let package = stratus_plugin_artifacts::package_dir(name);
    shared_runtime().load_cloud_driver(&package).await.unwrap()
}

/// No secret of the tests appears in `text`.
fn assert_no_secret(text: &str) {
    for secret in [SECRET_ACCESS_KEY, CREDENTIAL, "never-shown"] {
        assert!(!text.contains(secret), "a secret leaked: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ec2_driver_launches_describes_and_terminates_on_moto() {
    let moto = Moto::start();
    let ec2 = driver("ec2-driver").await;
    let config = ec2_config(&moto);
    let boot = bootstrap();

    let handle = ec2.launch("shop-app-1", &boot, &config).await.unwrap();
    assert!(handle.id.starts_with("i-"), "{handle:?}");
    assert!(handle.address.is_some(), "moto gives a private address");

    // What moto holds: one instance, tagged with the server's name, the bootstrap as user-data.
    let described = moto.ec2(&format!(
        "Action=DescribeInstances&InstanceId.1={}",
        handle.id
    ));
    assert_eq!(tag(&described, "instanceType"), Some("t3.micro"));
    assert_eq!(tag(&described, "imageId"), Some(IMAGE));
    assert!(
        described.contains("<value>shop-app-1</value>"),
        "{described}"
    );
    let user_data = moto.ec2(&format!(
        "Action=DescribeInstanceAttribute&InstanceId={}&Attribute=userData",
        handle.id
    ));
    let encoded = tag(&user_data, "value").expect(&user_data);
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), boot);

    assert_eq!(
        ec2.describe(&handle, &config).await.unwrap(),
        ServerState::Running
    );
    ec2.terminate(&handle, &config).await.unwrap();
    let after = moto.ec2(&format!(
        "Action=DescribeInstances&InstanceId.1={}",
        handle.id
    ));
    assert!(after.contains("<name>terminated</name>"), "{after}");
    assert_eq!(
        ec2.describe(&handle, &config).await.unwrap(),
        ServerState::Gone
    );
    // Ending a server that is already gone succeeds; one the cloud never had is gone.
    ec2.terminate(&handle, &config).await.unwrap();
    let unknown = ServerHandle {
        id: "i-0123456789abcdef0".into(),
        address: None,
    };
    assert_eq!(
        ec2.describe(&unknown, &config).await.unwrap(),
        ServerState::Gone
    );
}

/// moto checks SigV4 once its first three (unauthenticated) actions made a user with an
/// access key: the driver's signature is accepted, one made with a wrong secret is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_accepts_the_ec2_drivers_signature_and_refuses_a_wrong_one() {
    let moto = Moto::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "3")]);
    moto.iam("Action=CreateUser&UserName=stratus");
    let policy =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    let encoded: String = policy
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    moto.iam(&format!(
        "Action=PutUserPolicy&UserName=stratus&PolicyName=all&PolicyDocument={encoded}"
    ));
    let key = moto.iam("Action=CreateAccessKey&UserName=stratus");
    let key_id = tag(&key, "AccessKeyId").expect(&key).to_owned();
    let secret = tag(&key, "SecretAccessKey").expect(&key).to_owned();

    let ec2 = driver("ec2-driver").await;
    let mut config = ec2_config(&moto);
    config.secrets = vec![
        ("access-key-id".into(), key_id),
        ("secret-access-key".into(), secret.clone()),
    ];
    let handle = ec2
        .launch("shop-app-1", &bootstrap(), &config)
        .await
        .unwrap();
    assert_eq!(
        ec2.describe(&handle, &config).await.unwrap(),
        ServerState::Running
    );

    config.secrets[1].1 = format!("{secret}x");
    let err = ec2.describe(&handle, &config).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("DescribeInstances failed"), "{text}");
    assert!(text.contains("(AuthFailure)"), "{text}");
    assert!(!text.contains(&secret), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ec2_driver_names_what_is_wrong_and_shows_no_secret() {
    let moto = Moto::start();
    let ec2 = driver("ec2-driver").await;
    let boot = bootstrap();

    // No region: refused before any request.
    let mut config = ec2_config(&moto);
    config.settings.retain(|(k, _)| k != "region");
    let err = ec2.launch("shop-app-1", &boot, &config).await.unwrap_err();
    assert!(err.to_string().contains("no setting `region`"), "{err}");

    // An endpoint the operator did not grant: the host refuses, both sides name it.
    let mut config = ec2_config(&moto);
    let elsewhere = format!("http://127.0.0.1:{}", free_port());
    config.settings[0].1 = elsewhere.clone();
    let err = ec2.launch("shop-app-1", &boot, &config).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("the host refused a request"), "{text}");
    assert!(
        text.contains(&format!(
            "{elsewhere} is not granted (granted: {})",
            moto.origin()
        )),
        "{text}"
    );
    assert!(!err.retryable(), "{text}");
    assert_no_secret(&text);

    // A subnet EC2 does not know: its own error, code and message, without the secret.
    let mut config = ec2_config(&moto);
    config
        .settings
        .push(("subnet".into(), "subnet-00000000".into()));
    let err = ec2.launch("shop-app-1", &boot, &config).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "cloud driver `ec2-driver` failed: RunInstances failed: The subnet ID \
         'subnet-00000000' does not exist (InvalidSubnetID.NotFound)"
    );
    assert!(!err.retryable());
    assert_no_secret(&format!("{config:?}"));
}

/// A loopback HTTP/1.0 server answering by path: `/ok`, `/redirect` (302 to `/ok` of
/// `redirect_to`), `/huge` (64 MiB without a length), `/huge-declared` (a 64 MiB length),
/// `/trickle` (a byte a second). Stopped when dropped.
struct TestServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    fn start(redirect_to: u16) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let stopping = stopping.clone();
                    std::thread::spawn(move || serve(conn, redirect_to, &stopping));
                }
            }
        });
        TestServer {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut conn: TcpStream, redirect_to: u16, stop: &AtomicBool) {
    let mut line = String::new();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    if reader.read_line(&mut line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let _ = match path.as_str() {
        "/redirect" => write!(
            conn,
            "HTTP/1.0 302 Found\r\nLocation: http://127.0.0.1:{redirect_to}/ok\r\nContent-Length: 0\r\n\r\n"
        ),
        "/huge" | "/huge-declared" => {
            let length = if path == "/huge" {
                String::new()
            } else {
                format!("Content-Length: {}\r\n", 64u64 << 20)
            };
            let _ = write!(conn, "HTTP/1.0 200 OK\r\n{length}\r\n");
            let chunk = vec![b'x'; 1 << 16];
            for _ in 0..1024 {
                if stop.load(Ordering::SeqCst) || conn.write_all(&chunk).is_err() {
                    break;
                }
            }
            Ok(())
        }
        "/trickle" => {
            let _ = write!(conn, "HTTP/1.0 200 OK\r\n\r\n");
            for _ in 0..60 {
                if stop.load(Ordering::SeqCst) || conn.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            Ok(())
        }
        _ => write!(conn, "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    };
}

fn attack(server: &TestServer, attack: &str, url: &str) -> DriverConfig {
    config(
        &format!("http://127.0.0.1:{}", server.port),
        &[("attack", attack), ("url", url)],
    )
}

async fn attacked(config: &DriverConfig) -> DriverError {
    let hostile = driver("hostile-driver").await;
    let handle = ServerHandle {
        id: "i-1".into(),
        address: None,
    };
    hostile.describe(&handle, config).await.unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_reaches_only_its_granted_origin() {
    let other = TestServer::start(0);
    let server = TestServer::start(other.port);
    let granted = server.url("/ok");
    let err = attacked(&attack(&server, "get", &granted))
        .await
        .to_string();
    assert!(
        err.contains("status 200"),
        "the granted origin answers: {err}"
    );

    let denied = |err: &str, origin: &str| {
        assert!(err.contains("error ErrorCode::HttpRequestDenied"), "{err}");
        assert!(
            err.contains(&format!(
                "{origin} is not granted (granted: http://127.0.0.1:{})",
                server.port
            )),
            "{err}"
        );
    };
    // Another port of the same host.
    let err = attacked(&attack(&server, "get", &other.url("/ok")))
        .await
        .to_string();
    denied(&err, &format!("http://127.0.0.1:{}", other.port));
    // Another scheme on the granted host and port.
    let https = format!("https://127.0.0.1:{}/ok", server.port);
    let err = attacked(&attack(&server, "get", &https)).await.to_string();
    denied(&err, &format!("https://127.0.0.1:{}", server.port));
    // The same address under another name.
    let named = format!("http://localhost:{}/ok", server.port);
    let err = attacked(&attack(&server, "get", &named)).await.to_string();
    denied(&err, &format!("http://localhost:{}", server.port));
    // A scheme that is not HTTP at all never leaves the guest's request.
    let ftp = format!("ftp://127.0.0.1:{}/ok", server.port);
    let err = attacked(&attack(&server, "get", &ftp)).await.to_string();
    assert!(err.contains("error"), "{err}");
    assert!(!err.contains("status 200"), "{err}");
    // A redirect to another origin: the first answer arrives, following it is refused.
    let err = attacked(&attack(&server, "follow", &server.url("/redirect")))
        .await
        .to_string();
    assert!(err.contains("status 302"), "{err}");
    denied(&err, &format!("http://127.0.0.1:{}", other.port));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_is_bounded_in_answers_requests_and_time() {
    let server = TestServer::start(0);
    // An answer without a length is cut at the limit.
    let err = attacked(&attack(&server, "read-all", &server.url("/huge")))
        .await
        .to_string();
    let read: u64 = err
        .split("read ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect(&err);
    assert!(read <= MAX_RESPONSE_BYTES, "read {read}: {err}");
    assert!(
        err.contains("ended HTTP response body size exceeds limit"),
        "{err}"
    );
    // One that declares a larger length is refused before its body is read.
    let err = attacked(&attack(&server, "read-all", &server.url("/huge-declared")))
        .await
        .to_string();
    assert!(
        err.contains("error ErrorCode::HttpResponseBodySize"),
        "{err}"
    );
    // Requests per call are counted.
    let err = attacked(&attack(&server, "many", &server.url("/ok")))
        .await
        .to_string();
    assert!(
        err.contains(&format!("{MAX_REQUESTS_PER_CALL} answered")),
        "{err}"
    );
    assert!(err.contains("more than 32 requests in one call"), "{err}");
    // Spinning, sleeping in WASI and a trickling answer all end at the time limit (2 s); they
    // would take a minute or forever without it, so 20 s leaves room for a loaded machine.
    for (kind, url) in [
        ("loop", String::new()),
        ("sleep", String::new()),
        ("read-all", server.url("/trickle")),
    ] {
        let started = Instant::now();
        let err = attacked(&attack(&server, kind, &url)).await;
        let took = started.elapsed();
        assert!(
            matches!(err, DriverError::Timeout { limit_ms: 2000, .. }),
            "{kind}: {err}"
        );
        assert!(took < Duration::from_secs(20), "{kind} took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_cannot_leak_secrets_or_look_around() {
    let server = TestServer::start(0);
    let hostile = driver("hostile-driver").await;
    let boot = bootstrap();
    let config = attack(&server, "leak", "");
    let err = hostile
        .launch("shop-app-1", &boot, &config)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("secrets access-key-id="), "{err}");
    assert!(err.contains("****"), "{err}");
    assert_no_secret(&err);
    assert!(!err.contains(&boot), "{err}");
    // A secret refused as a URL is not logged or shown either.
    let leak_url = format!("http://{SECRET_ACCESS_KEY}.example/");
    let err = attacked(&attack(&server, "get", &leak_url))
        .await
        .to_string();
    assert_no_secret(&err);
    // A secret smuggled into the server handle (which the host stores and shows).
    let config = attack(&server, "leak-handle", "");
    let err = hostile
        .launch("shop-app-1", &boot, &config)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds a secret"), "{err}");
    assert_no_secret(&err);
    // No files, environment, arguments or sockets.
    let err = attacked(&attack(&server, "snoop", "")).await.to_string();
    for seen in ["/etc/passwd: refused", "env: 0", "args: 0", "tcp: refused"] {
        assert!(err.contains(seen), "{seen}: {err}");
    }
}

#[tokio::test]
async fn only_a_cloud_driver_package_loads_as_one() {
    let rt = shared_runtime();
    let scaler = stratus_plugin_artifacts::package_dir("threshold-scaler");
    let err = rt.load_cloud_driver(&scaler).await.err().unwrap();
    assert!(
        err.to_string()
            .contains("declares world `scaler`, but a provider needs a `cloud-driver` plugin"),
        "{err}"
    );
}

/// The cloud-driver provider in the control plane's registry: `[providers.ec2]` with
/// `type = "cloud-driver"` launches, describes and ends a server through the EC2 driver on
/// moto; the secret comes from key management by reference; an unreachable cloud is
/// `Unknown`, never `Gone`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_driver_provider_serves_the_registry() {
    use stratus_plugin_runtime::cloud_driver_provider::{CloudDriverFactory, KeyReader};
    use stratus_provider::{
        LaunchRequest, LocalProvider, Presence, ProviderRegistry, ProviderSettings, SettingValue,
    };
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let local = LocalProvider::new(dir.path().join("state"), dir.path().join("stratus"));
    let mut registry = ProviderRegistry::new(Arc::new(local));
    let keys: KeyReader = Arc::new(|key: &str| match key {
        "ec2-secret" => Ok(SECRET_ACCESS_KEY.to_string()),
        other => Err(format!("no key `{other}`")),
    });
    let runtime = shared_runtime();
    let source = Arc::new(move || Ok(runtime.clone()));
    registry.add_factory(Arc::new(CloudDriverFactory::new(source, keys)));
    let driver_dir = stratus_plugin_artifacts::package_dir("ec2-driver");
    let mut settings: ProviderSettings = moto
        .ec2_provider(&driver_dir, "ec2-secret")
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                moto::Setting::Text(s) => SettingValue::Text(s),
                moto::Setting::List(l) => SettingValue::List(l),
                moto::Setting::Key(k) => SettingValue::Key(k),
            };
            (k.to_string(), v)
        })
        .collect();
    registry
        .configure("shop", "ec2", "cloud-driver", &settings)
        .unwrap();
    let provider = registry.get("shop", "ec2").unwrap();
    let req = LaunchRequest {
        deployment: "shop".into(),
        server_id: "app-1".into(),
        server_name: "shop-app-1".into(),
        control_addr: "127.0.0.1:7000".parse().unwrap(),
        fingerprint: format!("sha256:{}", "ab".repeat(32)).parse().unwrap(),
        credential: CREDENTIAL.into(),
        agent_args: Vec::new(),
    };
    let server = provider.launch(req.clone()).await.unwrap();
    assert_eq!(server.handle.provider, "ec2");
    assert!(!server.address.is_unspecified(), "{server:?}");
    assert_no_secret(&server.handle.data.to_string());
    let id = server.handle.data["id"].as_str().unwrap().to_owned();
    let user_data = moto.ec2(&format!(
        "Action=DescribeInstanceAttribute&InstanceId={id}&Attribute=userData"
    ));
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(tag(&user_data, "value").expect(&user_data).trim())
        .unwrap();
    let bootstrap: serde_json::Value = serde_json::from_slice(&decoded).unwrap();
    assert_eq!(bootstrap, serde_json::to_value(req.bootstrap("")).unwrap());
    assert_eq!(bootstrap["credential"], CREDENTIAL);

    let found = registry.of("shop", &server.handle).unwrap();
    assert_eq!(found.describe(&server.handle).await, Presence::Exists);
    assert_eq!(found.root_of(&server.handle).unwrap(), "/");
    found
        .terminate(&server, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(found.describe(&server.handle).await, Presence::Gone);

    // A key management cannot give: the launch names the setting and the key.
    settings.insert(
        "secret-access-key".into(),
        SettingValue::Key("missing".into()),
    );
    registry
        .configure("shop", "ec2", "cloud-driver", &settings)
        .unwrap();
    let provider = registry.get("shop", "ec2").unwrap();
    let err = provider.launch(req).await.unwrap_err().to_string();
    assert!(
        err.contains("secrets.secret-access-key: cannot read key `missing`"),
        "{err}"
    );
    // A table without its grant is refused when it is declared, naming the setting.
    settings.remove("http");
    let err = registry
        .configure("shop", "bad", "cloud-driver", &settings)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("providers.bad.http: is missing"), "{err}");

    // The cloud gone quiet: the server is not known to be gone.
    drop(moto);
    let presence = found.describe(&server.handle).await;
    assert!(matches!(presence, Presence::Unknown(_)), "{presence:?}");
}
