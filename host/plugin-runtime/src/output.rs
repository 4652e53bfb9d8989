//! What a hook call produces besides its value: captured output, log records, denials and
//! status, all scrubbed of secrets before they leave the runtime.

use std::time::Duration;
use stratus_model::context::{CmReport, HealthReport};

/// Severity of a plugin log record (mirrors WIT `host.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub level: LogLevel,
    pub message: String,
}

/// The typed result of a hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookValue {
    Unit,
    Health(HealthReport),
    Cm(CmReport),
}

/// A successful hook call.
#[derive(Debug, Clone)]
pub struct HookOutcome {
    pub value: HookValue,
    pub stdout: String,
    pub stderr: String,
    /// stdout or stderr hit the plugin's `output-bytes` cap.
    pub truncated: bool,
    pub logs: Vec<LogRecord>,
    /// Capability refusals during the call (the guest may have coped with them).
    pub denials: Vec<String>,
    /// The last `set-status` message.
    pub status: Option<String>,
    pub duration: Duration,
}

/// Replaces every secret with `****`.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    // Debug output ends up in logs; only say how many secrets there are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Redactor {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "****");
            }
        }
        out
    }

    /// Decodes captured bytes (lossily) and redacts them.
    pub fn redact_bytes(&self, bytes: &[u8]) -> String {
        self.redact(&String::from_utf8_lossy(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_every_occurrence_longest_first() {
        let r = Redactor::new(["pw".to_string(), "pw-long".to_string(), String::new()]);
        assert_eq!(r.redact("a pw-long b pw c"), "a **** b **** c");
        assert_eq!(r.redact("nothing here"), "nothing here");
    }

    #[test]
    fn debug_does_not_show_secrets() {
        let r = Redactor::new(["s3cret".to_string()]);
        assert_eq!(format!("{r:?}"), "Redactor(1 secrets)");
    }

    #[test]
    fn empty_secret_is_ignored() {
        let r = Redactor::new([String::new()]);
        assert_eq!(r.redact("abc"), "abc");
    }

    #[test]
    fn lossy_bytes_are_redacted() {
        let r = Redactor::new(["s3cret".to_string()]);
        assert_eq!(r.redact_bytes(b"pw=s3cret\xff"), "pw=****\u{fffd}");
    }
}
