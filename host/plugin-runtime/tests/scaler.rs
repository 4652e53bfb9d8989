//! Scaling rules as `scaler` components: the independently written threshold component votes
//! exactly as the host's built-in rule on generated windows, and a hostile rule is stopped
//! with a clear error while the runtime keeps working.

mod common;

use common::shared_runtime;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use stratus_model::ids::{Name, ServerId};
use stratus_model::metrics::{Sample, ServerWindow};
use stratus_model::scaling::{ScalingPolicy, Thresholds, Vote};
use stratus_plugin_runtime::{MAX_SCALER_ERROR_BYTES, Runtime, ScalerError};

/// A small seeded generator (SplitMix64), so every run checks the same windows.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// A percentage on the `above` side of `around` (or the other side when `above` is false):
    /// mostly a few points past it, sometimes exactly on it or a little on the wrong side, so
    /// that the strict comparisons are exercised at their boundary.
    fn near(&mut self, around: u32, above: bool) -> f64 {
        let t = f64::from(around);
        let off = (1 + self.below(1000)) as f64 / 100.0;
        let side = if above { 1.0 } else { -1.0 };
        match self.below(60) {
            0 => t,
            1 => t - side * off,
            _ => (t + side * off).max(0.0),
        }
    }
}

fn package(name: &str) -> PathBuf {
    stratus_plugin_artifacts::package_dir(name)
}

fn tier(name: &str) -> Name {
    Name::new(name).unwrap()
}

fn policy(rng: &mut Rng) -> ScalingPolicy {
    let some =
        |rng: &mut Rng, lo: u64, span: u64| rng.chance(70).then(|| (lo + rng.below(span)) as u32);
    let mut thresholds = Thresholds {
        cpu_high: some(rng, 50, 40),
        cpu_low: some(rng, 5, 40),
        ram_high: some(rng, 50, 40),
        ram_low: some(rng, 5, 40),
    };
    if thresholds.cpu_high.is_none() && thresholds.ram_high.is_none() {
        thresholds.cpu_high = Some(75);
    }
    ScalingPolicy {
        thresholds,
        breach_ms: 1_000 + rng.below(20) * 500,
        cooldown_ms: 1_000 + rng.below(20) * 500,
        settle_ms: 0,
        increment: 1 + rng.below(3) as u32,
        rule: None,
    }
}

/// One server's samples: a random start, interval and length, values around the high
/// thresholds for a `busy` server, around the low ones for an idle one.
fn window(rng: &mut Rng, t: &Thresholds, id: ServerId, base: u64, busy: bool) -> ServerWindow {
    let interval = 250 + rng.below(1_000);
    let count = rng.below(40) as usize;
    let mut at = base + rng.below(10_000);
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let (cpu_t, ram_t) = if busy {
            (t.cpu_high.unwrap_or(60), t.ram_high.unwrap_or(60))
        } else {
            (t.cpu_low.unwrap_or(20), t.ram_low.unwrap_or(20))
        };
        let memory_percent = rng.near(ram_t, busy);
        samples.push(Sample {
            at_ms: at,
            cpu_percent: rng.near(cpu_t, busy),
            memory_bytes: (memory_percent * 1e7) as u64,
            memory_percent,
        });
        at += interval + rng.below(3) * 50;
    }
    ServerWindow {
        server: id,
        samples,
    }
}

/// `now` near a boundary of one server's windows: exactly a sample's time plus a period (so
/// that the window starts on a sample), a millisecond either side, or anywhere.
fn now_near(rng: &mut Rng, windows: &[ServerWindow], p: &ScalingPolicy, base: u64) -> u64 {
    let samples: Vec<u64> = windows
        .iter()
        .flat_map(|w| w.samples.iter().map(|s| s.at_ms))
        .collect();
    if samples.is_empty() || rng.chance(20) {
        return base + rng.below(60_000);
    }
    let at = samples[rng.below(samples.len() as u64) as usize];
    let period = if rng.chance(50) {
        p.breach_ms
    } else {
        p.cooldown_ms
    };
    at + period + rng.below(3) - 1
}

