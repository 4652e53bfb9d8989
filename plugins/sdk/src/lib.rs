//! The Stratus plugin SDK: WIT bindings for the `service`, `proxy` and `cm` worlds plus the
//! helpers most hooks need (templates, the flattened context, logging, `enstratus.cfg`).
//!
//! ```ignore
//! use stratus_plugin_sdk::service::*;
//! struct MyPlugin;
//! impl Guest for MyPlugin { /* one fn per hook */ }
//! stratus_plugin_sdk::export_service!(MyPlugin);
//! ```

// The generated export macros name this crate by its path; this lets the SDK's own code use it.
extern crate self as stratus_plugin_sdk;

#[doc(hidden)]
pub mod bindings;
#[doc(hidden)]
pub use stratus_plugin_proxy_bindings as __proxy;

/// The WIT `types` interface shared by every world (`ServiceContext`, `HookError`, …).
pub mod types {
    pub use stratus_plugin_proxy_bindings::types::*;
}

/// Functions the host offers; each is checked against the plugin's manifest.
pub mod host {
    pub use stratus_plugin_proxy_bindings::stratus::plugin::host::*;
}

/// Everything a service plugin needs: `use stratus_plugin_sdk::service::*`.
pub mod service {
    pub use crate::bindings::service::exports::stratus::plugin::service_hooks::Guest;
    pub use crate::prelude::*;
}

/// A load-balancer plugin implements `ServiceGuest` and `ProxyGuest`.
pub mod proxy {
    pub use crate::__proxy::exports::stratus::plugin::proxy_hooks::Guest as ProxyGuest;
    pub use crate::__proxy::exports::stratus::plugin::service_hooks::Guest as ServiceGuest;
    pub use crate::prelude::*;
}

/// A configuration-management adapter implements `Guest` over a `CmContext`.
pub mod cm {
    pub use crate::bindings::cm::exports::stratus::plugin::cm_hooks::Guest;
    pub use crate::cm_context::{cm_facts, cm_setting, error_lines};
    pub use crate::prelude::*;
}

/// Types and helpers every world's plugin uses.
pub mod prelude {
    pub use crate::context::setting;
    pub use crate::files::{hook_error, render_file};
    pub use crate::host;
    pub use crate::types::*;
    pub use crate::{context, enstratus, files, log, template};
}

pub mod cm_context;
pub mod context;
pub mod enstratus;
pub mod files;
pub mod log;
mod no_follow;
pub mod template;

/// Exports a type implementing `service::Guest` as the component's `service-hooks`.
#[macro_export]
macro_rules! export_service {
    ($ty:ident) => {
        $crate::__export_service_impl!($ty with_types_in $crate::bindings::service);
    };
}

/// Exports a type implementing `proxy::ServiceGuest` and `proxy::ProxyGuest`.
#[macro_export]
macro_rules! export_proxy {
    ($ty:ident) => {
        $crate::__proxy::__export_proxy_impl!($ty with_types_in $crate::__proxy);
    };
}

/// Exports a type implementing `cm::Guest` as the component's `cm-hooks`.
#[macro_export]
macro_rules! export_cm {
    ($ty:ident) => {
        $crate::__export_cm_impl!($ty with_types_in $crate::bindings::cm);
    };
}
