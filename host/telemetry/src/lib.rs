//! The control plane's Prometheus metrics, rendered as OpenMetrics text (which Prometheus
//! scrapes as it does its own text format).
//!
//! - `metrics.rs`: the counters and histograms the engine, the store and the autoscaler move
//!   while they work (hook calls, recoveries, scaling events, journal writes).
//! - `fleet.rs`: the gauges computed from the store at each scrape (deployments by state,
//!   servers by agent state), so they can never drift from it.
//!
//! Every label comes from a bounded set: hook names from the WIT, outcomes, states and write
//! kinds. No deployment, server or tier name is a label.

mod error;
mod fleet;
mod metrics;

pub use error::TelemetryError;
pub use metrics::{
    HookOutcome, Scaling, autoscale_decision, change_set_applied, hook_call, install,
    server_replaced,
};

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use stratus_store::Store;

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every series as OpenMetrics text, the gauges read from `store` now.
pub fn render(store: &Store) -> Result<String, TelemetryError> {
    let mut registry = Registry::with_prefix("stratus");
    metrics::register(&mut registry);
    fleet::register(&mut registry, store)?;
    let mut text = String::new();
    encode(&mut text, &registry)?;
    Ok(text)
}

#[cfg(test)]
mod tests;
