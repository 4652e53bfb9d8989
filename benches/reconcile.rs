//! Reconcile benchmark (a bench binary, not a timed test), with the release `stratus` binary on
//! the local provider, each part in a fresh state directory:
//!
//! * `scale`: hello launched with app `min = 10, max = 100`, then `stratus scale hello app 100`
//!   and `stratus scale hello app 10`, each timed until the command exits 0 (the tier RUNNING
//!   at its target), several cycles in the same deployment.
//! * `hello-loss`: hello (2 app servers, `recovery-grace = "2s"`); one app server's process
//!   group is killed and the time from the kill until status shows the deployment RUNNING with
//!   the replacement's services RUNNING is measured, beside the engine's own event.
//! * `three-tier-loss`: the same on `examples/three-tier` (real HAProxy and MariaDB), killing an
//!   app server, then (`three-tier-db`) the database server.
//!
//! Where the time goes is read from the event journal's millisecond timestamps.
//!
//! Run: `cargo bench --bench reconcile -- [scale] [hello-loss] [three-tier-loss]
//! [three-tier-db] [--runs N]` (all parts and 3 runs when none is named).

use serde_json::Value;
use std::time::{Duration, Instant};

/// How often status is polled while waiting for a replacement; the measured recovery times
/// are late by at most this plus one status call.
const POLL: Duration = Duration::from_millis(50);
/// Longest wait for a replacement before the run counts as failed.
const RECOVERY_LIMIT: Duration = Duration::from_secs(120);

mod common;

use common::*;

/// Prints the gaps between consecutive events of a window whose gap is at least `min_gap_ms`,
/// and the time from the window's start to the first and last event of each kind of message
/// (its text up to the first digit or server id).
fn breakdown(events: &[Event], start_ms: i64, end_ms: i64) {
    let window: Vec<&Event> = events
        .iter()
        .filter(|e| e.ms >= start_ms - 5 && e.ms <= end_ms + 5)
        .collect();
    println!("    {} events in the window", window.len());
    let mut kinds: Vec<(String, i64, i64, usize)> = Vec::new();
    for e in &window {
        let kind = kind_of(e);
        match kinds.iter_mut().find(|k| k.0 == kind) {
            Some(k) => {
                k.2 = e.ms;
                k.3 += 1;
            }
            None => kinds.push((kind, e.ms, e.ms, 1)),
        }
    }
    for (kind, first, last, n) in kinds {
        println!(
            "    +{:>6} ms .. +{:>6} ms  x{n:<4} {kind}",
            first - start_ms,
            last - start_ms
        );
    }
}

