//! The control plane (`stratus serve`): the dispatcher that agents dial into, the operator
//! endpoint the CLI talks to, and the tasks that run the engine.
//!
//! # Layout
//! - `app.rs`: the application layer: launch, scale, terminate, status, events, typed errors.
//! - `config.rs`: the configuration file (`--config`): serve options and shared providers.
//! - `server.rs`: the serve loop, the handshake, operator requests handed to the app.
//! - `dispatcher.rs`: agent authentication and the request/reply channel.
//! - `files_endpoint.rs`: the HTTPS file endpoint agents fetch cloud files from.
//! - `link.rs`: the dispatcher as the engine's `AgentLink`.
//! - `monitor.rs`: agents LOST when their connection closes, RUNNING when they come back.
//! - `paths.rs`: the state directory's layout.
//! - `metrics.rs`: the CPU and memory agents report, kept in a bounded window per server.
//! - `status.rs`: the operator's view of deployments, read from the store alone.
//! - `supervision.rs`: the crashed processes agents report, kept for status.
//! - `client.rs`: how the CLI finds (or starts) the control plane and talks to it.
//! - `process_runs.rs`: whether a process id names a running (not dying) process.

pub mod app;
pub mod client;
pub mod config;
pub mod dispatcher;
pub mod files_endpoint;
pub mod handshake;
mod link;
pub mod metrics;
mod monitor;
pub mod paths;
pub mod process_runs;
pub mod server;
pub mod status;
pub mod supervision;
