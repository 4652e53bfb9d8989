//! The counters and histograms moved where the work happens: the engine's hook calls, its
//! recoveries and change sets, the autoscaler's decisions and the store's journal writes.
//! They live in one process-wide set, which each scrape registers afresh (clones share it).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::LazyLock;
use std::time::Duration;
use stratus_store::JournalWrite;

/// Hook duration buckets, in seconds: 5 ms × 4ⁿ up to about 5.5 minutes (a hook may load a
/// data source; the runtime's own timeouts end it before 10 minutes).
const HOOK_BUCKETS: (f64, f64, u16) = (0.005, 4.0, 9);

/// Journal write buckets, in seconds: 100 µs × 4ⁿ up to about 1.6 s (SQLite in WAL mode
/// commits in well under a millisecond; seconds mean the disk or a lock is in trouble).
const JOURNAL_BUCKETS: (f64, f64, u16) = (0.0001, 4.0, 8);

/// How a hook call ended, as the engine saw it.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // the label values, as Prometheus spells them
pub enum HookOutcome {
    /// The hook returned its result.
    ok,
    /// The hook failed and is not called again (a trap, timeout, denial, or a hook error
    /// not marked retryable or on its last attempt).
    failed,
    /// The hook asked to be called again and will be.
    retryable,
    /// No report: the agent could not be reached or answered with an error.
    error,
}

/// A scaling event: a change set applied to the servers, or an autoscaling decision.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // the label values, as Prometheus spells them
pub enum Scaling {
    /// A change set (servers to add or end) was applied.
    change_set,
    /// The scaling rules decided to add servers.
    autoscale_up,
    /// The scaling rules decided to end servers.
    autoscale_down,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    hook: &'static str,
    outcome: HookOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookName {
    hook: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScalingLabel {
    kind: Scaling,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabel {
    write: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

struct Metrics {
    hook_calls: Family<HookLabels, Counter>,
    hook_seconds: Histograms<HookName>,
    recoveries: Counter,
    scaling: Family<ScalingLabel, Counter>,
    journal_seconds: Histograms<WriteLabel>,
}

fn hook_histogram() -> Histogram {
    let (start, factor, n) = HOOK_BUCKETS;
    Histogram::new(exponential_buckets(start, factor, n))
}

fn journal_histogram() -> Histogram {
    let (start, factor, n) = JOURNAL_BUCKETS;
    Histogram::new(exponential_buckets(start, factor, n))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let m = Metrics {
        hook_calls: Family::default(),
        hook_seconds: Family::new_with_constructor(hook_histogram),
        recoveries: Counter::default(),
        scaling: Family::default(),
        journal_seconds: Family::new_with_constructor(journal_histogram),
    };
    // Shown at 0 before they happen, so a rate over them has a start.
    for kind in [
        Scaling::change_set,
        Scaling::autoscale_up,
        Scaling::autoscale_down,
    ] {
        let _ = m.scaling.get_or_create(&ScalingLabel { kind });
    }
    for write in JournalWrite::ALL {
        let write = write.name();
        let _ = m.journal_seconds.get_or_create(&WriteLabel { write });
    }
    m
});

/// Starts collecting: journal writes are timed from now on. Called once by the control plane
/// as it starts; calling it again changes nothing.
pub fn install() {
    LazyLock::force(&METRICS);
    stratus_store::observe_journal_writes(journal_write);
}

fn journal_write(write: JournalWrite, took: Duration) {
    let write = write.name();
    let histogram = METRICS.journal_seconds.get_or_create(&WriteLabel { write });
    histogram.observe(took.as_secs_f64());
}

/// One hook call (`hook` as the WIT names it) that ended with `outcome` after `took`.
pub fn hook_call(hook: &'static str, outcome: HookOutcome, took: Duration) {
    METRICS
        .hook_calls
        .get_or_create(&HookLabels { hook, outcome })
        .inc();
    let histogram = METRICS.hook_seconds.get_or_create(&HookName { hook });
    histogram.observe(took.as_secs_f64());
}

/// A lost or condemned server was replaced by a new one.
pub fn server_replaced() {
    METRICS.recoveries.inc();
}

/// A change set (servers added or ended) was applied to a deployment.
pub fn change_set_applied() {
    METRICS
        .scaling
        .get_or_create(&ScalingLabel {
            kind: Scaling::change_set,
        })
        .inc();
}

/// The scaling rules decided to move a tier up (`up`) or down.
pub fn autoscale_decision(up: bool) {
    let kind = match up {
        true => Scaling::autoscale_up,
        false => Scaling::autoscale_down,
    };
    METRICS.scaling.get_or_create(&ScalingLabel { kind }).inc();
}

/// Registers every series of the process-wide set on `registry`.
pub(crate) fn register(registry: &mut Registry) {
    let m = &*METRICS;
    registry.register(
        "hook_calls",
        "Hook calls by hook and outcome",
        m.hook_calls.clone(),
    );
    registry.register(
        "hook_call_duration_seconds",
        "How long hook calls took, as the engine waited for them",
        m.hook_seconds.clone(),
    );
    registry.register(
        "recoveries",
        "Servers replaced after they were lost or condemned",
        m.recoveries.clone(),
    );
    registry.register(
        "scaling_events",
        "Change sets applied and autoscaling decisions",
        m.scaling.clone(),
    );
    registry.register(
        "journal_write_duration_seconds",
        "How long journal writes took, waiting for the store included",
        m.journal_seconds.clone(),
    );
}
