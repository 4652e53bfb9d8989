//! Attacks through the filesystem: symlinks, the agent's files, disk use (`fs-*`).

use stratus_plugin_sdk::service::*;

pub(crate) fn attack(_ctx: &ServiceContext, name: &str) -> Result<(), HookError> {
    Err(HookError::fatal(format!("unknown attack `{name}`")))
}
