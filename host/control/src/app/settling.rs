//! What the scaling-rule passes remember between them, per (deployment, tier): since when the
//! tier has been quiet (for `settle`), whether a judgement of it is still running (a slow
//! custom rule is never started twice, and never holds up other tiers), how often its rule
//! failed in a row (a failing rule is tried again only after a growing pause), and the last
//! warning written (so a repeated refusal is one event, not one per pass).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The pause after a custom rule's first failure; it doubles with each failure in a row.
pub const FIRST_RULE_BACKOFF: Duration = Duration::from_secs(10);
/// The longest pause between two tries of a failing rule.
pub const MAX_RULE_BACKOFF: Duration = Duration::from_secs(300);

type Key = (String, String);

fn key(dep: &str, tier: &str) -> Key {
    (dep.to_string(), tier.to_string())
}

#[derive(Default)]
struct Memory {
    /// The target last seen and since when the tier has been quiet.
    quiet: HashMap<Key, (u32, Instant)>,
    warned: HashMap<Key, String>,
    running: HashSet<Key>,
    /// Failures in a row and when the rule may run again.
    failures: HashMap<Key, (u32, Instant)>,
}

#[derive(Clone, Default)]
pub(super) struct Settling(Arc<Mutex<Memory>>);

impl Settling {
    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the tier has been quiet for `settle`, given its target `count` now; a changed
    /// target starts the clock again.
    pub(super) fn settled(&self, dep: &str, tier: &str, count: u32, settle: Duration) -> bool {
        let mut m = self.lock();
        let now = Instant::now();
        let quiet = m.quiet.entry(key(dep, tier)).or_insert((count, now));
        if quiet.0 != count {
            *quiet = (count, now);
        }
        now.duration_since(quiet.1) >= settle
    }

    /// Restarts the clock of every tier of `dep` (a task works on it).
    pub(super) fn busy(&self, dep: &str) {
        let now = Instant::now();
        for ((d, _), quiet) in self.lock().quiet.iter_mut() {
            if d == dep {
                quiet.1 = now;
            }
        }
    }

    /// Forgets deployments that are gone.
    pub(super) fn retain(&self, live: &[String]) {
        let mut m = self.lock();
        m.quiet.retain(|(d, _), _| live.contains(d));
        m.warned.retain(|(d, _), _| live.contains(d));
        m.failures.retain(|(d, _), _| live.contains(d));
    }

    /// Marks a judgement of the tier as running; `false` when one still runs or its rule is
    /// pausing after failures.
    pub(super) fn start(&self, dep: &str, tier: &str) -> bool {
        let mut m = self.lock();
        let k = key(dep, tier);
        if m.running.contains(&k) || m.failures.get(&k).is_some_and(|f| Instant::now() < f.1) {
            return false;
        }
        m.running.insert(k)
    }

    pub(super) fn finish(&self, dep: &str, tier: &str) {
        self.lock().running.remove(&key(dep, tier));
    }

    /// Counts a failure of the tier's rule; returns how many in a row and the pause before
    /// the next try.
    pub(super) fn rule_failed(&self, dep: &str, tier: &str) -> (u32, Duration) {
        let mut m = self.lock();
        let entry = m
            .failures
            .entry(key(dep, tier))
            .or_insert((0, Instant::now()));
        entry.0 += 1;
        let doublings = (entry.0 - 1).min(16);
        let pause = FIRST_RULE_BACKOFF
            .saturating_mul(1 << doublings)
            .min(MAX_RULE_BACKOFF);
        entry.1 = Instant::now() + pause;
        (entry.0, pause)
    }

    pub(super) fn rule_succeeded(&self, dep: &str, tier: &str) {
        self.lock().failures.remove(&key(dep, tier));
    }

    /// Whether `message` about the tier is new (the last pass said something else, or
    /// nothing).
    pub(super) fn first_time(&self, dep: &str, tier: &str, message: &str) -> bool {
        self.lock()
            .warned
            .insert(key(dep, tier), message.to_string())
            .as_deref()
            != Some(message)
    }

    /// Forgets the tier's last warning (it is fine again).
    pub(super) fn clear_warning(&self, dep: &str, tier: &str) {
        self.lock().warned.remove(&key(dep, tier));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_rule_pauses_longer_each_time_and_a_success_ends_the_pause() {
        let s = Settling::default();
        assert!(s.start("d", "app"));
        assert!(!s.start("d", "app"), "one judgement of a tier at a time");
        assert!(s.start("d", "db"), "other tiers are not held up");
        s.finish("d", "app");
        let pauses: Vec<u64> = (0..7)
            .map(|_| s.rule_failed("d", "app").1.as_secs())
            .collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 300, 300]);
        assert!(!s.start("d", "app"), "pausing after failures");
        s.rule_succeeded("d", "app");
        assert!(s.start("d", "app"));
    }

    #[test]
    fn a_warning_is_new_only_when_it_differs_from_the_last() {
        let s = Settling::default();
        assert!(s.first_time("d", "app", "refused"));
        assert!(!s.first_time("d", "app", "refused"));
        s.clear_warning("d", "app");
        assert!(s.first_time("d", "app", "refused"));
    }
}
