//! The end of the agent's own log (`<root>/agent/agent.log`), sent to the control plane when
//! an operator asks for it: the agent may be on another machine, where only it can read the
//! log. The log is rotated by size, so only the current file is read. Nothing on the way is
//! a link (a program that could write the server root could plant one at `agent/`), a planted
//! FIFO or device is refused rather than opened for reading, at most
//! [`MAX_AGENT_LOG_BYTES`] are read, the text starts at a line and invalid UTF-8 is replaced.

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::path::Path;
use stratus_protocol::{AgentReply, MAX_AGENT_LOG_BYTES};

/// The directory under the server root holding the log, and the log's name in it.
const LOG_DIR: &str = "agent";
const LOG_NAME: &str = "agent.log";

/// The end of a log: its text and whether anything before it was left out.
#[derive(Debug, PartialEq)]
pub(crate) struct LogEnd {
    pub text: String,
    pub cut: bool,
}

impl From<LogEnd> for AgentReply {
    fn from(end: LogEnd) -> AgentReply {
        AgentReply::Log {
            text: end.text,
            cut: end.cut,
        }
    }
}

/// The last `max_bytes` (at most [`MAX_AGENT_LOG_BYTES`]) of the agent log under `root`.
pub(crate) fn read_end(root: &Path, max_bytes: u64) -> Result<LogEnd, String> {
    let shown = root.join(LOG_DIR).join(LOG_NAME);
    let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", shown.display());
    // The root is the agent's own choice, opened as given; below it nothing is followed.
    let root_fd = nix::fcntl::open(root, dir_flags(), Mode::empty()).map_err(|e| fail(&e))?;
    let dir = open_no_link(&root_fd, LOG_DIR, OFlag::O_DIRECTORY).map_err(|e| fail(&e))?;
    let file = open_no_link(&dir, LOG_NAME, OFlag::O_NONBLOCK).map_err(|e| fail(&e))?;
    let mut file = std::fs::File::from(file);
    let meta = file.metadata().map_err(|e| fail(&e))?;
    if !meta.is_file() {
        return Err(fail(&"not a regular file"));
    }
    let max = max_bytes.min(MAX_AGENT_LOG_BYTES);
    let start = meta.len().saturating_sub(max);
    file.seek(SeekFrom::Start(start)).map_err(|e| fail(&e))?;
    let mut bytes = Vec::new();
    // Bounded again here: the log grows while it is read.
    file.take(max)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(&e))?;
    Ok(from_line_start(bytes, start > 0))
}

fn dir_flags() -> OFlag {
    OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC
}

/// Opens `name` in `dir` for reading, refusing a link as the name itself (`O_NOFOLLOW`).
fn open_no_link(dir: &impl std::os::fd::AsFd, name: &str, extra: OFlag) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | extra;
    openat(dir, name, flags, Mode::empty())
}

/// `bytes` as text; when they begin mid-file, from their first full line on.
fn from_line_start(bytes: Vec<u8>, mid_file: bool) -> LogEnd {
    let from = match mid_file {
        true => bytes
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| i + 1),
        false => 0,
    };
    LogEnd {
        text: String::from_utf8_lossy(&bytes[from..]).into_owned(),
        cut: mid_file,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root_with_log(bytes: &[u8]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(LOG_DIR)).unwrap();
        std::fs::write(root.path().join(LOG_DIR).join(LOG_NAME), bytes).unwrap();
        root
    }

    #[test]
    fn a_short_log_is_sent_whole() {
        let root = root_with_log(b"one\ntwo\n");
        let end = read_end(root.path(), MAX_AGENT_LOG_BYTES).unwrap();
        assert_eq!(
            end,
            LogEnd {
                text: "one\ntwo\n".into(),
                cut: false
            }
        );
    }

    #[test]
    fn a_large_log_is_sent_from_a_line_within_the_bound() {
        let line = format!("{}\n", "x".repeat(99));
        let mut text = line.repeat(3 * (MAX_AGENT_LOG_BYTES as usize) / 100);
        text.push_str("last line\n");
        let root = root_with_log(text.as_bytes());
        // Asking for more than the bound gets the bound.
        let end = read_end(root.path(), u64::MAX).unwrap();
        assert!(end.cut);
        assert!(end.text.len() as u64 <= MAX_AGENT_LOG_BYTES);
        assert!(end.text.len() as u64 > MAX_AGENT_LOG_BYTES - 200);
        assert!(end.text.starts_with(&line), "{}", &end.text[..120]);
        assert!(end.text.ends_with("x\nlast line\n"));
        let small = read_end(root.path(), 105).unwrap();
        assert_eq!(small.text, "last line\n");
    }

    #[test]
    fn a_log_or_its_directory_reached_through_a_link_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = root_with_log(b"secret of another file\n");
        symlink(elsewhere.path().join(LOG_DIR), root.path().join(LOG_DIR)).unwrap();
        let e = read_end(root.path(), 1024).unwrap_err();
        assert!(e.contains("agent.log"), "{e}");
        std::fs::remove_file(root.path().join(LOG_DIR)).unwrap();
        std::fs::create_dir(root.path().join(LOG_DIR)).unwrap();
        let target = elsewhere.path().join(LOG_DIR).join(LOG_NAME);
        symlink(&target, root.path().join(LOG_DIR).join(LOG_NAME)).unwrap();
        let e = read_end(root.path(), 1024).unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        assert!(
            read_end(elsewhere.path(), 1024)
                .unwrap()
                .text
                .contains("secret")
        );
    }

    #[test]
    fn a_fifo_in_place_of_the_log_is_refused_without_blocking() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(LOG_DIR)).unwrap();
        let fifo = root.path().join(LOG_DIR).join(LOG_NAME);
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let e = read_end(root.path(), 1024).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn binary_bytes_arrive_replaced_and_the_worst_reply_fits_a_frame() {
        let root = root_with_log(b"ok \xff\xfe\x1b[31m\x00end\n");
        let end = read_end(root.path(), 1024).unwrap();
        assert_eq!(end.text, "ok \u{fffd}\u{fffd}\x1b[31m\x00end\n");
        // Control characters are what JSON escapes the most (`\u0001`, six bytes each).
        let worst = vec![1u8; MAX_AGENT_LOG_BYTES as usize];
        let reply: AgentReply = from_line_start(worst, false).into();
        let envelope = stratus_protocol::Envelope {
            id: u64::MAX,
            body: reply,
        };
        assert!(stratus_protocol::framing::encode(&envelope).is_ok());
    }
}
