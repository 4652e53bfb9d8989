//! The local provider's lease table under a launch's load: N holders lease an address one
//! after another in one state directory, then give them all back. Prints the median time of
//! each phase over `STRATUS_BENCH_ROUNDS` rounds (default 5) per N, to compare two builds
//! run side by side (BENCHMARKS.md). Each lease also claims its address machine-wide, as a
//! launch does, so that cost is in both phases of both builds.

use std::time::{Duration, Instant};
use stratus_provider::{Lease, Leases};

const SIZES: [usize; 4] = [250, 500, 1000, 2000];

fn main() {
    let rounds: usize = std::env::var("STRATUS_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    for n in SIZES {
        let (mut acquire, mut release) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (a, r) = round(n);
            acquire.push(a);
            release.push(r);
        }
        println!(
            "{n} leases: acquire {:.1} ms, release {:.1} ms (median of {rounds})",
            median(acquire),
            median(release)
        );
    }
}

/// One round's acquire and release times.
fn round(n: usize) -> (Duration, Duration) {
    let state = tempfile::tempdir().expect("a temporary state directory");
    let leases = Leases::new(state.path());
    let started = Instant::now();
    let addresses: Vec<_> = (0..n)
        .map(|i| {
            let holder = Lease {
                deployment: "bench".into(),
                server_id: format!("app-{i}"),
            };
            leases.acquire(holder, u64::MAX).expect("a free address")
        })
        .collect();
    let acquired = started.elapsed();
    let started = Instant::now();
    for address in addresses {
        leases.release(address).expect("released");
    }
    (acquired, started.elapsed())
}

fn median(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1000.0
}
