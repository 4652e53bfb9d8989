//! Why loading a plugin or calling a hook failed, phrased for operators.

use crate::manifest::ManifestError;
use crate::output::LogRecord;
use std::path::PathBuf;
use std::time::Duration;

/// A plugin that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("cannot read component {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("component {path} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{path} is not a valid WebAssembly component: {reason}")]
    CorruptComponent { path: PathBuf, reason: String },
    /// The file is not the component its package was verified with when installed.
    #[error(
        "component {path} is not the one its package was verified with: its SHA-256 is \
         {actual}, not {expected}"
    )]
    NotVerified {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("component does not implement the `{expected}` world: {found}")]
    WrongWorld { expected: String, found: String },
    /// Not a `#[source]`: the message already carries it, and error chains would repeat it.
    #[error("cannot run this plugin: {0}")]
    WitVersion(crate::wit_version::WitVersionError),
    #[error("cannot prepare the plugin: {0}")]
    Host(String),
}

impl From<crate::wit_version::WitVersionError> for LoadError {
    fn from(e: crate::wit_version::WitVersionError) -> Self {
        LoadError::WitVersion(e)
    }
}

/// Why a hook call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookFailure {
    /// The hook itself reported an error.
    #[error("hook failed{}: {message}", if *.retryable { " (retryable)" } else { "" })]
    HookError { message: String, retryable: bool },
    /// The guest trapped (panic, abort, out-of-bounds access …).
    #[error("plugin crashed: {message}")]
    Trap { message: String },
    #[error("plugin exceeded its time limit of {limit_ms} ms")]
    Timeout { limit_ms: u64 },
    #[error("plugin exceeded its memory limit of {limit_mb} MiB")]
    OutOfMemory { limit_mb: u64 },
    #[error("plugin overflowed its stack (unbounded recursion?)")]
    StackOverflow,
    /// The call failed after the plugin was refused something it was not granted.
    #[error("capability denied: {capability}")]
    CapabilityDenied { capability: String },
    #[error("plugin output exceeded its limit of {limit_bytes} bytes")]
    OutputLimit { limit_bytes: u64 },
    #[error("hook `{hook}` is not exported by this plugin's `{world}` world")]
    WrongWorld { hook: String, world: String },
    #[error("host error: {message}")]
    Host { message: String },
}

/// A failed call: the reason plus whatever the plugin said before failing (all redacted).
/// `Plugin::call` returns this rather than a bare `HookFailure` so output is never lost.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}")]
pub struct CallFailure {
    pub kind: HookFailure,
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
    pub logs: Vec<LogRecord>,
    pub denials: Vec<String>,
    pub status: Option<String>,
    pub duration: Duration,
}

impl CallFailure {
    /// A failure before the plugin ran (nothing captured).
    pub fn bare(kind: HookFailure) -> CallFailure {
        CallFailure {
            kind,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            logs: Vec::new(),
            denials: Vec::new(),
            status: None,
            duration: Duration::ZERO,
        }
    }
}

/// What the host saw during a trapped call, used to name the cause.
pub(crate) struct TrapEvidence<'a> {
    pub error: &'a wasmtime::Error,
    pub refused_memory: bool,
    pub output_full: bool,
    pub first_denial: Option<&'a str>,
    pub stderr: &'a str,
    pub memory_mb: u64,
    pub timeout_ms: u64,
    pub output_bytes: u64,
}

/// Maps a trap to the most specific failure: an interrupt is the deadline, a refused memory
/// growth explains an abort, a full output pipe explains a failed print.
pub(crate) fn classify_trap(ev: &TrapEvidence<'_>) -> HookFailure {
    use wasmtime::Trap;
    let trap = ev.error.downcast_ref::<Trap>();
    if trap == Some(&Trap::Interrupt) {
        return HookFailure::Timeout {
            limit_ms: ev.timeout_ms,
        };
    }
    if trap == Some(&Trap::StackOverflow) || shadow_stack_overflow(ev.error, trap) {
        return HookFailure::StackOverflow;
    }
    if ev.refused_memory {
        return HookFailure::OutOfMemory {
            limit_mb: ev.memory_mb,
        };
    }
    if ev.output_full {
        return HookFailure::OutputLimit {
            limit_bytes: ev.output_bytes,
        };
    }
    if let Some(d) = ev.first_denial {
        return HookFailure::CapabilityDenied {
            capability: d.to_owned(),
        };
    }
    // The trap code (or the root cause of a host error) without the wasm backtrace, which
    // names only function indices and means nothing to an operator.
    let mut message = match trap {
        Some(t) => t.to_string(),
        None => ev.error.root_cause().to_string(),
    };
    if let Some(panic) = panic_message(ev.stderr) {
        message = format!("{message}; {panic}");
    }
    HookFailure::Trap { message }
}

/// Rust guests keep their stack in linear memory; running off its end is an out-of-bounds
/// access, recognisable by one function repeating down the whole captured backtrace.
fn shadow_stack_overflow(error: &wasmtime::Error, trap: Option<&wasmtime::Trap>) -> bool {
    const REPEATS: usize = 16;
    if trap != Some(&wasmtime::Trap::MemoryOutOfBounds) {
        return false;
    }
    let Some(bt) = error.downcast_ref::<wasmtime::WasmBacktrace>() else {
        return false;
    };
    let frames = bt.frames();
    frames.len() >= REPEATS
        && frames[1..REPEATS]
            .iter()
            .all(|f| f.func_index() == frames[1].func_index())
}

/// The Rust panic report in captured stderr (`thread '…' panicked at …:\n<message>`).
pub(crate) fn panic_message(stderr: &str) -> Option<String> {
    let start = stderr.find("panicked at")?;
    let rest = &stderr[start..];
    let text: Vec<&str> = rest.lines().take(2).collect();
    Some(text.join(" ").trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_message_is_extracted() {
        let err = "thread '<unnamed>' panicked at src/lib.rs:10:5:\nboom\nnote: run with";
        assert_eq!(
            panic_message(err).unwrap(),
            "panicked at src/lib.rs:10:5: boom"
        );
        assert_eq!(panic_message("plain"), None);
    }

    #[test]
    fn hook_error_display_says_retryable() {
        let f = HookFailure::HookError {
            message: "db down".into(),
            retryable: true,
        };
        assert_eq!(f.to_string(), "hook failed (retryable): db down");
    }
}
