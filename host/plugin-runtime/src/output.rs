//! What a hook call produces besides its value: captured output, log records, denials and
//! status. Everything a plugin supplied leaves the runtime through [`Redactor::seal`], which
//! redacts it and cuts it to the bounds of `stratus_protocol::bounds`.

use crate::failure::{CallFailure, HookFailure};
use std::time::Duration;
use stratus_model::context::{CmReport, HealthReport};
use stratus_protocol::bounds::{
    MAX_LOG_RECORD_BYTES, MAX_LOG_RECORDS, MAX_MESSAGE_BYTES, MAX_PATH_BYTES, MAX_PRODUCED, cut,
};

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

mod redact;
pub use redact::Redactor;

impl Redactor {
    /// A plugin-supplied message redacted, then cut at `max` bytes (redacting first, so a cut
    /// never leaves half a secret).
    pub(crate) fn bounded(&self, text: String, max: usize) -> String {
        cut(self.redact_owned(text), max)
    }

    /// The one exit of a call's results: every string the plugin supplied, redacted and bounded.
    /// Destructured field by field, so a new field cannot slip past without a decision.
    #[allow(clippy::result_large_err)] // the very `Result` `Plugin::call` returns, passed through once
    pub(crate) fn seal(
        &self,
        result: Result<HookOutcome, CallFailure>,
    ) -> Result<HookOutcome, CallFailure> {
        match result {
            Ok(HookOutcome {
                value,
                stdout,
                stderr,
                truncated,
                logs,
                denials,
                status,
                duration,
            }) => Ok(HookOutcome {
                value: self.seal_value(value),
                stdout: self.redact_owned(stdout),
                stderr: self.redact_owned(stderr),
                truncated,
                logs: self.seal_logs(logs),
                denials: self.seal_denials(denials),
                status: status.map(|s| self.bounded(s, MAX_MESSAGE_BYTES)),
                duration,
            }),
            Err(CallFailure {
                kind,
                stdout,
                stderr,
                truncated,
                logs,
                denials,
                status,
                duration,
            }) => Err(CallFailure {
                kind: self.seal_failure(kind),
                stdout: self.redact_owned(stdout),
                stderr: self.redact_owned(stderr),
                truncated,
                logs: self.seal_logs(logs),
                denials: self.seal_denials(denials),
                status: status.map(|s| self.bounded(s, MAX_MESSAGE_BYTES)),
                duration,
            }),
        }
    }

    fn seal_value(&self, value: HookValue) -> HookValue {
        match value {
            HookValue::Unit => HookValue::Unit,
            HookValue::Health(HealthReport { status, message }) => {
                HookValue::Health(HealthReport {
                    status,
                    message: self.bounded(message, MAX_MESSAGE_BYTES),
                })
            }
            HookValue::Cm(CmReport { summary, produced }) => {
                let extra = produced.len().saturating_sub(MAX_PRODUCED);
                let mut kept: Vec<String> = produced
                    .into_iter()
                    .take(MAX_PRODUCED)
                    .map(|p| self.bounded(p, MAX_PATH_BYTES))
                    .collect();
                if extra > 0 {
                    kept.push(format!("…({extra} more entries cut)"));
                }
                HookValue::Cm(CmReport {
                    summary: self.bounded(summary, MAX_MESSAGE_BYTES),
                    produced: kept,
                })
            }
        }
    }

    fn seal_failure(&self, kind: HookFailure) -> HookFailure {
        match kind {
            HookFailure::HookError { message, retryable } => HookFailure::HookError {
                message: self.bounded(message, MAX_MESSAGE_BYTES),
                retryable,
            },
            HookFailure::Trap { message } => HookFailure::Trap {
                message: self.bounded(message, MAX_MESSAGE_BYTES),
            },
            HookFailure::CapabilityDenied { capability } => HookFailure::CapabilityDenied {
                capability: self.bounded(capability, MAX_PATH_BYTES),
            },
            HookFailure::WrongWorld { hook, world } => HookFailure::WrongWorld {
                hook: self.bounded(hook, MAX_PATH_BYTES),
                world,
            },
            HookFailure::Host { message } => HookFailure::Host {
                message: self.bounded(message, MAX_MESSAGE_BYTES),
            },
            k @ (HookFailure::Timeout { .. }
            | HookFailure::OutOfMemory { .. }
            | HookFailure::StackOverflow
            | HookFailure::OutputLimit { .. }) => k,
        }
    }

