//! How often a running service's `health-check` hook is called and what a CRITICAL result
//! leads to, set per service with
//! `health = { interval = "10s", timeout = "2s", unhealthy-after = 3, restarts = 3 }`.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The wait between two checks unless the service says otherwise.
pub const DEFAULT_INTERVAL_MS: u64 = 10_000;
/// How long one check may take unless the service says otherwise; a check that takes longer
/// counts as CRITICAL.
pub const DEFAULT_TIMEOUT_MS: u64 = 2_000;
/// CRITICAL results in a row before the service is restarted, unless it says otherwise.
pub const DEFAULT_UNHEALTHY_AFTER: u32 = 3;
/// Restarts that leave the service CRITICAL before its server is replaced, unless it says
/// otherwise.
pub const DEFAULT_RESTARTS: u32 = 3;
/// The shortest interval a file may ask for, so that checks cannot crowd out the hooks.
pub const MIN_INTERVAL_MS: u64 = 1_000;
/// The longest interval a file may ask for (one hour).
pub const MAX_INTERVAL_MS: u64 = 3_600_000;
/// The shortest timeout a file may ask for.
pub const MIN_TIMEOUT_MS: u64 = 100;
/// The most CRITICAL results in a row (and the most restarts) a file may ask for.
pub const MAX_COUNT: u32 = 100;
/// The longest wait between two restarts of a service, however many failed before.
pub const MAX_RESTART_BACKOFF_MS: u64 = 300_000;

/// A service's health schedule and what happens when it stays CRITICAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthPolicy {
    /// Milliseconds between checks, within `MIN_INTERVAL_MS..=MAX_INTERVAL_MS`.
    pub interval_ms: u64,
    /// Milliseconds one check may take, at least `MIN_TIMEOUT_MS` and at most `interval_ms`.
    pub timeout_ms: u64,
    /// CRITICAL results in a row that make the service restart (stop, start), 1 to `MAX_COUNT`.
    pub unhealthy_after: u32,
    /// Restarts not followed by an OK before the server is replaced, 0 to `MAX_COUNT`.
    pub restarts: u32,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            interval_ms: DEFAULT_INTERVAL_MS,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            unhealthy_after: DEFAULT_UNHEALTHY_AFTER,
            restarts: DEFAULT_RESTARTS,
        }
    }
}

impl HealthPolicy {
    /// The least wait after restart `n` (1-based) before the next one: the interval doubled
    /// for each earlier restart, capped at `MAX_RESTART_BACKOFF_MS`.
    pub fn backoff_after(&self, n: u32) -> Duration {
        let doublings = n.saturating_sub(1).min(63);
        let ms = self
            .interval_ms
            .saturating_mul(1u64 << doublings)
            .min(MAX_RESTART_BACKOFF_MS);
        Duration::from_millis(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_backoff_doubles_from_the_interval_and_stops_at_the_cap() {
        let p = HealthPolicy {
            interval_ms: 1_000,
            ..HealthPolicy::default()
        };
        let waits: Vec<u64> = (1..=4)
            .map(|n| p.backoff_after(n).as_millis() as u64)
            .collect();
        assert_eq!(waits, [1_000, 2_000, 4_000, 8_000]);
        assert_eq!(
            p.backoff_after(u32::MAX),
            Duration::from_millis(MAX_RESTART_BACKOFF_MS)
        );
    }
}
