//! CPU and memory samples of a server, as the control plane keeps them: each agent reports
//! one per metrics interval, and the control plane keeps a bounded window per server that
//! `status` shows and scaling rules read.

use serde::{Deserialize, Serialize};

use crate::ids::ServerId;

/// The metrics interval when the deployment file gives none.
pub const DEFAULT_INTERVAL_MS: u64 = 5_000;
/// The shortest metrics interval a file may ask for.
pub const MIN_INTERVAL_MS: u64 = 500;
/// The longest metrics interval a file may ask for.
pub const MAX_INTERVAL_MS: u64 = 300_000;
/// Samples kept per server, oldest dropped first: at the shortest interval, ten minutes,
/// which is also the longest `breach` or `cooldown` a scaling rule may ask for.
pub const MAX_SAMPLES: usize = 1_200;

/// One report of a server's own services.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When the control plane received it, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// CPU time the server's processes used over the last interval, in percent of one CPU
    /// (a process that keeps one core busy is 100; two cores are 200).
    pub cpu_percent: f64,
    /// Resident memory of the server's processes, in bytes.
    pub memory_bytes: u64,
    /// `memory_bytes` in percent of the memory the server has (for a local server, the
    /// machine's).
    pub memory_percent: f64,
}

/// The samples of one server, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerWindow {
    pub server: ServerId,
    pub samples: Vec<Sample>,
}

impl ServerWindow {
    /// The most recent sample, if any.
    pub fn latest(&self) -> Option<&Sample> {
        self.samples.last()
    }

    /// The samples of the last `period_ms` before `now_ms`, if the server was observed for
    /// the whole period (its first sample is at least `period_ms` old); otherwise `None`, so
    /// that a server too new to judge never votes.
    pub fn over(&self, now_ms: u64, period_ms: u64) -> Option<&[Sample]> {
        let first = self.samples.first()?;
        let start = now_ms.checked_sub(period_ms)?;
        if first.at_ms > start {
            return None;
        }
        let from = self.samples.partition_point(|s| s.at_ms <= start);
        let recent = &self.samples[from..];
        (!recent.is_empty()).then_some(recent)
    }
}
