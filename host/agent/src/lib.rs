//! The agent: what runs on every server. It dials out to the control plane, proves who it is
//! with the credential issued for its server, and then carries out requests: download service
//! packages and data sources, write CM credentials, and run hooks in the plugin runtime. The
//! processes hooks start live under its supervisor and end with it.
//!
//! # Layout
//! - `agent.rs`: [`AgentConfig`], the connect/handshake/reconnect loop, shutdown.
//! - `requests.rs`: carrying out one request.
//! - `hooks.rs`: running a hook, with the per-call-id memory that makes repeats idempotent.
//! - `compiled.rs`: saying how a plugin's compiled code was obtained (cache hit expected).
//! - `health.rs`: calling each started service's `health-check` on its schedule.
//! - `metrics.rs`: the CPU and memory of the server's own services, reported every interval.
//! - `credential.rs`: the credential presented, and its one-time replacement of the launch one.
//! - `agent_log.rs`: the end of the agent's own log, sent when an operator asks for it.
//! - `private.rs`: keeping `<root>/agent/` and the credential out of the program user's reach.

mod agent;
mod agent_log;
mod compiled;
mod credential;
mod disk_watch;
mod health;
mod hooks;
mod metrics;
mod private;
mod requests;

pub use agent::{AgentConfig, AgentError, run};
