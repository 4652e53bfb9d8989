//! The engine: launches and terminates deployments step by step, as the enStratus seed
//! describes, over traits for the cloud provider and the agents so that it can be driven
//! by the real control plane or by tests.
//!
//! # Layout
//! - `engine.rs`: [`Engine`], its collaborators and the error type.
//! - `steps.rs`: the journaled step runner (record before, record after, skip if done).
//! - `launch.rs`: the launch from start to RUNNING, and the cloud-files upload (step 0).
//! - `compile.rs`: every uploaded component compiled once into the agents' code cache.
//! - `scale.rs`, `cm.rs`, `install.rs`, `configure.rs`, `proxy.rs`: steps 1–2, 3–4, 5, 6–7, 8.
//! - `retry.rs`: retrying a hook that asks for it, each attempt a new call, each wait journaled.
//! - `credential.rs`: the launch credential replaced once the agent is connected.
//! - `states.rs`: recording states through the model's transition functions.
//! - `facts.rs`: building the typed `enstratus.cfg` contexts, grants and proxy nodes.
//! - `health.rs`: scheduled health checks, restarts of unhealthy services, condemned servers.
//! - `reconcile.rs`, `retire.rs`, `end.rs`: change sets applied; servers leaving, and ending.
//! - `terminate.rs`: a reconcile to nothing.
//! - `providers.rs`: which provider a tier launches on and a stored server's handle names.
//! - `agents.rs`: the [`AgentLink`] trait the dispatcher implements.

pub mod agents;
pub mod apply;
mod calls;
pub mod capacity;
pub mod cm;
pub mod compile;
mod configure;
pub mod credential;
mod end;
pub mod engine;
pub mod facts;
mod grants;
pub mod health;
mod install;
pub mod launch;
pub mod learned_address;
pub mod logs;
mod parallel;
mod providers;
mod proxy;
pub mod reconcile;
pub mod recovery;
mod retire;
pub mod retry;
mod scale;
pub mod scaling_plan;
mod states;
pub mod steps;
pub mod targets;
pub mod terminate;

pub use agents::{AgentLink, LinkError, ReportedAddress};
pub use compile::{ComponentSummary, Precompiled, Precompiler};
pub use engine::{Engine, EngineError, EngineParts};
