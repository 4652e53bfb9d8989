//! What a server's agent needs to find and join its control plane, in one JSON file: the
//! control plane's address, the fingerprint of its certificate to pin, who the server is, and
//! the credential issued for it. A provider hands it to the server (the local provider writes
//! `<root>/agent/bootstrap.json`, a cloud driver puts it in the instance's user-data) and the
//! agent starts with `--bootstrap FILE`.

use crate::tls::Fingerprint;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The file name the local provider writes in `<root>/agent/`.
pub const BOOTSTRAP_FILE: &str = "bootstrap.json";
/// Mode of a bootstrap file: it holds the server's credential.
pub const BOOTSTRAP_MODE: u32 = 0o600;
/// Largest bootstrap file read: its fields are short (a cloud's user-data is 16 KiB at
/// most), so anything bigger is not one.
pub const MAX_BOOTSTRAP_BYTES: u64 = 64 * 1024;
/// The file in `<root>/agent/` where an agent keeps the credential that replaced its
/// bootstrap's (see `AgentRequest::ReplaceCredential`), mode [`BOOTSTRAP_MODE`].
pub const CREDENTIAL_FILE: &str = "credential";
/// Longest credential accepted (the control plane issues 64 hex digits).
pub const MAX_CREDENTIAL_BYTES: usize = 1024;

/// A server's bootstrap data. `Debug` shows no credential.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bootstrap {
    /// The control plane's agent listener, `host:port` (a name, an IPv4 address, or an IPv6
    /// address in brackets).
    pub control: String,
    /// The control plane's certificate: the agent accepts no other.
    pub fingerprint: Fingerprint,
    pub deployment: String,
    pub server_id: String,
    /// The server's own address; empty when the provider does not know it (a cloud gives it
    /// at boot), and then the agent takes the local address of its control connection and
    /// reports it in its hello.
    #[serde(default)]
    pub address: String,
    /// The secret issued for this server at launch; it proves who the agent is.
    pub credential: String,
}

impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrap")
            .field("control", &self.control)
            .field("fingerprint", &self.fingerprint)
            .field("deployment", &self.deployment)
            .field("server_id", &self.server_id)
            .field("address", &self.address)
            .field("credential", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("bootstrap file {}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("bootstrap file {}: larger than {MAX_BOOTSTRAP_BYTES} bytes", path.display())]
    TooLarge { path: std::path::PathBuf },
    #[error("bootstrap file {}: not a regular file (a FIFO, a device or a directory)", path.display())]
    NotAFile { path: std::path::PathBuf },
    /// `origin` is the file (or "bootstrap data"), `field` the JSON field when one is to blame.
    #[error("{origin}: {}{message}", field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
    Invalid {
        origin: String,
        field: Option<String>,
        message: String,
    },
}

impl Bootstrap {
    /// The bootstrap as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a bootstrap is plain strings")
    }

    /// Reads bootstrap JSON, naming the field at fault (`origin` says where it came from).
    pub fn from_json(text: &str, origin: &str) -> Result<Bootstrap, BootstrapError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let bootstrap: Bootstrap = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            // serde quotes a value of the wrong type: never the credential's.
            let message = match path.as_str() {
                "credential" => "not a string".to_string(),
                _ => e.into_inner().to_string(),
            };
            BootstrapError::Invalid {
                origin: origin.to_string(),
                field: (path != ".").then_some(path),
                message,
            }
        })?;
        bootstrap
            .check()
            .map_err(|(field, message)| BootstrapError::Invalid {
                origin: origin.to_string(),
                field: Some(field.to_string()),
                message,
            })?;
        Ok(bootstrap)
    }

    /// Reads a bootstrap file, at most [`MAX_BOOTSTRAP_BYTES`] of it.
    pub fn read(path: &Path) -> Result<Bootstrap, BootstrapError> {
        let io = |source| BootstrapError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Without blocking: a FIFO at the path would otherwise hold the agent at start forever.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(path)
            .map_err(io)?;
        if !file.metadata().map_err(io)?.is_file() {
            return Err(BootstrapError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let mut text = String::new();
        file.take(MAX_BOOTSTRAP_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
        if text.len() as u64 > MAX_BOOTSTRAP_BYTES {
            return Err(BootstrapError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        Bootstrap::from_json(&text, &format!("bootstrap file {}", path.display()))
    }

    /// Writes the bootstrap to `path` with mode [`BOOTSTRAP_MODE`], replacing what was there
    /// (a temporary file renamed over it, so no reader sees half a file and a link at `path`
    /// is replaced, not followed). Not synced to disk: the local provider writes one before
    /// each agent start, and only a crash of the machine loses it, which ends that agent too
    /// (one fsync per server was 1.3 % of the CPU a 1,000-server launch used).
    pub fn write(&self, path: &Path) -> Result<(), BootstrapError> {
        let io = |source| BootstrapError::Io {
            path: path.to_path_buf(),
            source,
        };
        let tmp = path.with_extension("json.tmp");
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(BOOTSTRAP_MODE)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(self.to_json().as_bytes()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// The host part of [`Bootstrap::control`] (brackets of an IPv6 address removed).
    pub fn control_host(&self) -> &str {
        split_host_port(&self.control)
            .map(|(h, _)| h)
            .unwrap_or(&self.control)
    }

    /// Whether the control plane is on this machine's loopback (`localhost`, 127.0.0.0/8, ::1).
    pub fn control_is_loopback(&self) -> bool {
        is_loopback_host(self.control_host())
    }

    /// The first field that is wrong, and why.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if let Err(why) = split_host_port(&self.control) {
            return Err(("control", why.into()));
        }
        for (field, value) in [
            ("deployment", &self.deployment),
            ("server_id", &self.server_id),
            ("credential", &self.credential),
        ] {
            if value.is_empty() {
                return Err((field, "empty".into()));
            }
        }
        check_credential(&self.credential).map_err(|why| ("credential", why))
    }
}

/// Why `credential` cannot be one (a bootstrap's, or one the control plane hands over later):
/// empty, longer than [`MAX_CREDENTIAL_BYTES`], or holding anything but printable ASCII.
pub fn check_credential(credential: &str) -> Result<(), String> {
    if credential.is_empty() {
        return Err("empty".into());
    }
    if credential.len() > MAX_CREDENTIAL_BYTES {
        return Err(format!("longer than {MAX_CREDENTIAL_BYTES} bytes"));
    }
    if !credential.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("holds spaces or control characters".into());
    }
    Ok(())
}

/// `host:port` split, the host without IPv6 brackets; why not when it is not one.
pub fn split_host_port(addr: &str) -> Result<(&str, u16), &'static str> {
    let (host, port) = addr.rsplit_once(':').ok_or("not host:port (no port)")?;
    let port: u16 = port.parse().map_err(|_| "not host:port (bad port)")?;
    if port == 0 {
        return Err("not host:port (port 0)");
    }
    let host = match host.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .ok_or("not host:port (unclosed [)")?,
        None if host.contains(':') => return Err("an IPv6 address needs brackets: [addr]:port"),
        None => host,
    };
    if host.is_empty() {
        return Err("not host:port (no host)");
    }
    Ok((host, port))
}

/// Whether `host` names this machine's loopback.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sample() -> Bootstrap {
        Bootstrap {
            control: "127.0.0.1:7000".into(),
            fingerprint: Fingerprint::of(b"cert"),
            deployment: "web".into(),
            server_id: "s-1".into(),
            address: "127.1.0.3".into(),
            credential: "c0ffee00deadbeef".into(),
        }
    }

    #[test]
    fn debug_shows_no_credential() {
        let shown = format!("{:?}", sample());
        assert!(!shown.contains("c0ffee00deadbeef"), "{shown}");
        assert!(
            shown.contains("<redacted>") && shown.contains("s-1"),
            "{shown}"
        );
    }

    #[test]
    fn a_bootstrap_round_trips_through_a_private_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(BOOTSTRAP_FILE);
        sample().write(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, BOOTSTRAP_MODE);
        assert_eq!(Bootstrap::read(&path).unwrap(), sample());
        // Written again over a link: the link is replaced, its target untouched.
        let target = tmp.path().join("target");
        std::fs::write(&target, "mine").unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        sample().write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "mine");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
    }

    #[test]
    fn bad_json_names_the_file_and_the_field() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("b.json");
        let mut json: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        json["fingerprint"] = "sha256:1234".into();
        std::fs::write(&path, json.to_string()).unwrap();
        let err = Bootstrap::read(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("field `fingerprint`"), "{err}");

        json["fingerprint"] = sample().fingerprint.to_string().into();
        json["credential"] = 987654321.into();
        let err = Bootstrap::from_json(&json.to_string(), "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("field `credential`"), "{err}");
        assert!(!err.contains("987654321"), "{err}");
        json["credential"] = "c0ffee".into();
        json["server_id"] = 5.into();
        let err = Bootstrap::from_json(&json.to_string(), "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("field `server_id`"), "{err}");

        json.as_object_mut().unwrap().remove("server_id");
        let err = Bootstrap::from_json(&json.to_string(), "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `server_id`"), "{err}");

        let err = Bootstrap::from_json("{not json", "x")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("x: "), "{err}");
    }

    #[test]
    fn wrong_values_are_named_without_echoing_the_credential() {
        type Spoil = fn(&mut Bootstrap);
        let cases: [(Spoil, &str); 6] = [
            (|b| b.control = "10.0.0.1".into(), "control"),
            (|b| b.control = "::1:7000".into(), "control"),
            (|b| b.control = ":7000".into(), "control"),
            (|b| b.deployment = String::new(), "deployment"),
            (|b| b.credential = "c0ffee 00deadbeef".into(), "credential"),
            (|b| b.credential = "x".repeat(2000), "credential"),
        ];
        for (spoil, field) in cases {
            let mut b = sample();
            spoil(&mut b);
            let err = Bootstrap::from_json(&b.to_json(), "x")
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("field `{field}`")), "{err}");
            assert!(!err.contains("c0ffee") && !err.contains("xxxx"), "{err}");
        }
    }

    #[test]
    fn a_cloud_servers_bootstrap_may_leave_the_address_to_the_agent() {
        let mut b = sample();
        b.address = String::new();
        assert_eq!(Bootstrap::from_json(&b.to_json(), "x").unwrap(), b);
        let mut json: serde_json::Value = serde_json::from_str(&b.to_json()).unwrap();
        json.as_object_mut().unwrap().remove("address");
        let read = Bootstrap::from_json(&json.to_string(), "x").unwrap();
        assert_eq!(read.address, "");
    }

    /// A FIFO at the bootstrap path used to hold the agent in `open` forever (no writer ever
    /// comes); a directory or a device is no bootstrap either.
    #[test]
    fn a_fifo_or_a_directory_is_refused_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo.json");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || tx.send(Bootstrap::read(&path).map(|_| ())));
        let got = rx.recv_timeout(std::time::Duration::from_secs(5));
        let err = got
            .expect("reading a FIFO returns")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
        assert!(err.contains(&fifo.display().to_string()), "{err}");
        let err = Bootstrap::read(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let err = Bootstrap::read(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn an_oversized_file_is_not_read_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("b.json");
        std::fs::write(&path, vec![b' '; MAX_BOOTSTRAP_BYTES as usize + 1]).unwrap();
        assert!(matches!(
            Bootstrap::read(&path),
            Err(BootstrapError::TooLarge { .. })
        ));
    }

    #[test]
    fn control_hosts_and_loopback() {
        let mut b = sample();
        assert_eq!(b.control_host(), "127.0.0.1");
        assert!(b.control_is_loopback());
        b.control = "[::1]:9".into();
        assert_eq!(b.control_host(), "::1");
        assert!(b.control_is_loopback());
        b.control = "LOCALHOST:9".into();
        assert!(b.control_is_loopback());
        b.control = "10.0.0.1:9".into();
        assert!(!b.control_is_loopback());
        b.control = "control.example:443".into();
        assert!(!b.control_is_loopback());
        assert_eq!(split_host_port("[fe80::1]:80"), Ok(("fe80::1", 80)));
        assert!(split_host_port("a:0").is_err());
    }
}
