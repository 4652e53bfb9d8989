//! SSH provider benchmark (a bench binary, not a timed test): the hello example with 30
//! servers (28 application servers, a load balancer and a database) launched over the SSH
//! provider onto a lab of three hosts with ten addresses each (network namespaces with a real
//! sshd each, `tests/common/lab.rs`), and the same on the local provider, alternating in one
//! run. The local provider is run twice: as it is (agents share the control plane's code
//! cache) and with `serve --no-agent-code-cache` (each agent compiles what it loads, as every
//! agent on an SSH host must), so the SSH cost splits into compiling and the transport.
//! Reports time to RUNNING and of terminate per run, their medians and the ratios to local.
//!
//! Run as root: `cargo bench --bench ssh_launch -- [rounds [slots-per-host]]` (default 3
//! rounds of 3 hosts x 10 slots).

mod common;
// The tests' lab, whole: the bench uses only part of it.
#[allow(dead_code)]
#[path = "../tests/common/lab.rs"]
mod lab;

use common::{Bench, summary};
use lab::Lab;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Hosts in the lab.
const HOSTS: usize = 3;
/// Addresses (server slots) per host unless the second argument says otherwise.
const SLOTS_PER_HOST: usize = 10;

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Ssh,
    Local,
    LocalNoCache,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Ssh => "ssh",
            Variant::Local => "local",
            Variant::LocalNoCache => "local, --no-agent-code-cache",
        }
    }
}

/// Seconds to RUNNING, of terminate, and per server from "launching server" to "discovered
/// server" (the provider's part: for SSH, the binary's copy and the agent's start).
struct Times {
    launch: f64,
    terminate: f64,
    provider_median: f64,
    provider_max: f64,
}

/// Per server, seconds from the event `launching server NAME` to `discovered server NAME`.
fn provider_seconds(events: &[common::Event]) -> Vec<f64> {
    let mut started = std::collections::HashMap::new();
    let mut out = Vec::new();
    for e in events {
        let mut words = e.message.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("launching"), Some("server"), Some(name)) => {
                started.insert(name.to_string(), e.ms);
            }
            (Some("discovered"), Some("server"), Some(name)) => {
                if let Some(t) = started.get(name) {
                    out.push((e.ms - t) as f64 / 1000.0);
                }
            }
            _ => {}
        }
    }
    out.sort_by(f64::total_cmp);
    out
}

/// Application servers: with the load balancer and the database, one server per slot.
fn app_servers(lab: &Lab) -> u32 {
    lab.addresses().len() as u32 - 2
}

fn deployment(variant: Variant, lab: &Lab) -> String {
    let n = app_servers(lab);
    let text = common::hello(n, n, "");
    if variant != Variant::Ssh {
        return text;
    }
    let mut text = text;
    for tier in ["db", "app", "lb"] {
        text.push_str(&format!("\n[tiers.{tier}.launch]\nprovider = \"lab\"\n"));
    }
    text.push_str(&lab.provider_table("lab-ssh", ""));
    text
}

/// `stratus serve` for `variant`, waiting until it publishes `control.json`.
fn serve(bench: &Bench, variant: Variant, lab: &Lab) -> Result<Child, String> {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stratus"));
    c.env("STRATUS_STATE_DIR", bench.dir()).arg("serve");
    match variant {
        Variant::Ssh => {
            c.args(["--listen", &format!("{}:0", lab.control_address())]);
        }
        Variant::LocalNoCache => {
            c.arg("--no-agent-code-cache");
        }
        Variant::Local => {}
    }
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    while !bench.dir().join("control.json").exists() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("serve exited with {status}"));
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err("serve did not start in 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child)
}

/// Whatever is left on the lab's hosts: processes besides sshd, entries under the remote dir.
fn left_on_hosts(lab: &Lab) -> usize {
    (0..lab.hosts())
        .map(|i| lab.processes(i).len() + lab.remote_entries(i).len())
        .sum()
}

fn run(variant: Variant, lab: &Lab) -> Result<Times, String> {
    let bench = Bench::new("hello");
    if variant == Variant::Ssh {
        lab.keep_client_key(bench.dir(), "lab-ssh")
            .map_err(|e| e.to_string())?;
    }
    let mut serving = serve(&bench, variant, lab)?;
    let file = bench.write_file("hello.toml", &deployment(variant, lab));
    let result = (|| {
        let launch = bench.timed(&["launch", file.to_str().unwrap()])?;
        let d = bench.deployment()?;
        if d["state"] != "RUNNING" {
            return Err(format!("not RUNNING: {}", d["state"]));
        }
        let terminate = bench.timed(&["terminate", "hello"])?;
        let per_server = provider_seconds(&bench.events());
        Ok(Times {
            launch,
            terminate,
            provider_median: per_server
                .get(per_server.len() / 2)
                .copied()
                .unwrap_or(f64::NAN),
            provider_max: per_server.last().copied().unwrap_or(f64::NAN),
        })
    })();
    drop(bench);
    let _ = serving.kill();
    let _ = serving.wait();
    if variant == Variant::Ssh {
        let start = Instant::now();
        while left_on_hosts(lab) > 0 && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(200));
        }
        let left = left_on_hosts(lab);
        if left > 0 && result.is_ok() {
            return Err(format!("{left} processes or files left on the hosts"));
        }
    }
    result
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        println!("ssh_launch: needs root (network namespaces, sshd); skipped");
        return;
    }
    let numbers: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rounds = numbers.first().copied().unwrap_or(3);
    let per_host = numbers.get(1).copied().unwrap_or(SLOTS_PER_HOST).max(1);
    let lab = Lab::new(HOSTS, per_host);
    let variants = [Variant::Local, Variant::Ssh, Variant::LocalNoCache];
    let mut launches: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut terminates: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    println!(
        "hello with {} servers ({HOSTS} hosts x {per_host} slots), {rounds} rounds",
        app_servers(&lab) + 2
    );
    println!("load average before: {}", common::load_average());
    println!(
        "| round | provider | time to RUNNING | terminate | provider's launch per server (median, max) |"
    );
    println!("|---|---|---|---|---|");
    for round in 1..=rounds {
        for (k, v) in variants.iter().enumerate() {
            match run(*v, &lab) {
                Ok(t) => {
                    println!(
                        "| {round} | {} | {:.2} s | {:.2} s | {:.2} s, {:.2} s |",
                        v.name(),
                        t.launch,
                        t.terminate,
                        t.provider_median,
                        t.provider_max
                    );
                    launches[k].push(t.launch);
                    terminates[k].push(t.terminate);
                }
                Err(e) => println!("| {round} | {} | failed: {e} | | |", v.name()),
            }
        }
    }
    println!("load average after: {}", common::load_average());
    let median = |xs: &[f64]| {
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    for (k, v) in variants.iter().enumerate() {
        println!("{}: launch {}", v.name(), summary(&launches[k]));
        println!("{}: terminate {}", v.name(), summary(&terminates[k]));
    }
    let ssh = median(&launches[1]);
    println!(
        "ssh / local launch: {:.2}x; ssh / local without the code cache: {:.2}x; terminate ssh / local: {:.2}x",
        ssh / median(&launches[0]),
        ssh / median(&launches[2]),
        median(&terminates[1]) / median(&terminates[0])
    );
}
