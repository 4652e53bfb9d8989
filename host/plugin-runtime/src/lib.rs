//! The sandboxed wasmtime host for Stratus plugin components.
//!
//! A [`Package`] (directory with `plugin.toml` + component) is loaded by a [`Runtime`] into a
//! [`Plugin`]; each [`Plugin::call`] runs one hook in a fresh store that sees only what the
//! plugin's [`Capabilities`] grant. Long-running processes started by hooks live in the
//! [`Supervisor`].
//!
//! Choices worth knowing:
//! - Timeouts: the epoch advances every 10 ms; each call's epoch callback yields to tokio on
//!   every tick and traps (`Trap::Interrupt`) once the deadline has passed, so a spinning
//!   guest neither hogs a worker thread nor outlives its limit; a `tokio::time::timeout` a
//!   little past the deadline backs it up for time spent in host functions.
//! - Failures: [`Plugin::call`] returns a [`CallFailure`] (a [`HookFailure`] plus the output,
//!   logs and denials captured before it failed), never a bare reason.
//! - Secrets: the call's credentials and [`CallEnv::secrets`] are replaced by `****` in
//!   everything the call returns or logs.
//! - Code cache: entries are authenticated with HMAC-SHA256 and the verified bytes (not the
//!   file) are deserialized.

pub mod bindings;
mod cache;
mod call;
pub mod cloud_driver;
mod cloud_driver_http;
pub mod cloud_driver_provider;
mod cloud_driver_settings;
pub use stratus_model::plugin::capabilities;
mod command;
mod command_files;
mod convert;
mod dispatch;
mod engine;
mod env;
mod epoch;
mod failure;
mod function_cache;
mod guest_open;
mod host_imports;
mod inspect;
mod language;
mod limits;
mod memory_layout;
pub use stratus_model::plugin::manifest;
mod adoption;
#[cfg(test)]
mod attack_tests;
mod network;
mod output;
pub mod package;
pub mod process_logs;
pub mod program_user;
mod render;
pub mod restart;
mod runtime;
mod scaler;
pub mod supervisor;
pub mod wit_version;

pub use cache::{CacheStatus, cache_key_of_secret};
pub use capabilities::{
    Access, Capabilities, CapabilityOverride, DirGrant, DirKind, MAX_MEMORY_MB, NarrowError,
    NetHost, NetworkGrant, Program, RunAs,
};
pub use engine::{Allocator, DEFAULT_SLOT_RESET, SlotReset};
pub use env::{CallEnv, DirMap, Labels, dirs_of};
pub use failure::{CallFailure, HookFailure, LoadError};
pub use function_cache::MAX_FUNCTION_CACHE_BYTES;
pub use inspect::{ComponentInfo, InterfaceInfo, inspect};
pub use language::language_of;
pub use manifest::{Manifest, ManifestError, PluginInfo};
pub use memory_layout::{KEPT_RESIDENT_BYTES, initial_memory_bytes};
pub use output::{HookOutcome, HookValue, LogLevel, LogRecord, Redactor};
pub use package::Package;
pub use program_user::{DEFAULT_PROGRAM_USER, PROGRAM_USER_ENV, ProgramUser};
pub use runtime::{
    DEFAULT_MAX_COMPONENT_BYTES, Plugin, Precompiled, Runtime, RuntimeConfig, RuntimeError,
};
pub use scaler::{
    MAX_SCALER_ERROR_BYTES, MAX_SCALER_MEMORY_MB, MAX_SCALER_TIMEOUT_MS, ScalerError,
};
pub use supervisor::{ProcessSpec, ProcessState, Supervisor};
