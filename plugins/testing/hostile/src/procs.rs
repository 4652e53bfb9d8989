//! Attacks on process containment and the environment of programs (`proc-*`).

use stratus_plugin_sdk::service::*;

pub(crate) fn attack(_ctx: &ServiceContext, name: &str) -> Result<(), HookError> {
    Err(HookError::fatal(format!("unknown attack `{name}`")))
}
