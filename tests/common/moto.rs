//! moto's server mode (`moto_server`, PyPI's `moto[server]`, installed by
//! scripts/install-deps.sh): a stand-in for the cloud's APIs (EC2, IAM, S3) on a loopback port,
//! started by a test and ended (by its pid) when dropped. Plain `std`, so that the plugin
//! runtime's tests include this file too (`#[path]`).

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An AMI moto knows (from its bundled list of default images).
pub const IMAGE: &str = "ami-12c6146b";
/// The region every test's moto is asked in.
pub const REGION: &str = "us-east-1";
/// An access key id of the shape AWS gives (moto accepts any without authentication).
pub const ACCESS_KEY_ID: &str = "AKIASTRATUSTEST00001";
/// How long moto may take to listen (a cold Python start on a loaded machine).
const START_LIMIT: Duration = Duration::from_secs(30);

pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    /// moto on a free loopback port, once it listens.
    pub fn start() -> Moto {
        Moto::start_with_env(&[])
    }

    /// [`Moto::start`] with extra environment (e.g. `INITIAL_NO_AUTH_ACTION_COUNT`).
    pub fn start_with_env(env: &[(&str, &str)]) -> Moto {
        let port = free_port();
        let mut cmd = Command::new("moto_server");
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start moto_server ({e}); install it with scripts/install-deps.sh")
        });
        let moto = Moto { child, port };
        let deadline = Instant::now() + START_LIMIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen in {START_LIMIT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// `http://127.0.0.1:PORT`: the endpoint and the origin a driver is granted.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An EC2 Query API call straight to moto, unsigned (moto does not check by default);
    /// the body of the answer.
    pub fn ec2(&self, form: &str) -> String {
        self.post("ec2", &format!("{form}&Version=2016-11-15"))
    }

    /// An IAM Query API call straight to moto, unsigned.
    pub fn iam(&self, form: &str) -> String {
        self.post("iam", &format!("{form}&Version=2010-05-08"))
    }

    /// An HTTP/1.0 form POST to `service`; the body of the answer. The `Authorization`
    /// header is not a signature: moto reads its scope to pick the service.
    pub fn post(&self, service: &str, form: &str) -> String {
        let port = self.port;
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let scope = format!("test/20260101/{REGION}/{service}/aws4_request");
        write!(
            s,
            "POST / HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\nAuthorization: AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host, Signature=0\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        match answer.split_once("\r\n\r\n") {
            Some((_, body)) => body.to_owned(),
            None => answer,
        }
    }

    /// The settings of a `type = "cloud-driver"` provider running the EC2 driver at `driver`
    /// against this moto, its secret access key the key `secret_key` of key management.
    pub fn ec2_provider(&self, driver: &Path, secret_key: &str) -> Vec<(&'static str, Setting)> {
        ec2_provider(&self.origin(), driver, secret_key)
    }
}

/// The settings of a `type = "cloud-driver"` provider running the EC2 driver at `driver`,
/// granted `origin` as its endpoint (a moto's, or a sink a test watches), its secret access
/// key the key `secret_key` of key management.
pub fn ec2_provider(origin: &str, driver: &Path, secret_key: &str) -> Vec<(&'static str, Setting)> {
    let text = |s: &str| Setting::Text(s.to_string());
    vec![
        ("driver", text(&driver.to_string_lossy())),
        ("http", Setting::List(vec![origin.to_string()])),
        ("endpoint", text(origin)),
        ("region", text(REGION)),
        ("image", text(IMAGE)),
        ("access-key-id", text(ACCESS_KEY_ID)),
        ("secret-access-key", Setting::Key(secret_key.to_string())),
    ]
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One setting of a provider table, as a test writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    Text(String),
    List(Vec<String>),
    /// The name of a key in key management (the setting's name ends in `-key`).
    Key(String),
}

/// `[providers.NAME]` with `type = "KIND"` and `settings`, as TOML text ending in a newline.
pub fn provider_table(name: &str, kind: &str, settings: &[(&str, Setting)]) -> String {
    let mut out = format!("[providers.{name}]\ntype = {kind:?}\n");
    for (k, v) in settings {
        let value = match v {
            Setting::Text(s) | Setting::Key(s) => format!("{s:?}"),
            Setting::List(l) => format!("{l:?}"),
        };
        out.push_str(&format!("{k} = {value}\n"));
    }
    out
}

/// The text of the first `<tag>` in `xml`.
pub fn tag<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

/// A free loopback port (bound, then released for the server about to take it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
