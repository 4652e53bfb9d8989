//! How a plugin's compiled code reached this agent, said in `agent.log`. The control plane
//! compiles every package when a launch uploads it, so an agent should only ever find its
//! code in the shared cache; compiling here still works, but says why it is unexpected.

use std::time::Duration;
use stratus_plugin_runtime::{CacheStatus, Plugin};

/// What `agent.log` says when a plugin's code came from the cache, so tests and operators can
/// count the agents that compiled nothing (tests/compile_once.rs looks for it).
const LOADED_FROM_CACHE: &str = "plugin loaded: compiled code from the code cache (hit)";

/// Logs how `plugin` was loaded and how long it took.
pub(crate) fn note_load(plugin: &Plugin, took: Duration) {
    let name = plugin.name();
    let sha256 = &plugin.sha256()[..12];
    let ms = took.as_millis() as u64;
    match plugin.cache_status() {
        CacheStatus::Hit => tracing::info!(plugin = name, sha256, ms, "{LOADED_FROM_CACHE}"),
        CacheStatus::Compiled => tracing::warn!(
            plugin = name,
            sha256,
            ms,
            "plugin loaded: no compiled code in the code cache, compiled here (the control \
             plane compiles each package at launch: was the cache removed, or does this agent \
             build a different engine?)"
        ),
        CacheStatus::Rejected(reason) => tracing::warn!(
            plugin = name,
            sha256,
            ms,
            %reason,
            "plugin loaded: its code cache entry failed verification and was discarded; \
             compiled here"
        ),
    }
}
