//! How the engine retries a hook that fails with a retryable `hook-error` ("a dependency is
//! not up yet"): bounded exponential backoff, set per service with
//! `retry = { attempts = 8, initial = "500ms", max = "10s" }`.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Attempts of a hook (the first call included) unless the service says otherwise.
pub const DEFAULT_ATTEMPTS: u32 = 8;
/// The first wait unless the service says otherwise; each later wait doubles.
pub const DEFAULT_INITIAL_MS: u64 = 500;
/// The longest single wait unless the service says otherwise. With the defaults, a hook that
/// never stops asking is given up after 7 waits totalling 35.5 s.
pub const DEFAULT_MAX_MS: u64 = 10_000;
/// The most attempts a deployment file may ask for, so that a typo cannot retry for days.
pub const MAX_ATTEMPTS: u32 = 100;
/// The longest single wait a deployment file may ask for (10 minutes).
pub const MAX_WAIT_MS: u64 = 600_000;

/// A service's retry policy for retryable hook errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Calls of a hook in all, at least 1 (1 means never retry).
    pub attempts: u32,
    /// The wait after the first failed attempt, in milliseconds.
    pub initial_ms: u64,
    /// The cap on any one wait, in milliseconds, at least `initial_ms`.
    pub max_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: DEFAULT_ATTEMPTS,
            initial_ms: DEFAULT_INITIAL_MS,
            max_ms: DEFAULT_MAX_MS,
        }
    }
}

impl RetryPolicy {
    /// The wait after attempt `failed` (1-based) asked to be retried: `initial` doubled for
    /// each earlier attempt, capped at `max`.
    pub fn wait_after(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(63);
        let ms = self
            .initial_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_ms);
        Duration::from_millis(ms)
    }
}

/// Parses a wait such as `500ms`, `10s` or `2m` into milliseconds.
pub fn parse_wait(text: &str) -> Result<u64, String> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let expected = || format!("invalid wait `{text}`: expected e.g. `500ms`, `10s` or `2m`");
    let n: u64 = number.parse().map_err(|_| expected())?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        _ => return Err(expected()),
    };
    n.checked_mul(scale).ok_or_else(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_initial_and_stop_at_max() {
        let p = RetryPolicy::default();
        let waits: Vec<u64> = (1..p.attempts)
            .map(|n| p.wait_after(n).as_millis() as u64)
            .collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
        assert_eq!(waits.iter().sum::<u64>(), 35_500, "the documented total");
        assert_eq!(p.wait_after(u32::MAX), Duration::from_millis(10_000));
    }

    #[test]
    fn waits_parse_with_a_unit_only() {
        assert_eq!(parse_wait("500ms"), Ok(500));
        assert_eq!(parse_wait("10s"), Ok(10_000));
        assert_eq!(parse_wait("2m"), Ok(120_000));
        for bad in [
            "",
            "10",
            "ms",
            "1.5s",
            "-1s",
            "10 s",
            "1h",
            "99999999999999999999s",
        ] {
            assert!(parse_wait(bad).is_err(), "{bad}");
        }
    }
}
