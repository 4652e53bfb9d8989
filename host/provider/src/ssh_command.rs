//! Running a script on a host through the system `ssh`: host keys pinned by the operator's
//! known_hosts, the private key from key management in a 0600 file that lives only as long as
//! the call, no configuration file, agent, forwarding or terminal, and every argument of the
//! script shell-quoted. What goes to the host's stdin (the agent binary, a bootstrap) never
//! appears on any command line.

use crate::ssh_settings::SshSettings;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads a key from key management by name, or says why not (the error names no secret).
pub type KeyReader = Arc<dyn Fn(&str) -> Result<String, String> + Send + Sync>;

/// Most bytes of a script's stdout or stderr kept: a hostile host may send without end.
pub const MAX_OUTPUT: u64 = 64 * 1024;
/// Most characters of a host's stderr quoted in an error.
const MAX_QUOTED: usize = 400;
/// The exit status `ssh` gives when it could not reach or log in to the host.
const SSH_FAILED: i32 = 255;

/// Quotes `s` for a POSIX shell: one single-quoted word whatever it holds.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What a script sends to the host on stdin.
pub(crate) enum Input<'a> {
    Nothing,
    Bytes(&'a [u8]),
    File(&'a Path),
}

/// What a script run on a host printed, once it exited 0.
#[derive(Debug)]
pub(crate) struct Output {
    pub stdout: String,
}

/// Why a script did not run to success on a host.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SshError {
    /// No answer within the limit, or `ssh` could not connect or log in: the host is
    /// unreachable as far as the provider can tell.
    #[error("host {host} is unreachable over SSH: {reason}")]
    Unreachable { host: Ipv4Addr, reason: String },
    /// The script ran and failed.
    #[error("on host {host}, {what} failed (exit status {status}): {stderr}")]
    Failed {
        host: Ipv4Addr,
        what: &'static str,
        status: i32,
        stderr: String,
    },
    /// Nothing could be started here (no `ssh`, no key).
    #[error("{0}")]
    Local(String),
}

/// Runs scripts on the hosts of one provider.
#[derive(Clone)]
pub(crate) struct Ssh {
    pub settings: Arc<SshSettings>,
    pub keys: KeyReader,
    /// Where the private key's short-lived files go (mode 0700).
    pub key_dir: PathBuf,
    /// Where the multiplexing masters' sockets go (mode 0700); `None`: every call makes its
    /// own connection.
    pub control_dir: Option<PathBuf>,
}

impl Ssh {
    /// Runs `script` (a constant `sh` script reading `"$1"`…) with `args` on `host`, `stdin`
    /// on its input, within `limit` beyond the connection's own timeout.
    pub async fn run(
        &self,
        host: Ipv4Addr,
        what: &'static str,
        script: &str,
        args: &[&str],
        stdin: Input<'_>,
        limit: Duration,
    ) -> Result<Output, SshError> {
        let key = KeyFile::write(&self.key_dir, &self.read_key()?)?;
        if let Some(dir) = &self.control_dir {
            private_dir(dir)
                .map_err(|e| SshError::Local(format!("making {}: {e}", dir.display())))?;
        }
        let mut cmd = self.command(host, key.path(), &remote_command(script, args));
        let limit = limit + self.settings.connect_timeout;
        let unreachable = |reason: String| SshError::Unreachable { host, reason };
        let run = async {
            let mut child = cmd
                .spawn()
                .map_err(|e| SshError::Local(format!("cannot run ssh: {e}")))?;
            let feed = feed(child.stdin.take(), stdin);
            let out = read_bounded(child.stdout.take());
            let err = read_bounded(child.stderr.take());
            let (fed, stdout, stderr) = tokio::join!(feed, out, err);
            let status = child
                .wait()
                .await
                .map_err(|e| SshError::Local(e.to_string()))?;
            Ok::<_, SshError>((fed, status, stdout, stderr))
        };
        let (fed, status, stdout, stderr) = tokio::time::timeout(limit, run)
            .await
            .map_err(|_| unreachable(format!("no answer within {}s", limit.as_secs())))??;
        drop(key);
        let stderr = shown(&stderr);
        match status.code() {
            Some(0) if fed.is_ok() => Ok(Output {
                stdout: String::from_utf8_lossy(&stdout).into_owned(),
            }),
            Some(0) => Err(SshError::Local(format!(
                "sending {what}'s input to {host}: {}",
                fed.err().unwrap_or_default()
            ))),
            Some(SSH_FAILED) | None => Err(unreachable(stderr)),
            Some(status) => Err(SshError::Failed {
                host,
                what,
                status,
                stderr,
            }),
        }
    }

