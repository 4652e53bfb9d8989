//! enStratus's threshold rule as a `scaler` component. A server votes 1 when it was observed
//! for the whole breach and every sample of the last breach is above `cpu-high` (or every one
//! above `ram-high`); -1 when it was observed for the whole cooldown and every sample of it is
//! below every set low threshold (at least one set); else 0.

wit_bindgen::generate!({ world: "scaler", path: "../../wit" });

use exports::stratus::plugin::scale_rule::{Guest, Sample, ServerWindow, Thresholds, TierWindow};

struct ThresholdScaler;

/// The samples of the last `period_ms` before `now_ms`, if the first sample is at least
/// `period_ms` old (a server too new to judge does not vote); samples are oldest first.
fn over(samples: &[Sample], now_ms: u64, period_ms: u64) -> Option<&[Sample]> {
    let first = samples.first()?;
    let start = now_ms.checked_sub(period_ms)?;
    if first.at_ms > start {
        return None;
    }
    let from = samples.partition_point(|s| s.at_ms <= start);
    let recent = &samples[from..];
    (!recent.is_empty()).then_some(recent)
}

fn above(t: &Thresholds, samples: &[Sample]) -> bool {
    let all_over = |limit: Option<u32>, value: fn(&Sample) -> f64| {
        limit.is_some_and(|l| samples.iter().all(|s| value(s) > f64::from(l)))
    };
    all_over(t.cpu_high, |s| s.cpu_percent) || all_over(t.ram_high, |s| s.memory_percent)
}

fn below(t: &Thresholds, samples: &[Sample]) -> bool {
    let under = |limit: Option<u32>, v: f64| limit.is_none_or(|l| v < f64::from(l));
    (t.cpu_low.is_some() || t.ram_low.is_some())
        && samples
            .iter()
            .all(|s| under(t.cpu_low, s.cpu_percent) && under(t.ram_low, s.memory_percent))
}

fn vote(w: &TierWindow, server: &ServerWindow) -> i8 {
    let t = &w.thresholds;
    if over(&server.samples, w.now_ms, w.breach_ms).is_some_and(|s| above(t, s)) {
        1
    } else if over(&server.samples, w.now_ms, w.cooldown_ms).is_some_and(|s| below(t, s)) {
        -1
    } else {
        0
    }
}

impl Guest for ThresholdScaler {
    fn scale_check(window: TierWindow) -> Result<Vec<i8>, String> {
        Ok(window.servers.iter().map(|s| vote(&window, s)).collect())
    }
}

export!(ThresholdScaler);
