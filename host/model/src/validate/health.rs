//! Rules of a service's `health` table: an interval within MIN_INTERVAL_MS..=MAX_INTERVAL_MS,
//! a timeout of at least MIN_TIMEOUT_MS and not over the interval, counts within MAX_COUNT.

use toml::Spanned;

use super::Checker;
use crate::health::{HealthPolicy, MAX_COUNT, MAX_INTERVAL_MS, MIN_INTERVAL_MS, MIN_TIMEOUT_MS};
use crate::raw::RawHealth;
use crate::retry::parse_wait;

impl Checker<'_> {
    pub(super) fn health(&mut self, raw: Option<&Spanned<RawHealth>>) -> HealthPolicy {
        let mut policy = HealthPolicy::default();
        let Some(raw) = raw else {
            return policy;
        };
        let r = raw.get_ref();
        if let Some(ms) = self.period(r.interval.as_ref(), "interval", MIN_INTERVAL_MS) {
            policy.interval_ms = ms;
        }
        if let Some(ms) = self.period(r.timeout.as_ref(), "timeout", MIN_TIMEOUT_MS) {
            policy.timeout_ms = ms;
        }
        if policy.timeout_ms > policy.interval_ms {
            let at = r.timeout.as_ref().map_or(raw.span(), Spanned::span);
            self.error(
                at,
                format!(
                    "health timeout ({} ms) is over the health interval ({} ms)",
                    policy.timeout_ms, policy.interval_ms
                ),
            );
        }
        if let Some(n) = self.count(r.unhealthy_after.as_ref(), "unhealthy-after", 1) {
            policy.unhealthy_after = n;
        }
        if let Some(n) = self.count(r.restarts.as_ref(), "restarts", 0) {
            policy.restarts = n;
        }
        policy
    }

    fn period(&mut self, raw: Option<&Spanned<String>>, what: &str, min: u64) -> Option<u64> {
        let raw = raw?;
        match parse_wait(raw.get_ref()) {
            Ok(ms) if (min..=MAX_INTERVAL_MS).contains(&ms) => Some(ms),
            Ok(ms) => {
                let msg =
                    format!("health {what} of {ms} ms is out of range (expected {min}ms to 60m)");
                self.error(raw.span(), msg);
                None
            }
            Err(e) => {
                self.error(raw.span(), format!("health {what}: {e}"));
                None
            }
        }
    }

    fn count(&mut self, raw: Option<&Spanned<i64>>, what: &str, min: u32) -> Option<u32> {
        let raw = raw?;
        match u32::try_from(*raw.get_ref()) {
            Ok(n) if (min..=MAX_COUNT).contains(&n) => Some(n),
            _ => {
                let msg = format!(
                    "health {what} {} is out of range (expected {min} to {MAX_COUNT})",
                    raw.get_ref()
                );
                self.error(raw.span(), msg);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{HEAD, in_temp_dir};
    use crate::health::HealthPolicy;

    fn with_health(health: &str) -> Result<HealthPolicy, String> {
        let text = format!(
            "{HEAD}[tiers.t]\nmin = 1\nmax = 1\nservices = [\"a\"]\n\
             [services.a]\npackage = \"pkg\"\n{health}\n"
        );
        let (_dir, result) = in_temp_dir(&text);
        result.map(|spec| spec.services.values().next().unwrap().health)
    }

    #[test]
    fn a_service_without_health_gets_the_default_and_keys_override_it() {
        assert_eq!(with_health(""), Ok(HealthPolicy::default()));
        let p = with_health("health = { interval = \"1s\", timeout = \"500ms\" }").unwrap();
        assert_eq!((p.interval_ms, p.timeout_ms), (1_000, 500));
        assert_eq!((p.unhealthy_after, p.restarts), (3, 3));
        let p = with_health("health = { unhealthy-after = 1, restarts = 0 }").unwrap();
        assert_eq!(
            (p.interval_ms, p.unhealthy_after, p.restarts),
            (10_000, 1, 0)
        );
    }

    #[test]
    fn bad_health_values_are_refused_where_they_are() {
        for (health, expected) in [
            (
                "health = { interval = \"500ms\" }",
                "9:23: health interval of 500 ms is out of range (expected 1000ms to 60m)",
            ),
            (
                "health = { interval = \"61m\" }",
                "9:23: health interval of 3660000 ms is out of range",
            ),
            (
                "health = { timeout = \"10ms\" }",
                "9:22: health timeout of 10 ms is out of range (expected 100ms to 60m)",
            ),
            (
                "health = { interval = \"1s\", timeout = \"2s\" }",
                "9:39: health timeout (2000 ms) is over the health interval (1000 ms)",
            ),
            (
                "health = { interval = \"soon\" }",
                "9:23: health interval: invalid wait `soon`",
            ),
            (
                "health = { unhealthy-after = 0 }",
                "9:30: health unhealthy-after 0 is out of range (expected 1 to 100)",
            ),
            (
                "health = { restarts = -1 }",
                "9:23: health restarts -1 is out of range (expected 0 to 100)",
            ),
            ("health = { every = \"1s\" }", "unknown field `every`"),
        ] {
            let err = with_health(health).unwrap_err();
            assert!(err.contains(expected), "{health}: {err}");
        }
    }
}
