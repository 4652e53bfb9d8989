//! Rules of a service's `retry` table: attempts within 1..=MAX_ATTEMPTS, waits with a unit,
//! each at most MAX_WAIT_MS, and `max` not below `initial`.

use toml::Spanned;

use super::Checker;
use crate::raw::RawRetry;
use crate::retry::{MAX_ATTEMPTS, MAX_WAIT_MS, RetryPolicy, parse_wait};

impl Checker<'_> {
    pub(super) fn retry(&mut self, raw: Option<&Spanned<RawRetry>>) -> RetryPolicy {
        let mut policy = RetryPolicy::default();
        let Some(raw) = raw else {
            return policy;
        };
        if let Some(a) = &raw.get_ref().attempts {
            match u32::try_from(*a.get_ref()) {
                Ok(n) if (1..=MAX_ATTEMPTS).contains(&n) => policy.attempts = n,
                _ => self.error(
                    a.span(),
                    format!(
                        "retry attempts {} is out of range (expected 1 to {MAX_ATTEMPTS})",
                        a.get_ref()
                    ),
                ),
            }
        }
        if let Some(ms) = self.wait(raw.get_ref().initial.as_ref(), "initial") {
            policy.initial_ms = ms;
        }
        if let Some(ms) = self.wait(raw.get_ref().max.as_ref(), "max") {
            policy.max_ms = ms;
        }
        if policy.max_ms < policy.initial_ms {
            self.error(
                raw.span(),
                format!(
                    "retry max ({} ms) is below retry initial ({} ms)",
                    policy.max_ms, policy.initial_ms
                ),
            );
        }
        policy
    }

    fn wait(&mut self, raw: Option<&Spanned<String>>, what: &str) -> Option<u64> {
        let raw = raw?;
        match parse_wait(raw.get_ref()) {
            Ok(ms) if (1..=MAX_WAIT_MS).contains(&ms) => Some(ms),
            Ok(ms) => {
                let msg = format!("retry {what} of {ms} ms is out of range (expected 1ms to 10m)");
                self.error(raw.span(), msg);
                None
            }
            Err(e) => {
                self.error(raw.span(), format!("retry {what}: {e}"));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{HEAD, in_temp_dir};
    use crate::retry::RetryPolicy;

    fn with_retry(retry: &str) -> Result<RetryPolicy, String> {
        let text = format!(
            "{HEAD}[tiers.t]\nmin = 1\nmax = 1\nservices = [\"a\"]\n\
             [services.a]\npackage = \"pkg\"\n{retry}\n"
        );
        let (_dir, result) = in_temp_dir(&text);
        result.map(|spec| spec.services.values().next().unwrap().retry)
    }

    #[test]
    fn a_service_without_retry_gets_the_default_and_keys_override_it() {
        assert_eq!(with_retry(""), Ok(RetryPolicy::default()));
        let p = with_retry("retry = { attempts = 3, initial = \"20ms\" }").unwrap();
        assert_eq!((p.attempts, p.initial_ms, p.max_ms), (3, 20, 10_000));
        let p = with_retry("retry = { max = \"1m\" }").unwrap();
        assert_eq!((p.attempts, p.initial_ms, p.max_ms), (8, 500, 60_000));
    }

    #[test]
    fn bad_retry_values_are_refused_where_they_are() {
        for (retry, expected) in [
            (
                "retry = { attempts = 0 }",
                "9:22: retry attempts 0 is out of range (expected 1 to 100)",
            ),
            (
                "retry = { attempts = 101 }",
                "9:22: retry attempts 101 is out of range (expected 1 to 100)",
            ),
            (
                "retry = { initial = \"5\" }",
                "9:21: retry initial: invalid wait `5`: expected e.g. `500ms`, `10s` or `2m`",
            ),
            (
                "retry = { max = \"11m\" }",
                "9:17: retry max of 660000 ms is out of range (expected 1ms to 10m)",
            ),
            (
                "retry = { initial = \"2s\", max = \"1s\" }",
                "9:9: retry max (1000 ms) is below retry initial (2000 ms)",
            ),
            ("retry = { tries = 3 }", "unknown field `tries`"),
        ] {
            let err = with_retry(retry).unwrap_err();
            assert!(err.contains(expected), "{retry}: {err}");
        }
    }
}