    fn seal_logs(&self, logs: Vec<LogRecord>) -> Vec<LogRecord> {
        logs.into_iter()
            .map(|LogRecord { level, message }| LogRecord {
                level,
                message: self.bounded(message, MAX_LOG_RECORD_BYTES),
            })
            .collect()
    }

    fn seal_denials(&self, denials: Vec<String>) -> Vec<String> {
        denials
            .into_iter()
            .take(MAX_LOG_RECORDS)
            .map(|d| self.bounded(d, MAX_PATH_BYTES))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_model::context::HealthStatus;

    const PW: &str = "correct-horse-battery";

    fn outcome(value: HookValue) -> HookOutcome {
        HookOutcome {
            value,
            stdout: format!("out {PW}"),
            stderr: format!("err {}", hex::encode(PW)),
            truncated: false,
            logs: vec![LogRecord {
                level: LogLevel::Info,
                message: format!("log {PW}"),
            }],
            denials: vec![format!("run /bin/{PW}")],
            status: Some(format!("status {PW}")),
            duration: Duration::ZERO,
        }
    }

    fn shown(r: &Result<HookOutcome, CallFailure>) -> String {
        match r {
            Ok(o) => format!("{o:?}"),
            Err(f) => format!("{f:?} {f}"),
        }
    }

    #[test]
    fn a_cm_report_is_redacted_and_bounded() {
        let r = Redactor::new([PW.to_string()]);
        let report = CmReport {
            summary: format!("applied with key {PW} {}", "x".repeat(MAX_MESSAGE_BYTES)),
            produced: (0..MAX_PRODUCED + 5)
                .map(|i| format!("/etc/{PW}/{i}"))
                .collect(),
        };
        let sealed = r.seal(Ok(outcome(HookValue::Cm(report))));
        assert!(!shown(&sealed).contains(PW), "{}", shown(&sealed));
        let HookValue::Cm(report) = sealed.unwrap().value else {
            panic!()
        };
        assert!(report.summary.starts_with("applied with key **** x"));
        assert!(
            report
                .summary
                .ends_with(&format!("(cut, {} bytes)", 22 + MAX_MESSAGE_BYTES))
        );
        assert_eq!(report.produced.len(), MAX_PRODUCED + 1);
        assert_eq!(report.produced[MAX_PRODUCED], "…(5 more entries cut)");
    }

    #[test]
    fn a_health_message_is_redacted() {
        let r = Redactor::new([PW.to_string()]);
        let health = HealthReport {
            status: HealthStatus::Ok,
            message: format!("db password is {PW}"),
        };
        let sealed = r.seal(Ok(outcome(HookValue::Health(health))));
        assert!(!shown(&sealed).contains(PW));
        assert!(shown(&sealed).contains("db password is ****"));
    }

    #[test]
    fn a_failure_is_redacted_and_its_message_bounded() {
        let r = Redactor::new([PW.to_string()]);
        let o = outcome(HookValue::Unit);
        let failure = CallFailure {
            kind: HookFailure::HookError {
                message: format!("{PW}{}", "e".repeat(20 << 20)),
                retryable: false,
            },
            stdout: o.stdout,
            stderr: o.stderr,
            truncated: false,
            logs: o.logs,
            denials: o.denials,
            status: o.status,
            duration: o.duration,
        };
        let sealed = r.seal(Err(failure));
        assert!(!shown(&sealed).contains(PW));
        let HookFailure::HookError { message, .. } = sealed.unwrap_err().kind else {
            panic!()
        };
        assert!(message.starts_with("****eee"));
        assert!(message.len() < MAX_MESSAGE_BYTES + 64);
        assert!(message.ends_with(&format!("(cut, {} bytes)", 4 + (20 << 20))));
    }
}