    fn read_key(&self) -> Result<String, SshError> {
        let name = &self.settings.identity_key;
        (self.keys)(name).map_err(|e| {
            SshError::Local(format!(
                "reading `identity-key` {name:?} from key management: {e}"
            ))
        })
    }

    /// `ssh` with every option pinned here, none from a configuration file or the environment.
    fn command(&self, host: Ipv4Addr, key: &Path, remote: &str) -> tokio::process::Command {
        let s = &self.settings;
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .args(["-F", "/dev/null", "-T", "-a", "-x"])
            .args(ssh_options(s, self.control_dir.as_deref()))
            .arg("-i")
            .arg(escaped(&key.to_string_lossy()))
            .args(["-p", s.port.to_string().as_str(), "-l", s.user.as_str()])
            .args(["--", host.to_string().as_str(), remote])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(home) = std::env::var_os("HOME") {
            cmd.env("HOME", home);
        }
        cmd
    }
}

/// How long a multiplexing master outlives its last call: the calls of one launch and the
/// presence checks of a recovery pass share a connection, and a host is left with no session
/// of Stratus's soon after its last call.
pub const MUX_PERSIST: Duration = Duration::from_secs(5);
/// Longest path of a master's socket (`sun_path` holds 108 bytes; ssh appends a suffix to
/// a temporary name while it binds).
const MAX_CONTROL_PATH: usize = 80;

/// Where a provider's multiplexing sockets go under `base`, if the path fits a socket and
/// needs no quoting in an `-o` option (`%C` adds 40 hex digits).
pub(crate) fn control_dir(base: &Path) -> Option<PathBuf> {
    let text = base.to_str()?;
    let plain = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'));
    (plain && text.len() + 1 + 40 <= MAX_CONTROL_PATH).then(|| base.to_path_buf())
}

/// A path as ssh reads it where it expands `%` tokens.
fn escaped(path: &str) -> String {
    path.replace('%', "%%")
}

fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The `-o` options of every call: keys pinned, no prompts, nothing forwarded or updated; the
/// connection shared through a master in `control_dir`. A dead master (a host cut off) is
/// noticed within twice the connect timeout.
fn ssh_options(s: &SshSettings, control_dir: Option<&Path>) -> Vec<String> {
    let alive = s.connect_timeout.as_secs().max(1);
    let mut options = vec![
        "BatchMode=yes".to_string(),
        "StrictHostKeyChecking=yes".into(),
        format!(
            "UserKnownHostsFile={}",
            escaped(&s.known_hosts.to_string_lossy())
        ),
        "GlobalKnownHostsFile=/dev/null".into(),
        "UpdateHostKeys=no".into(),
        "CheckHostIP=no".into(),
        "IdentitiesOnly=yes".into(),
        "IdentityAgent=none".into(),
        "PasswordAuthentication=no".into(),
        "KbdInteractiveAuthentication=no".into(),
        "ClearAllForwardings=yes".into(),
        "PermitLocalCommand=no".into(),
        format!("ConnectTimeout={}", s.connect_timeout.as_secs()),
        format!("ServerAliveInterval={alive}"),
        "ServerAliveCountMax=1".into(),
        "LogLevel=ERROR".into(),
    ];
    match control_dir {
        Some(dir) => options.extend([
            "ControlMaster=auto".to_string(),
            format!("ControlPath={}/%C", dir.display()),
            format!("ControlPersist={}", MUX_PERSIST.as_secs()),
        ]),
        None => options.push("ControlMaster=no".into()),
    }
    options
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
}

/// The command line the host's login shell runs: `sh -c SCRIPT sh ARGS…`, every word quoted.
pub(crate) fn remote_command(script: &str, args: &[&str]) -> String {
    let mut words = vec!["sh".to_string(), "-c".into(), quote(script), "sh".into()];
    words.extend(args.iter().map(|a| quote(a)));
    words.join(" ")
}

async fn feed(pipe: Option<tokio::process::ChildStdin>, input: Input<'_>) -> Result<(), String> {
    let Some(mut pipe) = pipe else {
        return Ok(());
    };
    let sent = match input {
        Input::Nothing => Ok(()),
        Input::Bytes(b) => pipe.write_all(b).await,
        Input::File(path) => match tokio::fs::File::open(path).await {
            Ok(mut f) => tokio::io::copy(&mut f, &mut pipe).await.map(|_| ()),
            Err(e) => Err(e),
        },
    };
    // Closing stdin is the end of input for the script's `cat`.
    let _ = pipe.shutdown().await;
    drop(pipe);
    sent.map_err(|e| e.to_string())
}

