//! Health and scaling-rule benchmark (a bench binary, not a timed test), with the release
//! `stratus` binary on the local provider, each part in a fresh state directory:
//!
//! * `health-cost`: hello with 100 app servers (102 servers in all), every service checked
//!   every second (`health = { interval = "1s" }`), beside the same deployment checked once an
//!   hour (the baseline), one after the other in the same run. Once RUNNING and settled, the
//!   CPU time of every agent and of the control plane is read from `/proc/<pid>/stat` over a
//!   window, and reported as percent of one CPU, with the ratio to the baseline.
//! * `breach`: one greeter app server whose bounded CPU burner is switched on (the `burn` file
//!   next to its `greeter.toml`), with `metrics-interval = "500ms"`, `cpu-high = 40`,
//!   `breach = "2s"`, `cooldown = "3s"`, `settle = "2s"`. Measured from the event journal:
//!   switch on → the `scale app 1→2` decision, and switch off → the `scale app 2→1` decision;
//!   each minus its sustain window is the rule's own latency (sampling, judging, the event).
//!
//! Run: `cargo bench --bench rules -- [health-cost] [breach] [--runs N] [--window S]`.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// utime + stime of `pid`, in ticks (0 once it is gone).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

fn control_pid(dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join("control.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["pid"].as_u64().map(|p| p as u32)
}

/// CPU percent (of one CPU) used over `window` by the agents and by the control plane.
fn cpu_over(agents: &[u32], control: u32, window: Duration) -> (f64, f64) {
    let before: Vec<u64> = agents.iter().map(|p| cpu_ticks(*p)).collect();
    let control_before = cpu_ticks(control);
    let start = Instant::now();
    std::thread::sleep(window);
    let secs = start.elapsed().as_secs_f64();
    let after: u64 = agents.iter().map(|p| cpu_ticks(*p)).sum();
    let used = after.saturating_sub(before.iter().sum()) as f64;
    let control_used = cpu_ticks(control).saturating_sub(control_before) as f64;
    let percent = |ticks: f64| ticks / TICKS_PER_SECOND / secs * 100.0;
    (percent(used), percent(control_used))
}

/// Launches hello with 100 app servers and every service checked every `interval`; returns
/// the agents' and the control plane's CPU percent over `window`.
fn health_load(interval: &str, window: Duration) -> Result<(f64, f64), String> {
    let bench = Bench::new("hello");
    let health = format!("health = {{ interval = \"{interval}\", timeout = \"500ms\" }}\n");
    let text = hello(100, 100, "").replace(
        "settings = { greeting",
        &format!("{health}settings = {{ greeting"),
    );
    let file = bench.write_file("hello.toml", &text);
    bench.ok(&["launch", file.to_str().unwrap(), "--timeout", "600"])?;
    let d = bench.deployment()?;
    let agents = pids(&d);
    if agents.len() != 102 {
        return Err(format!(
            "expected 102 agents, status shows {}",
            agents.len()
        ));
    }
    let control = control_pid(bench.dir()).ok_or("no control plane pid")?;
    // Launch work (and the first checks) settle first.
    std::thread::sleep(Duration::from_secs(5));
    Ok(cpu_over(&agents, control, window))
}

fn health_cost(runs: usize, window: Duration) -> Result<(), String> {
    for run in 1..=runs {
        let (base_agents, base_control) = health_load("60m", window)?;
        let (agents, control) = health_load("1s", window)?;
        println!(
            "run {run}: 102 servers over {:.0} s: checks every 1 s: agents {agents:.1} % of a CPU \
             ({:.3} % each), control plane {control:.1} %; checked hourly: agents \
             {base_agents:.1} %, control plane {base_control:.1} %; cost of the checks: agents \
             +{:.1} points, control plane +{:.1} points",
            window.as_secs_f64(),
            agents / 102.0,
            agents - base_agents,
            control - base_control,
        );
    }
    Ok(())
}

/// One greeter server scaling on CPU with short periods (the `autoscale` test's deployment).
fn burner_deployment() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let app = stratus_plugin_artifacts::package_dir("app");
    format!(
        "[deployment]\nname = \"burn\"\nmetrics-interval = \"500ms\"\n\n\
         [tiers.db]\nmin = 1\nmax = 1\nservices = [\"db\"]\n\n\
         [tiers.app]\nmin = 1\nmax = 3\nservices = [\"app\"]\n\n\
         [tiers.app.scaling]\ncpu-high = 40\ncpu-low = 10\nbreach = \"2s\"\ncooldown = \"3s\"\n\
         settle = \"2s\"\n\n\
         [services.db]\npackage = \"{}\"\n\
         data-source = {{ image = \"{}\", database = \"hello\" }}\n\
         ports = {{ mysql = 3306 }}\ncredentials = [\"admin\"]\n\n\
         [services.app]\npackage = \"{}\"\nports = {{ http = 8080 }}\n\
         depends-on = [{{ data-source = \"db\" }}]\n",
        hello.display(),
        root.join("examples/hello/datasource.sql").display(),
        app.display()
    )
}

