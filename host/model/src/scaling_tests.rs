use super::*;
use crate::ids::{Name, ServerId};

fn policy() -> ScalingPolicy {
    ScalingPolicy {
        thresholds: Thresholds {
            cpu_high: Some(75),
            cpu_low: Some(20),
            ram_high: None,
            ram_low: None,
        },
        breach_ms: 2_000,
        cooldown_ms: 3_000,
        settle_ms: 2_000,
        increment: 1,
        rule: None,
    }
}

/// A server sampled every 500 ms from `start_ms` with the given CPU percents.
fn window(n: u32, start_ms: u64, cpu: &[f64]) -> ServerWindow {
    ServerWindow {
        server: ServerId::new(Name::new("app").unwrap(), n),
        samples: cpu
            .iter()
            .enumerate()
            .map(|(i, c)| Sample {
                at_ms: start_ms + 500 * i as u64,
                cpu_percent: *c,
                memory_bytes: 1 << 20,
                memory_percent: 1.0,
            })
            .collect(),
    }
}

#[test]
fn a_server_votes_up_only_after_the_whole_breach_above_the_threshold() {
    let p = policy();
    // Samples at 0..=3000 ms; the breach window at now=3000 is (1000, 3000].
    let hot = window(1, 0, &[10.0, 10.0, 10.0, 90.0, 90.0, 90.0, 90.0]);
    assert_eq!(p.threshold_vote(&hot, 3_000), Vote::Up);
    let dip = window(1, 0, &[10.0, 10.0, 10.0, 90.0, 50.0, 90.0, 90.0]);
    assert_eq!(p.threshold_vote(&dip, 3_000), Vote::Stay);
    // Observed for less than the breach: too new to judge.
    let new = window(1, 1_500, &[90.0, 90.0, 90.0]);
    assert_eq!(p.threshold_vote(&new, 2_500), Vote::Stay);
}

#[test]
fn a_server_votes_down_after_the_whole_cooldown_below_every_low_threshold() {
    let mut p = policy();
    let idle = window(1, 0, &[5.0; 8]);
    assert_eq!(p.threshold_vote(&idle, 3_500), Vote::Down);
    // Not observed for the whole cooldown yet.
    assert_eq!(p.threshold_vote(&idle, 2_500), Vote::Stay);
    // A RAM low threshold the server is above keeps it from voting down.
    p.thresholds.ram_low = Some(1);
    assert_eq!(p.threshold_vote(&idle, 3_500), Vote::Stay);
    // Without any low threshold nothing votes down.
    p.thresholds.cpu_low = None;
    p.thresholds.ram_low = None;
    assert_eq!(p.threshold_vote(&idle, 3_500), Vote::Stay);
}

#[test]
fn the_majority_decides_by_increment_within_min_and_max() {
    let mut p = policy();
    use Vote::*;
    let d = p.decide(&[Up, Up, Stay], 3, 1, 10).unwrap();
    assert_eq!((d.from, d.to, d.voters()), (3, 4, 2));
    assert_eq!(
        p.decide(&[Up, Stay], 2, 1, 10),
        None,
        "half is not a majority"
    );
    assert_eq!(p.decide(&[Up, Up], 2, 1, 2), None, "already at max");
    p.increment = 5;
    assert_eq!(p.decide(&[Up, Up], 2, 1, 4).unwrap().to, 4, "capped at max");
    assert_eq!(
        p.decide(&[Down, Down, Down], 3, 2, 4).unwrap().to,
        2,
        "floored at min"
    );
    assert_eq!(p.decide(&[Down, Down], 2, 2, 4), None, "already at min");
    assert_eq!(p.decide(&[], 0, 0, 4), None, "no servers, no vote");
}

#[test]
fn reasons_name_the_thresholds_and_the_period() {
    let mut p = policy();
    assert_eq!(threshold_reason(&p, true), "above 75 % CPU for 2s");
    assert_eq!(threshold_reason(&p, false), "below 20 % CPU for 3s");
    p.thresholds.ram_high = Some(80);
    p.breach_ms = 120_000;
    assert_eq!(
        threshold_reason(&p, true),
        "above 75 % CPU or 80 % RAM for 2m"
    );
}

#[test]
fn votes_round_trip_through_scale_check_numbers() {
    for v in [Vote::Up, Vote::Stay, Vote::Down] {
        assert_eq!(Vote::from_i8(v.as_i8()), Some(v));
    }
    assert_eq!(Vote::from_i8(2), None);
    assert_eq!(Vote::from_i8(-128), None);
}
