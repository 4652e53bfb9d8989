//! Not an attack: a hook whose dependency is "not up yet" (`retry-*`), for the engine's retry
//! of retryable hook errors. Each call appends a line to `retry-calls` in the service
//! directory, so a test can count the calls that really ran.
//!
//! - `retry-twice`: asks to be retried on its first two calls, then succeeds.
//! - `retry-always`: always asks to be retried.
//! - `retry-fail-once`: fails (not retryable) on its first call, then succeeds: the cause was
//!   "fixed" between a failed launch and the operator's next one.

use stratus_plugin_sdk::files::{append_line, read_to_string, service_path};
use stratus_plugin_sdk::service::*;

/// Calls that ask to be retried before `retry-twice` succeeds.
const TWICE: usize = 2;

pub(crate) fn attack(ctx: &ServiceContext, name: &str) -> Result<(), HookError> {
    let calls = service_path(ctx, "retry-calls");
    append_line(&calls, name)?;
    let n = read_to_string(&calls)?.lines().count();
    match name {
        "retry-twice" if n > TWICE => Ok(()),
        "retry-twice" => Err(HookError::retryable(format!(
            "dependency not up yet (call {n})"
        ))),
        "retry-fail-once" if n > 1 => Ok(()),
        "retry-fail-once" => Err(HookError::fatal("failing once (call 1)")),
        "retry-always" => Err(HookError::retryable(format!(
            "dependency never comes up (call {n})"
        ))),
        other => Err(HookError::fatal(format!("unknown retry mode `{other}`"))),
    }
}