/// The burner switch of the first app server.
fn burn_switch(bench: &Bench, d: &Value) -> Result<std::path::PathBuf, String> {
    let server = servers(d, "app").first().cloned().ok_or("no app server")?;
    let root = bench
        .dir()
        .join("servers/burn")
        .join(server["id"].as_str().unwrap_or(""))
        .join("root");
    find_file(&root, "greeter.toml")
        .map(|p| p.with_file_name("burn"))
        .ok_or_else(|| format!("no greeter.toml under {}", root.display()))
}

fn find_file(dir: &Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let kind = entry.file_type().ok()?;
        if kind.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if entry.file_name() == name {
            return Some(path);
        }
    }
    None
}

/// Milliseconds (of the day) of the first event at or after `since_ms` containing `needle`.
fn event_at(bench: &Bench, needle: &str, since_ms: i64, limit: Duration) -> Option<i64> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let found = bench
            .events()
            .into_iter()
            .find(|e| e.ms >= since_ms && e.message.contains(needle));
        if let Some(e) = found {
            return Some(e.ms);
        }
    }
    None
}

fn breach(runs: usize) -> Result<(), String> {
    let bench = Bench::new("burn");
    let file = bench.write_file("burn.toml", &burner_deployment());
    bench.ok(&["launch", file.to_str().unwrap()])?;
    let switch = burn_switch(&bench, &bench.deployment()?)?;
    let (mut ups, mut downs) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        std::thread::sleep(Duration::from_secs(3));
        let on = now_ms_of_day();
        std::fs::write(&switch, b"").map_err(|e| e.to_string())?;
        let up = event_at(&bench, "scale app 1→2", on, Duration::from_secs(60));
        let off = now_ms_of_day();
        let _ = std::fs::remove_file(&switch);
        let up = up.ok_or("no scale-up decision within 60 s")?;
        let down = event_at(&bench, "scale app 2→1", off, Duration::from_secs(60))
            .ok_or("no scale-down decision within 60 s")?;
        let (u, d) = ((up - on) as f64 / 1000.0, (down - off) as f64 / 1000.0);
        println!(
            "run {run}: switch on → scale-up decision {u:.2} s (breach 2 s + {:.2} s); \
             switch off → scale-down decision {d:.2} s (cooldown 3 s + {:.2} s)",
            u - 2.0,
            d - 3.0
        );
        ups.push(u - 2.0);
        downs.push(d - 3.0);
        // Back at one RUNNING server before the next run.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let d = bench.deployment()?;
            if d["state"] == "RUNNING" && servers(&d, "app").len() == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    println!("scale-up latency beyond the breach: {}", summary(&ups));
    println!(
        "scale-down latency beyond the cooldown: {}",
        summary(&downs)
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |flag: &str, default: u64| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(default)
    };
    let runs = number("--runs", 3) as usize;
    let window = Duration::from_secs(number("--window", 20));
    let parts = ["health-cost", "breach"];
    run_parts(&args, &parts, |part| match part {
        "health-cost" => health_cost(runs, window),
        _ => breach(runs),
    });
}
