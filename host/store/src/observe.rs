//! Timing of journal writes, reported to one observer the process sets (the control plane's
//! telemetry), so the store stays free of any metrics library.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Which kind of journal write was timed; a small fixed set, fit for a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JournalWrite {
    /// A step recorded as started (`step_begin`).
    StepBegin,
    /// A step recorded as completed or failed.
    StepEnd,
    /// An event appended.
    Event,
}

impl JournalWrite {
    /// Every kind, e.g. to show each one before it happened.
    pub const ALL: [JournalWrite; 3] = [Self::StepBegin, Self::StepEnd, Self::Event];

    /// The kind's name in metrics: `step_begin`, `step_end` or `event`.
    pub fn name(self) -> &'static str {
        match self {
            Self::StepBegin => "step_begin",
            Self::StepEnd => "step_end",
            Self::Event => "event",
        }
    }
}

/// Told how long each journal write took, waiting for the connection included.
pub type WriteObserver = fn(JournalWrite, Duration);

static OBSERVER: OnceLock<WriteObserver> = OnceLock::new();

/// Sets the process's journal-write observer; `false` if one was set before (it stays).
pub fn observe_journal_writes(observer: WriteObserver) -> bool {
    OBSERVER.set(observer).is_ok()
}

/// Runs the write `f`, telling the observer (if any) how long it took.
pub(crate) fn timed<T>(write: JournalWrite, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let result = f();
    if let Some(observe) = OBSERVER.get() {
        observe(write, start.elapsed());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NewEvent, Store};
    use std::cell::Cell;

    thread_local! {
        /// Writes this thread saw per kind, in `JournalWrite::ALL` order (other tests write too).
        static SEEN: [Cell<u64>; 3] = const { [Cell::new(0), Cell::new(0), Cell::new(0)] };
    }

    fn count(write: JournalWrite, _took: Duration) {
        let i = JournalWrite::ALL.iter().position(|w| *w == write).unwrap();
        SEEN.with(|s| s[i].set(s[i].get() + 1));
    }

    fn seen() -> Vec<u64> {
        SEEN.with(|s| s.iter().map(Cell::get).collect())
    }

    #[test]
    fn every_journal_write_is_timed_once_set() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.db")).unwrap();
        assert!(observe_journal_writes(count));
        assert!(
            !observe_journal_writes(count),
            "a second observer is refused"
        );
        let before = seen();
        store.step_begin("d", "k", "digest").unwrap();
        store
            .step_complete("d", "k", &serde_json::Value::Null)
            .unwrap();
        store.step_begin("d", "k2", "digest").unwrap();
        store.step_failed("d", "k2", "no").unwrap();
        let event = NewEvent {
            deployment: Some("d".into()),
            component: "test".into(),
            server: None,
            service: None,
            level: "info".into(),
            message: "m".into(),
        };
        store.append_event(&event).unwrap();
        let after = seen();
        assert_eq!(after[0] - before[0], 2, "step begins");
        assert_eq!(after[1] - before[1], 2, "step ends");
        assert_eq!(after[2] - before[2], 1, "events");
    }
}