/// An event's kind: its component and message with numbers and server ids blurred.
fn kind_of(e: &Event) -> String {
    let component = e.who.split(' ').next().unwrap_or("");
    let message: String = e
        .message
        .split(' ')
        .map(|w| {
            if w.chars().any(|c| c.is_ascii_digit()) {
                "#"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let message: String = message.chars().take(70).collect();
    format!("{component}: {message}")
}

/// Longest a `stratus scale` is followed before the run counts as failed (the CLI's own
/// default is 900 s).
const SCALE_TIMEOUT: &str = "120";

/// Times of the scale cycles that completed.
#[derive(Default)]
struct ScaleSamples {
    ups: Vec<f64>,
    downs: Vec<f64>,
    gones: Vec<f64>,
}

/// Scale-up 10 → 100 and scale-down 100 → 10 of hello's app tier, `runs` cycles. A failed
/// cycle ends the part; the cycles before it are still summarized.
fn scale(runs: usize) -> Result<(), String> {
    println!("## hello app tier: scale-up 10 -> 100, scale-down 100 -> 10");
    let bench = Bench::new("hello");
    let file = bench.write_file("hello.toml", &hello(10, 100, ""));
    let launch = bench.timed(&["launch", file.to_str().unwrap()])?;
    println!("launch with 10 app servers: {launch:.2} s");
    let mut samples = ScaleSamples::default();
    let mut result = Ok(());
    for run in 1..=runs {
        result = scale_cycle(&bench, run, &mut samples);
        if result.is_err() {
            break;
        }
    }
    println!(
        "scale-up 10 -> 100: {} (target <= 3 s)",
        summary(&samples.ups)
    );
    println!(
        "scale-down 100 -> 10: {} (target <= 2 s)",
        summary(&samples.downs)
    );
    println!(
        "scale-down, until the removed agents are gone: {}",
        summary(&samples.gones)
    );
    result
}

/// One cycle 10 → 100 → 10; the event breakdown is shown for the first cycle and for any
/// step that missed its target.
fn scale_cycle(bench: &Bench, run: usize, samples: &mut ScaleSamples) -> Result<(), String> {
    let start = now_ms_of_day();
    let up = bench.timed(&["scale", "hello", "app", "100", "--timeout", SCALE_TIMEOUT])?;
    let end = now_ms_of_day();
    let d = bench.deployment()?;
    let app = servers(&d, "app");
    if d["state"] != "RUNNING" || app.len() != 100 || !all_running(&app) {
        return Err(format!("after scale-up: {}", brief(&d)));
    }
    println!("run {run}: scale-up 10 -> 100: {up:.2} s");
    if run == 1 || up > 3.0 {
        breakdown(&bench.events(), start, end);
    }
    samples.ups.push(up);

    let before: Vec<u32> = app
        .iter()
        .filter_map(|s| s["pid"].as_u64())
        .map(|p| p as u32)
        .collect();
    let start = now_ms_of_day();
    let started = Instant::now();
    let down = bench.timed(&["scale", "hello", "app", "10", "--timeout", SCALE_TIMEOUT]);
    let end = now_ms_of_day();
    let down = down.map_err(|e| {
        breakdown(&bench.events(), start, end);
        format!(
            "{e}; now: {}",
            bench.deployment().map(|d| brief(&d)).unwrap_or(e.clone())
        )
    })?;
    let d = bench.deployment()?;
    let app = servers(&d, "app");
    let kept = pids(&d);
    let leaving: Vec<u32> = before.into_iter().filter(|p| !kept.contains(p)).collect();
    let left = leaving.len() == 90
        && leaving
            .iter()
            .all(|&p| wait_gone(p, Duration::from_secs(30)));
    let gone = started.elapsed().as_secs_f64();
    if d["state"] != "RUNNING" || app.len() != 10 || !all_running(&app) || !left {
        return Err(format!(
            "after scale-down (removed agents all gone: {left}): {}",
            brief(&d)
        ));
    }
    println!(
        "run {run}: scale-down 100 -> 10: {down:.2} s (the 90 removed agents gone after \
         {gone:.2} s)"
    );
    if run == 1 || down > 2.0 {
        breakdown(&bench.events(), start, end);
    }
    samples.downs.push(down);
    samples.gones.push(gone);
    Ok(())
}

/// A deployment's state and reason, and its servers that are not RUNNING.
fn brief(d: &Value) -> String {
    let odd: Vec<String> = d["tiers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["servers"].as_array().cloned().unwrap_or_default())
        .filter(|s| s["agent"] != "RUNNING" && s["agent"] != "TERMINATED")
        .map(|s| format!("{} agent {}", s["id"], s["agent"]))
        .collect();
    format!(
        "deployment {} {} (reason: {}); servers not RUNNING: [{}]",
        d["name"],
        d["state"],
        d["reason"],
        odd.join(", ")
    )
}

/// What one loss measured.
struct Recovery {
    /// From the kill until status showed the deployment RUNNING with the replacement RUNNING.
    observed: f64,
    /// The engine's own `… RUNNING after X s` event.
    reported: String,
}

/// Kills the first live server of `tier` and waits for its replacement to be RUNNING.
fn lose_one(bench: &Bench, tier: &str, show_breakdown: bool) -> Result<Recovery, String> {
    let d = bench.deployment()?;
    let before = servers(&d, tier);
    let victim = before.first().ok_or("no server to kill")?.clone();
    let victim_id = victim["id"].as_str().unwrap_or_default().to_string();
    let pid = victim["pid"].as_u64().ok_or("victim has no pid")? as u32;
    let count = before.len();
    let start_ms = now_ms_of_day();
    let start = Instant::now();
    if !kill_group(pid) {
        return Err(format!("could not kill {victim_id} ({pid})"));
    }
    let observed = loop {
        let d = bench.deployment()?;
        let live = servers(&d, tier);
        let done = d["state"] == "RUNNING"
            && live.len() == count
            && live.iter().all(|s| s["id"] != victim_id.as_str())
            && d["tiers"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|t| all_running(&servers(&d, t["name"].as_str().unwrap_or(""))));
        if done {
            break start.elapsed().as_secs_f64();
        }
        if start.elapsed() > RECOVERY_LIMIT {
            return Err(format!(
                "{victim_id} not replaced within {} s: {}",
                RECOVERY_LIMIT.as_secs(),
                brief(&d)
            ));
        }
        std::thread::sleep(POLL);
    };
    let end_ms = now_ms_of_day();
    let events = bench.events();
    let reported = events
        .iter()
        .rev()
        .find(|e| e.message.starts_with(&format!("{victim_id} lost at")))
        .map(|e| e.message.clone())
        .unwrap_or_else(|| "no replacement event".to_string());
    if show_breakdown {
        breakdown(&events, start_ms, end_ms);
        let d = bench.deployment()?;
        let new = servers(&d, tier)
            .into_iter()
            .filter_map(|s| s["id"].as_str().map(String::from))
            .find(|id| before.iter().all(|b| b["id"] != id.as_str()));
        if let Some(id) = new {
            println!("    agent log of {id}:");
            let log = bench.ok(&["logs", &id]).unwrap_or_default();
            for line in log.lines().take(60) {
                println!("      {}", line.chars().take(200).collect::<String>());
            }
        }
    }
    Ok(Recovery { observed, reported })
}

/// `runs` losses of one server of `tier`, one after another in the same deployment.
fn losses(bench: &Bench, tier: &str, runs: usize) -> Result<(), String> {
    let mut observed = Vec::new();
    for run in 1..=runs {
        let r = lose_one(bench, tier, run == 1)?;
        println!(
            "run {run}: kill -> RUNNING again: {:.2} s; engine: \"{}\"",
            r.observed, r.reported
        );
        observed.push(r.observed);
    }
    println!(
        "{tier} server lost -> replacement RUNNING: {} (target <= grace + 2 s = 4 s)",
        summary(&observed)
    );
    Ok(())
}

fn hello_loss(runs: usize) -> Result<(), String> {
    println!("## hello: an app server killed (recovery-grace 2 s)");
    let bench = Bench::new("hello");
    let file = bench.write_file("hello.toml", &hello(2, 4, "recovery-grace = \"2s\"\n"));
    bench.ok(&["launch", file.to_str().unwrap()])?;
    losses(&bench, "app", runs)
}

fn three_tier_loss(tier: &str, runs: usize) -> Result<(), String> {
    println!("## three-tier: a {tier} server killed (recovery-grace 2 s)");
    let bench = Bench::new("shop");
    let file = bench.write_file("shop.toml", &three_tier("recovery-grace = \"2s\"\n"));
    bench.ok(&["launch", file.to_str().unwrap()])?;
    losses(&bench, tier, runs)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let parts = ["scale", "hello-loss", "three-tier-loss", "three-tier-db"];
    run_parts(&args, &parts, |part| match part {
        "scale" => scale(runs),
        "hello-loss" => hello_loss(runs),
        "three-tier-loss" => three_tier_loss("app", runs),
        _ => three_tier_loss("db", runs),
    });
}
