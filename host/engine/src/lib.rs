//! The engine: launches and terminates deployments step by step, as the enStratus seed
//! describes, over traits for the cloud provider and the agents so that it can be driven
//! by the real control plane or by tests.
//!
//! # Layout
//! - `engine.rs`: [`Engine`], its collaborators and the error type.
//! - `steps.rs`: the journaled step runner (record before, record after, skip if done).
//! - `launch.rs`: the eight launch steps (scale up, CM, install, configure in DAG order, proxy).
//! - `facts.rs`: building the typed `enstratus.cfg` contexts, grants and proxy nodes.
//! - `terminate.rs`: reverse-order shutdown.
//! - `agents.rs`: the [`AgentLink`] trait the dispatcher implements.

pub mod agents;
mod calls;
pub mod cm;
pub mod engine;
pub mod facts;
pub mod launch;
pub mod logs;
mod states;
pub mod steps;
pub mod terminate;

pub use agents::{AgentLink, LinkError};
pub use engine::{Engine, EngineError, EngineParts};
