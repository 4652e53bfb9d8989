//! Pure data of Stratus: deployment specs, ids, states and their transitions, hook contexts.
//! No tokio, no wasmtime: everything here is plain values that serialize.
//!
//! # Layout
//!
//! - [`spec`]: the validated deployment file ([`DeploymentSpec`] and its parts); its rules
//!   live in `validate` and its TOML shapes in `raw`.
//! - [`error`]: [`SpecError`] (`file:line:column: message`) and [`SpecErrors`].
//! - [`ids`]: [`Name`], [`ServiceId`] (`a1000` directories), [`ServerId`] (`<tier>-<n>`).
//! - [`state`]: deployment, agent and service states, each with one pure transition function.
//! - [`plan`]: the dependency DAG of a spec as launch layers, grants and load balancers.
//! - [`context`]: the typed `enstratus.cfg` handed to hooks, mirrored from `wit/types.wit`.
//! - [`template`], [`template_variables`], [`enstratus_cfg`]: templates rendered with a
//!   context's variables, and the classic `enstratus.cfg`, rendered by the host for plugins.
//! - [`plugin`]: a plugin package's manifest and the capabilities it declares.
//! - [`retry`]: the backoff a service's retryable hook errors are retried with.
//! - [`health`]: a running service's health schedule and what CRITICAL leads to.
//! - [`metrics`]: a server's CPU and memory samples and the window kept of them.
//! - [`scaling`]: a tier's scaling rules, its servers' votes and the decision they make.

pub mod context;
pub mod enstratus_cfg;
pub mod error;
mod graph;
pub mod health;
pub mod ids;
pub mod metrics;
pub mod plan;
pub mod plugin;
mod raw;
pub mod retry;
pub mod scaling;
pub mod spec;
pub mod spec_diff;
pub mod state;
pub mod step_key;
pub mod template;
pub mod template_variables;
mod validate;

pub use error::{SpecError, SpecErrors};
pub use ids::{Name, ServerId, ServiceId};
pub use plan::Plan;
pub use spec::DeploymentSpec;
pub use validate::{
    MAX_PROVIDER_SETTING_BYTES, MAX_PROVIDER_SETTINGS, MAX_TIER_SERVERS, control_plane_providers,
    with_control_plane_providers,
};