#[tokio::test]
async fn the_threshold_component_votes_as_the_built_in_rule() {
    let rt = shared_runtime();
    // The package's own budget (1 s a call) with the time limit's maximum instead: 600 calls
    // on a loaded machine may see one stalled that long, and this test is about the votes.
    let dir = tempfile::tempdir().unwrap();
    let pkg = copy_package("threshold-scaler", dir.path());
    let manifest = pkg.join("plugin.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("timeout-ms = 1000"), "{text}");
    std::fs::write(
        &manifest,
        text.replace("timeout-ms = 1000", "timeout-ms = 10000"),
    )
    .unwrap();
    let mut rng = Rng(0x5ca1e);
    let base = 1_764_000_000_000;
    let (mut ups, mut downs, mut decisions) = (0, 0, 0);
    for case in 0..600 {
        let p = policy(&mut rng);
        let name = tier("app");
        let n = rng.below(7) as u32;
        // Servers mostly share the tier's mood, so that majorities form.
        let tier_busy = rng.chance(50);
        let windows: Vec<ServerWindow> = (1..=n)
            .map(|i| {
                let busy = tier_busy != rng.chance(15);
                let id = ServerId::new(name.clone(), i);
                window(&mut rng, &p.thresholds, id, base, busy)
            })
            .collect();
        let now = now_near(&mut rng, &windows, &p, base);
        let expected = p.threshold_votes(&windows, now);
        let got = rt
            .scale_check(&pkg, &name, &p, now, &windows)
            .await
            .unwrap_or_else(|e| panic!("case {case}: {e}"));
        assert_eq!(got, expected, "case {case}: now {now}, {p:?}, {windows:?}");
        let (min, max) = (rng.below(3) as u32, 3 + rng.below(5) as u32);
        let current = min + rng.below(u64::from(max - min + 1)) as u32;
        let decision = p.decide(&expected, current, min, max);
        assert_eq!(p.decide(&got, current, min, max), decision, "case {case}");
        ups += expected.iter().filter(|v| **v == Vote::Up).count();
        downs += expected.iter().filter(|v| **v == Vote::Down).count();
        decisions += usize::from(decision.is_some());
    }
    // The generated windows must reach every outcome, or the comparison proves little.
    assert!(
        ups > 50 && downs > 50 && decisions > 50,
        "{ups} up, {downs} down, {decisions} decisions"
    );
}

/// Two servers of `tier` with a few samples each.
fn two_servers(tier: &Name) -> Vec<ServerWindow> {
    (1..=2)
        .map(|i| ServerWindow {
            server: ServerId::new(tier.clone(), i),
            samples: vec![Sample {
                at_ms: 1_000,
                cpu_percent: 50.0,
                memory_bytes: 1 << 20,
                memory_percent: 10.0,
            }],
        })
        .collect()
}

fn any_policy() -> ScalingPolicy {
    ScalingPolicy {
        thresholds: Thresholds {
            cpu_high: Some(75),
            cpu_low: Some(20),
            ram_high: None,
            ram_low: None,
        },
        breach_ms: 2_000,
        cooldown_ms: 3_000,
        settle_ms: 0,
        increment: 1,
        rule: None,
    }
}

/// The hostile rule's answer for `behaviour` (its tier name), and how long it took.
async fn hostile(rt: &Runtime, behaviour: &str) -> (Result<Vec<Vote>, ScalerError>, Duration) {
    let name = tier(behaviour);
    let started = Instant::now();
    let result = rt
        .scale_check(
            &package("hostile-scaler"),
            &name,
            &any_policy(),
            5_000,
            &two_servers(&name),
        )
        .await;
    (result, started.elapsed())
}

#[tokio::test]
async fn a_hostile_rule_is_stopped_with_a_clear_error_and_the_runtime_survives() {
    let rt = shared_runtime();
    // The manifest's limits: 500 ms and 32 MiB. The guest's loop never ends and its sleep is
    // 60 s, so a bound of 20 s on the time taken still catches a limit not applied, with room
    // for a loaded machine.
    let (r, took) = hostile(&rt, "loop").await;
    let e = r.unwrap_err();
    assert!(
        matches!(e, ScalerError::Timeout { limit_ms: 500, .. }),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "scaler `hostile-scaler` ran past its time limit of 500 ms"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");

    let (r, took) = hostile(&rt, "alloc").await;
    let e = r.unwrap_err();
    assert!(
        matches!(e, ScalerError::OutOfMemory { limit_mb: 32, .. }),
        "{e:?}"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");

    // Waiting in a host call, where epochs are not checked: the backstop ends it.
    let (r, took) = hostile(&rt, "sleep").await;
    let e = r.unwrap_err();
    assert!(
        matches!(e, ScalerError::Timeout { limit_ms: 500, .. }),
        "{e:?}"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");

    let (r, _) = hostile(&rt, "count").await;
    assert_eq!(
        r.unwrap_err().to_string(),
        "scaler `hostile-scaler` returned 3 votes for 2 servers"
    );
    let (r, _) = hostile(&rt, "range").await;
    assert_eq!(
        r.unwrap_err().to_string(),
        "scaler `hostile-scaler` voted 7 for server `range-1` (expected 1, 0 or -1)"
    );

    let (r, took) = hostile(&rt, "bigerr").await;
    let ScalerError::Rule { message, .. } = r.unwrap_err() else {
        panic!("expected the rule's error");
    };
    assert!(
        message.len() <= MAX_SCALER_ERROR_BYTES + 64,
        "{} bytes",
        message.len()
    );
    assert!(message.starts_with("red red red"), "{message:?}");
    assert!(message.ends_with(" bytes)"), "{message:?}");
    assert!(!message.chars().any(char::is_control), "{message:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");

    // After all of that the same runtime still runs rules, hostile and not.
    let (r, _) = hostile(&rt, "calm").await;
    assert_eq!(r.unwrap(), vec![Vote::Stay, Vote::Stay]);
    let name = tier("app");
    let votes = rt
        .scale_check(
            &package("threshold-scaler"),
            &name,
            &any_policy(),
            5_000,
            &two_servers(&name),
        )
        .await
        .unwrap();
    assert_eq!(votes.len(), 2);
}

#[tokio::test]
async fn a_rule_sees_no_files_environment_network_or_real_clock() {
    let rt = shared_runtime();
    let (r, _) = hostile(&rt, "wasi").await;
    let ScalerError::Rule { message, .. } = r.unwrap_err() else {
        panic!("expected the rule's report as its error");
    };
    for expected in [
        "/etc/passwd: refused",
        "/proc/self/environ: refused",
        ".: refused",
        "/: refused",
        "env: 0 variables",
        "args: 0",
        "clock: Ok(5000)",
        "net: Err(",
    ] {
        assert!(
            message.contains(expected),
            "{expected} missing from: {message}"
        );
    }
    assert!(
        !message.contains("read ") && !message.contains("listed "),
        "{message}"
    );
}

/// A copy of the package `from` in a fresh directory, whose component can then be replaced.
fn copy_package(from: &str, dir: &Path) -> PathBuf {
    let to = dir.join(from);
    std::fs::create_dir(&to).unwrap();
    for file in ["plugin.toml", "plugin.wasm"] {
        std::fs::copy(package(from).join(file), to.join(file)).unwrap();
    }
    to
}

#[tokio::test]
async fn a_package_that_is_not_a_scaler_is_refused_naming_it() {
    let rt = shared_runtime();
    let name = tier("app");
    let windows = two_servers(&name);
    let hello = package("hello");
    let e = rt
        .scale_check(&hello, &name, &any_policy(), 5_000, &windows)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&hello.display().to_string())
            && text
                .contains("declares world `service`, but a scaling rule needs a `scaler` plugin"),
        "{text}"
    );
    // A scaler manifest over a service component.
    let dir = tempfile::tempdir().unwrap();
    let fake = copy_package("threshold-scaler", dir.path());
    std::fs::copy(hello.join("plugin.wasm"), fake.join("plugin.wasm")).unwrap();
    let text = rt
        .scale_check(&fake, &name, &any_policy(), 5_000, &windows)
        .await
        .unwrap_err()
        .to_string();
    assert!(text.contains("not a scaler component"), "{text}");
    let missing = dir.path().join("nothing");
    let text = rt
        .scale_check(&missing, &name, &any_policy(), 5_000, &windows)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("nothing: is not a package directory"),
        "{text}"
    );
}

#[tokio::test]
async fn a_changed_component_is_compiled_again() {
    let rt = shared_runtime();
    let dir = tempfile::tempdir().unwrap();
    let pkg = copy_package("threshold-scaler", dir.path());
    let name = tier("range");
    let windows = two_servers(&name);
    let votes = rt
        .scale_check(&pkg, &name, &any_policy(), 5_000, &windows)
        .await;
    assert_eq!(votes.unwrap().len(), 2);
    std::fs::copy(
        package("hostile-scaler").join("plugin.wasm"),
        pkg.join("plugin.wasm"),
    )
    .unwrap();
    let e = rt
        .scale_check(&pkg, &name, &any_policy(), 5_000, &windows)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ScalerError::VoteRange { value: 7, .. }),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_scaler_package_holding_links_or_special_files_is_refused() {
    let rt = shared_runtime();
    let name = tier("app");
    let windows = two_servers(&name);
    let dir = tempfile::tempdir().unwrap();
    let pkg = copy_package("threshold-scaler", dir.path());
    let check = |pkg: PathBuf| {
        let rt = rt.clone();
        let windows = windows.clone();
        let name = name.clone();
        async move {
            let started = Instant::now();
            let e = rt
                .scale_check(&pkg, &name, &any_policy(), 5_000, &windows)
                .await
                .unwrap_err();
            assert!(started.elapsed() < Duration::from_secs(5));
            e.to_string()
        }
    };
    // The component replaced by a link to a device that never ends.
    std::fs::remove_file(pkg.join("plugin.wasm")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", pkg.join("plugin.wasm")).unwrap();
    let text = check(pkg.clone()).await;
    assert!(
        text.contains("plugin.wasm is a symbolic link, which a scaler package may not hold"),
        "{text}"
    );
    // A FIFO nobody writes to.
    std::fs::remove_file(pkg.join("plugin.wasm")).unwrap();
    nix::unistd::mkfifo(&pkg.join("plugin.wasm"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let text = check(pkg.clone()).await;
    assert!(text.contains("plugin.wasm is not a regular file"), "{text}");
    // The manifest as a link to a file the package's author cannot read.
    std::fs::rename(pkg.join("plugin.toml"), dir.path().join("elsewhere.toml")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("elsewhere.toml"), pkg.join("plugin.toml")).unwrap();
    let text = check(pkg.clone()).await;
    assert!(text.contains("plugin.toml is a symbolic link"), "{text}");
}

#[test]
fn inspect_names_the_scaler_world_and_its_imports() {
    let bytes = std::fs::read(package("threshold-scaler").join("plugin.wasm")).unwrap();
    let info = stratus_plugin_runtime::inspect(&bytes).unwrap();
    assert_eq!(info.world, Some(stratus_model::context::World::Scaler));
    // Rust's standard library brings WASI; no Stratus host interface is imported.
    assert!(
        !info.imports.iter().any(|i| i.starts_with("stratus:")),
        "{:?}",
        info.imports
    );
}
