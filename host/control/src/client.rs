//! How the CLI reaches the control plane of a state directory, starting one in the
//! background when none runs.

use crate::paths::{CONTROL_TOKEN, StatePaths};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use stratus_cloud::KeyStore;
use stratus_protocol::{
    ClientStream, Connection, Envelope, FramingError, Hello, OperatorReply, OperatorRequest,
    Welcome,
};

/// Longest the CLI waits for the control port to accept it (TCP and TLS).
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no control plane is running for {0}")]
    NotRunning(String),
    #[error("the control plane refused us: {0}")]
    Refused(String),
    #[error("could not start the control plane: {0} (see {1})")]
    Start(String, String),
    #[error("control plane connection: {0}")]
    Framing(#[from] FramingError),
    /// The port answered, but not with the certificate `control.json` names.
    #[error("{0}")]
    Dial(stratus_protocol::DialError),
    /// The port accepted the connection and closed it before the TLS handshake ended: a
    /// control plane with every place for new connections taken (or another program).
    #[error(
        "the control plane did not let this client in ({0}); it may have no place for new \
         connections right now (see logs/dispatcher.log): try again"
    )]
    TurnedAway(stratus_protocol::DialError),
}

impl ClientError {
    /// Whether no control plane answers at all, so that starting one can help.
    fn is_not_running(&self) -> bool {
        matches!(self, ClientError::NotRunning(_))
    }
}

pub struct ControlClient {
    conn: Connection<ClientStream>,
    next_id: u64,
    pub pid: u32,
}

impl ControlClient {
    /// Connects to the running control plane of `state_dir`, pinning the certificate its
    /// `control.json` names.
    pub async fn connect(state_dir: &Path) -> Result<ControlClient, ClientError> {
        let paths = StatePaths::new(state_dir);
        let not_running = || ClientError::NotRunning(state_dir.display().to_string());
        let info = paths.control_info().ok_or_else(not_running)?;
        let token = KeyStore::open(paths.keys())
            .ok()
            .and_then(|k| k.get(CONTROL_TOKEN).ok().flatten())
            .ok_or_else(not_running)?;
        let address = info
            .address
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{}", info.port));
        let stream =
            match stratus_protocol::dial(&address, info.fingerprint.as_ref(), DIAL_TIMEOUT).await {
                Ok(s) => s,
                Err(e @ stratus_protocol::DialError::PinMismatch(_)) => {
                    return Err(ClientError::Dial(e));
                }
                // A control plane that died (or is dying: its threads still closing the port
                // it accepted on) left its file behind: only a running one turned us away.
                Err(e @ stratus_protocol::DialError::Tls(..))
                    if crate::process_runs::process_runs(info.pid) =>
                {
                    return Err(ClientError::TurnedAway(e));
                }
                Err(_) => return Err(not_running()),
            };
        let mut conn = Connection::new(stream);
        conn.send(&Hello::Operator {
            token: token.expose().to_string(),
        })
        .await?;
        match conn.recv::<Welcome>().await? {
            Welcome::Welcome { .. } => Ok(ControlClient {
                conn,
                next_id: 1,
                pid: info.pid,
            }),
            Welcome::Refused { reason } => Err(ClientError::Refused(reason)),
        }
    }

    /// Connects, starting `program serve` in the background first if nothing answers.
    pub async fn connect_or_start(
        state_dir: &Path,
        program: &Path,
    ) -> Result<ControlClient, ClientError> {
        // Only an absent control plane is started: one that answered and turned this client
        // away is named, not mistaken for none (its lock would stop the new one anyway).
        match ControlClient::connect(state_dir).await {
            Ok(c) => return Ok(c),
            Err(e) if !e.is_not_running() => return Err(e),
            Err(_) => {}
        }
        let paths = StatePaths::new(state_dir);
        let out_path = paths.control_out();
        let start_err = |e: String| ClientError::Start(e, out_path.display().to_string());
        std::fs::create_dir_all(paths.logs()).map_err(|e| start_err(e.to_string()))?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out_path)
            .map_err(|e| start_err(e.to_string()))?;
        let err = out.try_clone().map_err(|e| start_err(e.to_string()))?;
        let mut cmd = std::process::Command::new(program);
        cmd.arg("serve")
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--exit-when-idle")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // Its own process group: a Ctrl-C in the operator's terminal must not kill it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().map_err(|e| start_err(e.to_string()))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(c) = ControlClient::connect(state_dir).await {
                // Reap it in the background so it never lingers as a zombie of ours.
                std::thread::spawn(move || child.wait());
                return Ok(c);
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(start_err(format!("it exited with {status}")));
            }
            if Instant::now() > deadline {
                return Err(start_err("it did not answer within 20 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn request(&mut self, body: OperatorRequest) -> Result<OperatorReply, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.conn.send(&Envelope { id, body }).await?;
        loop {
            let reply: Envelope<OperatorReply> = self.conn.recv().await?;
            if reply.id == id {
                return Ok(reply.body);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::ControlInfo;
    use stratus_cloud::Secret;

    /// A state directory whose `control.json` names `pid` and a TLS port at an address
    /// where a listener takes each connection and closes it before any handshake.
    async fn state_behind_a_closing_port(pid: u32) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let paths = StatePaths::new(dir.path());
        KeyStore::open(paths.keys())
            .unwrap()
            .set(CONTROL_TOKEN, &Secret::new("t"))
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                drop(socket);
            }
        });
        let info = ControlInfo {
            pid,
            port,
            address: None,
            fingerprint: Some(stratus_protocol::Fingerprint::of(b"not this one")),
            http: None,
        };
        std::fs::write(paths.control_file(), serde_json::to_string(&info).unwrap()).unwrap();
        dir
    }

    #[tokio::test]
    async fn a_running_control_plane_that_closes_the_handshake_turns_the_client_away() {
        let dir = state_behind_a_closing_port(std::process::id()).await;
        let err = ControlClient::connect(dir.path()).await.err().unwrap();
        assert!(matches!(err, ClientError::TurnedAway(_)), "{err}");
    }

    /// A control plane that exited but whose threads still close its port (its process a
    /// zombie) is not running: a client may start another.
    #[tokio::test]
    async fn a_port_closing_behind_a_dead_control_plane_counts_as_none_running() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        while crate::process_runs::process_runs(pid) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let dir = state_behind_a_closing_port(pid).await;
        let err = ControlClient::connect(dir.path()).await.err().unwrap();
        child.wait().unwrap();
        assert!(err.is_not_running(), "{err}");
    }
}