async fn read_bounded<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(pipe) = pipe {
        let _ = pipe.take(MAX_OUTPUT).read_to_end(&mut out).await;
    }
    out
}

/// A host's stderr as an error may quote it: its last lines (ssh ends with the summary, after
/// any banner), on one line, control characters escaped, bounded.
fn shown(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '@'))
        .collect();
    let text = lines[lines.len().saturating_sub(3)..].join(" ");
    let count = text.chars().count();
    if count == 0 {
        return "no message".into();
    }
    let mut out: String = text
        .chars()
        .skip(count.saturating_sub(MAX_QUOTED))
        .collect();
    if count > MAX_QUOTED {
        out.insert(0, '…');
    }
    out.escape_debug().to_string()
}

/// The private key in a file only its owner reads, for `ssh -i`; removed when dropped.
pub(crate) struct KeyFile(PathBuf);

impl KeyFile {
    pub fn write(dir: &Path, key: &str) -> Result<KeyFile, SshError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let local = |e: std::io::Error| {
            SshError::Local(format!(
                "writing the SSH key file in {}: {e}",
                dir.display()
            ))
        };
        private_dir(dir).map_err(local)?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("id-{}-{n}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(local)?;
        let guard = KeyFile(path);
        // OpenSSH reads a key only when it ends with a newline; key management trims it.
        file.write_all(key.trim_end().as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .map_err(local)?;
        Ok(guard)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `sh` makes of a quoted word: exactly the original bytes, whatever they are.
    fn through_sh(word: &str) -> String {
        let line = format!("printf %s {}", quote(word));
        let out = std::process::Command::new("sh")
            .args(["-c", &line])
            .output()
            .unwrap();
        assert!(out.status.success(), "{line}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn hostile_words_reach_the_shell_unchanged() {
        for word in [
            "",
            "plain",
            "it's",
            "'",
            "''",
            "'\\''",
            "$(touch /tmp/pwned)",
            "`id`",
            "a; rm -rf /",
            "a && b || c | d & e",
            "\"double\" $HOME ${PATH}",
            "new\nline",
            "tab\there",
            "*?[a-z]~",
            "-n",
            "\\",
            "é ü 日本",
            "#comment",
            "!event",
        ] {
            assert_eq!(through_sh(word), word, "{word:?}");
        }
    }

    #[test]
    fn a_remote_command_passes_every_argument_as_one_word() {
        let script = r#"for a in "$@"; do printf '[%s]' "$a"; done"#;
        let line = remote_command(script, &["a b", "it's", "$(x)", ""]);
        let out = std::process::Command::new("sh")
            .args(["-c", &line])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "[a b][it's][$(x)][]"
        );
    }

    #[test]
    fn multiplexing_only_where_the_socket_path_fits_and_needs_no_quoting() {
        assert!(control_dir(Path::new("/var/lib/stratus/ssh/cm")).is_some());
        assert!(control_dir(Path::new("/tmp/a b/ssh/cm")).is_none());
        assert!(control_dir(Path::new("/tmp/100%/ssh/cm")).is_none());
        assert!(control_dir(&Path::new("/").join("x".repeat(60))).is_none());
        assert_eq!(escaped("/s/100%/k"), "/s/100%%/k");
    }

    #[test]
    fn the_key_file_is_private_and_gone_when_dropped() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key_dir = dir.path().join("ssh");
        let file = KeyFile::write(&key_dir, "-----BEGIN KEY-----\nabc\n-----END KEY-----").unwrap();
        let path = file.path().to_path_buf();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let dir_mode = std::fs::metadata(&key_dir).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .ends_with("-----END KEY-----\n")
        );
        drop(file);
        assert!(!path.exists());
    }

    #[test]
    fn a_hosts_stderr_is_quoted_on_one_bounded_line() {
        let s = shown(b"line one\nline two\x1b[31m");
        assert!(!s.contains('\n') && !s.contains('\x1b'), "{s}");
        let banner = format!(
            "{at}\n@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @\n{at}\n{}\n\
             Host key for 10.0.0.2 has changed and you have requested strict checking.\n\
             Host key verification failed.\n",
            "Someone could be eavesdropping on you right now!\n".repeat(20),
            at = "@".repeat(60)
        );
        let s = shown(banner.as_bytes());
        assert!(s.ends_with("Host key verification failed."), "{s}");
        assert!(shown(&vec![b'x'; 10_000]).chars().count() <= MAX_QUOTED + 1);
        assert_eq!(shown(b""), "no message");
    }
}
