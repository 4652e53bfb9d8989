//! The sandboxed wasmtime host for Stratus plugin components.
//!
//! A [`Package`] (directory with `plugin.toml` + component) is loaded by a [`Runtime`] into a
//! [`Plugin`]; each [`Plugin::call`] runs one hook in a fresh store that sees only what the
//! plugin's [`Capabilities`] grant. Long-running processes started by hooks live in the
//! [`Supervisor`].

pub mod bindings;
mod cache;
mod call;
pub mod capabilities;
mod command;
mod convert;
mod dispatch;
mod engine;
mod env;
mod failure;
mod host_imports;
mod inspect;
mod limits;
pub mod manifest;
mod network;
mod output;
pub mod package;
mod runtime;
pub mod supervisor;

pub use cache::CacheStatus;
pub use capabilities::{
    Access, Capabilities, CapabilityOverride, DirGrant, DirKind, NarrowError, NetHost,
    NetworkGrant, Program,
};
pub use engine::Allocator;
pub use env::{CallEnv, DirMap, Labels, dirs_of};
pub use failure::{CallFailure, HookFailure, LoadError};
pub use inspect::{ComponentInfo, InterfaceInfo, inspect};
pub use manifest::{Manifest, ManifestError, PluginInfo};
pub use output::{HookOutcome, HookValue, LogLevel, LogRecord, Redactor};
pub use package::Package;
pub use runtime::{Plugin, Runtime, RuntimeConfig, RuntimeError};
pub use supervisor::{ProcessSpec, ProcessState, Supervisor};
