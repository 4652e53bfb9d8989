//! Scaling rules of a tier, with enStratus's meanings, set with
//! `[tiers.app.scaling] cpu-high = 75, cpu-low = 20, breach = "2m", cooldown = "5m", settle = "1m", increment = 1`.
//!
//! Each server of the tier votes, as enStratus's `scaleCheck` did: 1 (scale up), 0 or -1
//! (scale down). The built-in threshold rule votes 1 for a server that stayed above a high
//! threshold for the whole `breach`, and -1 for one that stayed below every low threshold for
//! the whole `cooldown`; a custom rule is a sandboxed `scaler` component that returns the
//! votes itself. Either way the majority of the tier's servers decides, by `increment`,
//! never leaving `min..=max`, and never within `settle` of the tier's last scaling event.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::metrics::{Sample, ServerWindow};
use crate::spec::PackageRef;

/// The longest `breach` or `cooldown` a file may ask for: the window the control plane keeps.
pub const MAX_PERIOD_MS: u64 = 600_000;
/// The shortest `breach` or `cooldown` a file may ask for.
pub const MIN_PERIOD_MS: u64 = 1_000;
/// The longest `settle` a file may ask for (one hour).
pub const MAX_SETTLE_MS: u64 = 3_600_000;
/// The highest CPU threshold: load over the number of CPUs, × 100, may pass 100.
pub const MAX_CPU_PERCENT: u32 = 1_000;
/// The highest memory threshold.
pub const MAX_RAM_PERCENT: u32 = 100;
/// The largest `increment`.
pub const MAX_INCREMENT: u32 = 100;
/// `breach` when the file gives none (enStratus's default sustain window).
pub const DEFAULT_BREACH_MS: u64 = 120_000;
/// `cooldown` when the file gives none.
pub const DEFAULT_COOLDOWN_MS: u64 = 300_000;
/// `settle` when the file gives none.
pub const DEFAULT_SETTLE_MS: u64 = 60_000;

/// A tier's `[scaling]` table, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScalingPolicy {
    pub thresholds: Thresholds,
    /// How long the majority must stay above a high threshold before scaling up.
    pub breach_ms: u64,
    /// How long the majority must stay below the low thresholds before scaling down (a
    /// sustain window, as in enStratus, not a pause).
    pub cooldown_ms: u64,
    /// The pause after any scaling event of the tier before the next decision.
    pub settle_ms: u64,
    /// Servers added or removed by one decision.
    pub increment: u32,
    /// A `scaler` package directory whose votes replace the threshold rule's.
    pub rule: Option<PackageRef>,
}

/// Percent thresholds; a missing one never triggers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thresholds {
    pub cpu_high: Option<u32>,
    pub cpu_low: Option<u32>,
    pub ram_high: Option<u32>,
    pub ram_low: Option<u32>,
}

/// One server's vote: up, stay or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Vote {
    Up,
    Stay,
    Down,
}

impl Vote {
    /// enStratus's `scaleCheck` number: 1, 0 or -1.
    pub fn as_i8(self) -> i8 {
        match self {
            Vote::Up => 1,
            Vote::Stay => 0,
            Vote::Down => -1,
        }
    }

    /// The vote a `scaleCheck` number stands for, or `None` outside -1..=1.
    pub fn from_i8(n: i8) -> Option<Vote> {
        match n {
            1 => Some(Vote::Up),
            0 => Some(Vote::Stay),
            -1 => Some(Vote::Down),
            _ => None,
        }
    }
}

impl ScalingPolicy {
    /// The built-in threshold rule's vote for one server at `now_ms`.
    pub fn threshold_vote(&self, window: &ServerWindow, now_ms: u64) -> Vote {
        let t = &self.thresholds;
        let above = |samples: &[Sample]| {
            let cpu = t
                .cpu_high
                .is_some_and(|h| samples.iter().all(|s| s.cpu_percent > f64::from(h)));
            let ram = t
                .ram_high
                .is_some_and(|h| samples.iter().all(|s| s.memory_percent > f64::from(h)));
            cpu || ram
        };
        let below = |samples: &[Sample]| {
            (t.cpu_low.is_some() || t.ram_low.is_some())
                && samples.iter().all(|s| {
                    t.cpu_low.is_none_or(|l| s.cpu_percent < f64::from(l))
                        && t.ram_low.is_none_or(|l| s.memory_percent < f64::from(l))
                })
        };
        if window.over(now_ms, self.breach_ms).is_some_and(above) {
            Vote::Up
        } else if window.over(now_ms, self.cooldown_ms).is_some_and(below) {
            Vote::Down
        } else {
            Vote::Stay
        }
    }

    /// The threshold rule's votes, one per window, in order.
    pub fn threshold_votes(&self, windows: &[ServerWindow], now_ms: u64) -> Vec<Vote> {
        windows
            .iter()
            .map(|w| self.threshold_vote(w, now_ms))
            .collect()
    }

    /// What the majority of `votes` asks of a tier of `current` servers within `min..=max`:
    /// `None` when there is no majority or the bound is already reached.
    pub fn decide(&self, votes: &[Vote], current: u32, min: u32, max: u32) -> Option<Decision> {
        let tally = Tally::of(votes);
        let to = if tally.up * 2 > tally.servers {
            current.saturating_add(self.increment).min(max)
        } else if tally.down * 2 > tally.servers {
            current.saturating_sub(self.increment).max(min)
        } else {
            return None;
        };
        (to != current).then_some(Decision {
            from: current,
            to,
            tally,
        })
    }
}

/// How a tier's servers voted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub servers: usize,
    pub up: usize,
    pub down: usize,
}

impl Tally {
    pub fn of(votes: &[Vote]) -> Tally {
        Tally {
            servers: votes.len(),
            up: votes.iter().filter(|v| **v == Vote::Up).count(),
            down: votes.iter().filter(|v| **v == Vote::Down).count(),
        }
    }
}

/// A scaling decision: the tier goes from `from` servers to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub from: u32,
    pub to: u32,
    pub tally: Tally,
}

impl Decision {
    pub fn is_up(&self) -> bool {
        self.to > self.from
    }

    /// How many servers voted for the decision.
    pub fn voters(&self) -> usize {
        if self.is_up() {
            self.tally.up
        } else {
            self.tally.down
        }
    }
}

/// The reason an event gives for a decision of the threshold rule, e.g. "above 75 % CPU for 2s".
pub fn threshold_reason(policy: &ScalingPolicy, up: bool) -> String {
    let t = &policy.thresholds;
    let (cpu, ram, period, word) = if up {
        (t.cpu_high, t.ram_high, policy.breach_ms, "above")
    } else {
        (t.cpu_low, t.ram_low, policy.cooldown_ms, "below")
    };
    let limits: Vec<String> = [
        cpu.map(|c| format!("{c} % CPU")),
        ram.map(|r| format!("{r} % RAM")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let joiner = if up { " or " } else { " and " };
    format!("{word} {} for {}", limits.join(joiner), Period(period))
}

/// A period in the unit the file most likely used: "2m", "90s", "1500ms".
pub struct Period(pub u64);

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms.is_multiple_of(60_000) && ms > 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1_000) {
            write!(f, "{}s", ms / 1_000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

#[cfg(test)]
#[path = "scaling_tests.rs"]
mod tests;
