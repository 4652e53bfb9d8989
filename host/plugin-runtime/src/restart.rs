//! Restarts of a supervised process that crashed: when it is started again (exponential
//! backoff), what is remembered of its exits, and the tail of its output a report carries.
//! A process that exits with status 0 finished (an installer, a one-shot job) and is not
//! started again; any other exit it was not asked for is a crash.

use crate::output::Redactor;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;
use stratus_protocol::bounds::MAX_OUTPUT_TAIL_BYTES;

/// Wait before the first restart after a crash; each quick exit in a row doubles it.
pub const RESTART_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest wait between two starts of a process that keeps crashing.
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run at least this long was healthy: the next crash waits the initial backoff again.
pub const STABLE_RUN: Duration = Duration::from_secs(10);
/// Quick exits in a row (runs shorter than [`STABLE_RUN`]) from which a process is in a
/// crash loop.
pub const CRASH_LOOP_AFTER: u32 = 3;
/// Bytes of output read before redaction, ending where the tail ends: a secret that starts
/// in the read part is masked whole even when the kept tail ends inside it, up to this long.
const TAIL_READ_BYTES: u64 = 4 * MAX_OUTPUT_TAIL_BYTES as u64;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl Exit {
    pub fn of(status: std::io::Result<std::process::ExitStatus>) -> Exit {
        match status {
            Ok(s) => Exit {
                code: s.code(),
                signal: s.signal(),
            },
            Err(_) => Exit {
                code: None,
                signal: None,
            },
        }
    }

    /// Status 0: the process finished its work.
    pub fn finished(&self) -> bool {
        self.code == Some(0)
    }

    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => match nix::sys::signal::Signal::try_from(s) {
                Ok(name) => format!("killed by signal {s} ({name})"),
                Err(_) => format!("killed by signal {s}"),
            },
            (None, None) => "ended, status unknown".into(),
        }
    }
}

/// What the supervisor remembers of a process's crashes since its plugin started it.
#[derive(Debug, Clone, Default)]
pub struct Restarts {
    pub restarts: u32,
    pub quick_exits_in_a_row: u32,
    pub last_exit: String,
    pub last_exit_at_ms: i64,
    /// Set while the process waits for its next start.
    pub next_start_at_ms: Option<i64>,
    pub output_tail: String,
    next_wait: Duration,
}

impl Restarts {
    /// Records a crash after a run of `ran` (or a failed start: `ran` zero) and returns how
    /// long to wait before the next start.
    pub fn crashed(&mut self, why: String, ran: Duration, tail: String, now_ms: i64) -> Duration {
        if ran >= STABLE_RUN || self.next_wait.is_zero() {
            self.quick_exits_in_a_row = 0;
            self.next_wait = RESTART_BACKOFF_INITIAL;
        }
        if ran < STABLE_RUN {
            self.quick_exits_in_a_row = self.quick_exits_in_a_row.saturating_add(1);
        }
        let wait = self.next_wait;
        self.next_wait = (wait * 2).min(RESTART_BACKOFF_MAX);
        self.last_exit = why;
        self.last_exit_at_ms = now_ms;
        self.output_tail = tail;
        self.next_start_at_ms = Some(now_ms.saturating_add(wait.as_millis() as i64));
        wait
    }

    /// The process runs again.
    pub fn restarted(&mut self) {
        self.restarts = self.restarts.saturating_add(1);
        self.next_start_at_ms = None;
    }

    pub fn crash_loop(&self) -> bool {
        self.quick_exits_in_a_row >= CRASH_LOOP_AFTER
    }
}

/// The last [`MAX_OUTPUT_TAIL_BYTES`] of the log at `path`, redacted (control characters
/// dropped, secrets masked) and starting at a character boundary; empty when unreadable.
pub fn output_tail(path: &Path, redactor: &Redactor) -> String {
    let read = || -> std::io::Result<Vec<u8>> {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(TAIL_READ_BYTES)))?;
        let mut bytes = Vec::new();
        f.take(TAIL_READ_BYTES).read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    let text = redactor.redact_bytes(&read().unwrap_or_default());
    let mut start = text.len().saturating_sub(MAX_OUTPUT_TAIL_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_exits_double_the_wait_up_to_the_max_and_make_a_crash_loop() {
        let mut r = Restarts::default();
        let quick = Duration::from_millis(5);
        let waits: Vec<u64> = (0..9)
            .map(|i| {
                let w = r.crashed("exit code 3".into(), quick, String::new(), i);
                r.restarted();
                w.as_secs()
            })
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(r.restarts, 9);
        assert_eq!(r.quick_exits_in_a_row, 9);
        assert!(r.crash_loop());
    }

    #[test]
    fn a_stable_run_resets_the_wait_and_ends_the_crash_loop() {
        let mut r = Restarts::default();
        for _ in 0..4 {
            r.crashed("x".into(), Duration::ZERO, String::new(), 0);
        }
        assert!(r.crash_loop());
        let w = r.crashed("x".into(), STABLE_RUN, String::new(), 1_000);
        assert_eq!(w, RESTART_BACKOFF_INITIAL);
        assert_eq!(r.quick_exits_in_a_row, 0);
        assert!(!r.crash_loop());
        assert_eq!(r.next_start_at_ms, Some(2_000));
    }

    #[test]
    fn the_tail_is_bounded_redacted_and_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("p.log");
        let secret = "s3cr3t-pass";
        let mut text = "x".repeat(10_000);
        // A secret just before the kept tail, running into it, is still masked whole.
        text.truncate(10_000 - MAX_OUTPUT_TAIL_BYTES - 4);
        text.push_str(secret);
        text.push_str("\x1b[2Jfatal: bad config ");
        text.push_str(&"y".repeat(MAX_OUTPUT_TAIL_BYTES - 40));
        std::fs::write(&log, &text).unwrap();
        let tail = output_tail(&log, &Redactor::new([secret.to_string()]));
        assert!(tail.len() <= MAX_OUTPUT_TAIL_BYTES, "{}", tail.len());
        assert!(tail.contains("fatal: bad config"), "{tail}");
        assert!(!tail.contains("3cr3t") && !tail.contains("pass"), "{tail}");
        assert!(!tail.contains('\x1b'), "{tail:?}");
        assert_eq!(
            output_tail(&dir.path().join("none"), &Redactor::default()),
            ""
        );
    }

    #[test]
    fn exits_are_described() {
        assert_eq!(
            Exit {
                code: Some(3),
                signal: None
            }
            .describe(),
            "exit code 3"
        );
        assert_eq!(
            Exit {
                code: None,
                signal: Some(9)
            }
            .describe(),
            "killed by signal 9 (SIGKILL)"
        );
        assert!(
            Exit {
                code: Some(0),
                signal: None
            }
            .finished()
        );
    }
}
