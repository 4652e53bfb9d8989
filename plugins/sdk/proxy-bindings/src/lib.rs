//! Bindings of the `proxy` world, which also own the shared `types` and `host` modules.
//!
//! This is a crate of its own because wit-bindgen names each interface's export macro after the
//! interface and `#[macro_export]`s it: the `service` and `proxy` worlds both export
//! `service-hooks`, so their macros would collide in one crate. `stratus-plugin-sdk` generates
//! the other worlds on top of these types and re-exports everything; depend on it instead.

wit_bindgen::generate!({
    world: "proxy",
    path: ".wit",
    pub_export_macro: true,
    export_macro_name: "export",
    default_bindings_module: "stratus_plugin_sdk::__proxy",
    generate_unused_types: true,
    with: {
        "stratus:plugin/types@0.1.1/credential": crate::secret::Credential,
        "stratus:plugin/types@0.1.1/database-grant": crate::secret::DatabaseGrant,
    },
});

mod secret;

impl types::HookError {
    /// A failure that retrying will not fix (bad config, missing file, refused capability).
    pub fn fatal(message: impl Into<String>) -> Self {
        types::HookError {
            message: message.into(),
            retryable: false,
        }
    }

    /// A failure the engine should retry later (e.g. a dependency not up yet).
    pub fn retryable(message: impl Into<String>) -> Self {
        types::HookError {
            message: message.into(),
            retryable: true,
        }
    }
}

/// The WIT `types` interface, including the hand-written secret-carrying records.
pub mod types {
    pub use crate::secret::{Credential, DatabaseGrant};
    pub use crate::stratus::plugin::types::*;
}
