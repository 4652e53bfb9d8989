//! The CPU and memory of this server's own services: the processes the agent's supervisor
//! started (or adopted) and their descendants, never the agent itself. Once the control plane
//! asks (`WatchMetrics`), one report per interval travels back unsolicited on every connection.
//!
//! Two sources, chosen at each sample:
//! - **cgroup v2**, where the services' parent cgroup sits in a unified hierarchy whose
//!   `cpu.stat` (usage_usec) and `memory.current` exist: those counters, minus the agent's own
//!   CPU time and resident memory when the agent is inside that cgroup (the provider's cgroup
//!   holds the agent in its `agent` leaf beside the services). `memory.current` also counts
//!   the page cache and kernel memory the services caused.
//! - **/proc** otherwise: the CPU of each process and of its exited children (utime, stime,
//!   cutime and cstime, fields 14 to 17 of `/proc/<pid>/stat`, in clock ticks) and its
//!   proportional set size (`Pss` of `/proc/<pid>/smaps_rollup`, else the resident set of
//!   `statm`), over the supervised pids and every process of the services' cgroups (children
//!   stay in their parent's cgroup), or without cgroups over every descendant of the agent
//!   (the subreaper of the services' orphans), at most [`MAX_PROCESSES`] of them.
//!   - CPU is counted per process since the previous sample. A process that exits hands its
//!     whole time to the one that reaps it (a parent in the tree, or the agent, whose own
//!     children's time is counted too), so what a vanished process was already counted for is
//!     taken off again: short-lived children cannot hide their CPU, and none counts twice.
//!   - A process first seen after it started counts from then on.
//!   - Memory is the sum of the processes' proportional set sizes (each shared page counted
//!     once in all, each process taking its share), or the largest single resident set if
//!     that is more: a mapping touched by many processes cannot make a server look large, and
//!     a server never shows less than its largest process needs.
//!
//! Plugins choose their processes' names, may fork without end and may churn pids while a
//! sample reads them: names are skipped (fields are read after the last `)`), a pid that
//! vanished between two reads is skipped, a reused pid is told apart by its start time, and
//! the walk stops at [`MAX_PROCESSES`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use stratus_containment::{Cgroup, descendants};
use stratus_model::metrics::{MAX_INTERVAL_MS, MIN_INTERVAL_MS};
use stratus_plugin_runtime::Supervisor;
use stratus_protocol::{AgentReply, Envelope, MetricsReport};
use tokio::sync::{mpsc, watch};

/// Most processes one sample reads: a service that forks more is measured on the first ones
/// found (supervised processes first, then their children), and a sample's cost stays bounded.
pub const MAX_PROCESSES: usize = 4096;

/// The interval the control plane asked for, kept across connections (a reconnecting agent
/// goes on reporting); `None` until it asks.
#[derive(Debug)]
pub(crate) struct Interval(watch::Sender<Option<Duration>>);

impl Default for Interval {
    fn default() -> Interval {
        Interval(watch::channel(None).0)
    }
}

impl Interval {
    /// Reports every `ms` from now on, held to the model's bounds; returns what was kept.
    pub(crate) fn set(&self, ms: u64) -> Duration {
        let every = Duration::from_millis(ms.clamp(MIN_INTERVAL_MS, MAX_INTERVAL_MS));
        self.0.send_replace(Some(every));
        every
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Duration>> {
        self.0.subscribe()
    }
}

/// What is measured: the supervisor's processes and the cgroup their cgroups live beneath.
#[derive(Clone)]
pub(crate) struct Source {
    pub supervisor: Supervisor,
    pub services: Option<Cgroup>,
    /// Whether the agent itself is in `services` (in the `agent` leaf of the cgroup the
    /// provider made), which it joins at start and never leaves: known then, not found by a
    /// walk of every process in the cgroup's tree at each sample.
    pub agent_inside: bool,
}

/// Sends a report every interval on this connection, once the control plane asked for one.
pub(crate) async fn report(
    mut every: watch::Receiver<Option<Duration>>,
    source: Source,
    tx: mpsc::Sender<Envelope<AgentReply>>,
) {
    let mut sampler = Sampler::new(source);
    loop {
        let Some(period) = *every.borrow_and_update() else {
            if every.changed().await.is_err() {
                return std::future::pending().await;
            }
            continue;
        };
        // The first sample of a connection, or of a new interval, only sets the baseline.
        sampler = measure(sampler).await.0;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = every.changed() => break,
            }
            let (next, report) = measure(sampler).await;
            sampler = next;
            let Some(report) = report else { continue };
            let frame = Envelope {
                id: stratus_protocol::UNSOLICITED_ID,
                body: AgentReply::Metrics { report },
            };
            if tx.send(frame).await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

/// One sample off the async threads (it reads `/proc`).
async fn measure(mut sampler: Sampler) -> (Sampler, Option<MetricsReport>) {
    tokio::task::spawn_blocking(move || {
        let report = sampler.sample();
        (sampler, report)
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// The counters of the previous sample, which the next one is measured against.
enum Previous {
    None,
    Cgroup {
        at: Instant,
        cpu_usec: u64,
    },
    Procs {
        at: Instant,
        procs: HashMap<u32, ProcCpu>,
    },
}

/// Measures the services' CPU and memory, one sample after another.
pub(crate) struct Sampler {
    source: Source,
    previous: Previous,
    ticks_per_second: u64,
    page_size: u64,
}

impl Sampler {
    pub(crate) fn new(source: Source) -> Sampler {
        let conf = |v| nix::unistd::sysconf(v).ok().flatten().filter(|n| *n > 0);
        Sampler {
            source,
            previous: Previous::None,
            ticks_per_second: conf(nix::unistd::SysconfVar::CLK_TCK).map_or(100, |n| n as u64),
            page_size: conf(nix::unistd::SysconfVar::PAGE_SIZE).map_or(4096, |n| n as u64),
        }
    }

    /// A report of the time since the previous sample; `None` for the first one (nothing to
    /// measure against) and when the source changed (cgroup to /proc or back).
    pub(crate) fn sample(&mut self) -> Option<MetricsReport> {
        let now = Instant::now();
        let (cpu_seconds, memory_bytes) = match self.unified_dir() {
            Some(dir) => self.sample_cgroup(&dir, now)?,
            None => self.sample_procs(now)?,
        };
        let memory_total = memory_total_bytes(&read("/proc/meminfo")?)?;
        Some(MetricsReport {
            cpu_percent: cpu_seconds * 100.0,
            memory_bytes,
            memory_percent: memory_bytes as f64 / memory_total as f64 * 100.0,
        })
    }

    /// The services' cgroup in a unified hierarchy, when it has the counters needed.
    /// `memory.current` is looked for first: only a unified hierarchy with the memory
    /// controller has it, so where the unified one lacks it a sample looks there once, not
    /// three times.
    fn unified_dir(&self) -> Option<PathBuf> {
        let services = self.source.services.as_ref()?;
        services.paths().into_iter().find(|p| {
            p.join("memory.current").exists()
                && p.join("cgroup.controllers").exists()
                && p.join("cpu.stat").exists()
        })
    }

    /// CPU seconds per wall second and memory, from the cgroup's counters.
    fn sample_cgroup(&mut self, dir: &Path, now: Instant) -> Option<(f64, u64)> {
        let mut cpu_usec = cpu_usage_usec(&read(dir.join("cpu.stat"))?)?;
        let mut memory: u64 = read(dir.join("memory.current"))?.trim().parse().ok()?;
        if self.source.agent_inside {
            // Its own time only: what its reaped children (the services' processes) used is
            // in the cgroup's counter already, and must stay there.
            let own = read("/proc/self/stat").and_then(|s| parse_stat(&s))?;
            let own_usec = own.own * 1_000_000 / self.ticks_per_second;
            cpu_usec = cpu_usec.saturating_sub(own_usec);
            let own_rss = read("/proc/self/statm").and_then(|s| rss_pages(&s))?;
            memory = memory.saturating_sub(own_rss * self.page_size);
        }
        let previous =
            std::mem::replace(&mut self.previous, Previous::Cgroup { at: now, cpu_usec });
        let Previous::Cgroup {
            at,
            cpu_usec: before,
        } = previous
        else {
            return None;
        };
        let used = cpu_usec.saturating_sub(before) as f64 / 1e6;
        Some((used / seconds_since(at, now), memory))
    }

    /// CPU seconds per wall second and memory, summed over the services' processes.
    fn sample_procs(&mut self, now: Instant) -> Option<(f64, u64)> {
        let boot_ticks = uptime_ticks(&read("/proc/uptime")?, self.ticks_per_second)?;
        let pids = self.tracked_pids();
        let mut procs = HashMap::with_capacity(pids.len() + 1);
        let (mut shares, mut largest) = (0u64, 0u64);
        for pid in pids {
            // Either file may be gone by now: the process exited, which is no error.
            let Some(stat) = read(format!("/proc/{pid}/stat")).and_then(|s| parse_stat(&s)) else {
                continue;
            };
            let Some(m) = self.memory_of(pid) else {
                continue;
            };
            shares = shares.saturating_add(m.proportional);
            largest = largest.max(m.resident);
            procs.insert(pid, stat);
        }
        let memory = shares.max(largest);
        // The agent's exited children (services' processes, orphans it reaped) count; its own
        // time does not.
        let me = std::process::id();
        if let Some(agent) = read("/proc/self/stat").and_then(|s| parse_stat(&s)) {
            let children = agent.ticks.saturating_sub(agent.own);
            procs.insert(
                me,
                ProcCpu {
                    ticks: children,
                    own: 0,
                    ..agent
                },
            );
        }
        let previous = std::mem::replace(
            &mut self.previous,
            Previous::Procs {
                at: now,
                procs: procs.clone(),
            },
        );
        let Previous::Procs { at, procs: before } = previous else {
            return None;
        };
        let since =
            boot_ticks.saturating_sub(ticks_of(now.duration_since(at), self.ticks_per_second));
        let used = cpu_ticks_between(&before, &procs, since) as f64 / self.ticks_per_second as f64;
        Some((used / seconds_since(at, now), memory))
    }

    /// The resident and proportional set sizes of `pid` (both its resident set where
    /// `smaps_rollup` cannot be read).
    fn memory_of(&self, pid: u32) -> Option<Memory> {
        if let Some(text) = read(format!("/proc/{pid}/smaps_rollup"))
            && let (Some(rss), Some(pss)) = (kib_of(&text, "Rss:"), kib_of(&text, "Pss:"))
        {
            return Some(Memory {
                resident: rss.saturating_mul(1024),
                proportional: pss.saturating_mul(1024),
            });
        }
        let pages = read(format!("/proc/{pid}/statm")).and_then(|s| rss_pages(&s))?;
        let bytes = pages.saturating_mul(self.page_size);
        Some(Memory {
            resident: bytes,
            proportional: bytes,
        })
    }

    /// The supervised processes, every process of the services' cgroups, and all their
    /// descendants, at most [`MAX_PROCESSES`]; never the agent. Children stay in their
    /// parent's cgroup, so with cgroups the tree is the cgroups' processes; without, it is
    /// every descendant of the agent, found through the parents in `/proc`.
    fn tracked_pids(&self) -> Vec<u32> {
        let mut roots = self.source.supervisor.running_pids();
        let links: Vec<(u32, u32)> = match &self.source.services {
            Some(c) => {
                roots.extend(c.procs());
                Vec::new()
            }
            None => {
                let links: Vec<(u32, u32)> = descendants::live_processes()
                    .iter()
                    .map(|p| (p.pid, p.ppid))
                    .collect();
                // Orphans of the services (daemons that double-forked) are re-parented to
                // the agent, their subreaper.
                let me = std::process::id();
                roots.extend(links.iter().filter(|l| l.1 == me).map(|l| l.0));
                links
            }
        };
        tree_of(&roots, &links, std::process::id(), MAX_PROCESSES)
    }
}

/// `roots` and their descendants through the `(pid, ppid)` links, without `exclude` (nor
/// what only it started), at most `max` of them, roots first.
fn tree_of(roots: &[u32], links: &[(u32, u32)], exclude: u32, max: usize) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, ppid) in links {
        children.entry(*ppid).or_default().push(*pid);
    }
    let mut seen: HashSet<u32> = HashSet::from([exclude, 0]);
    let mut out = Vec::new();
    let mut queue: std::collections::VecDeque<u32> = roots.iter().copied().collect();
    while let Some(pid) = queue.pop_front() {
        if out.len() >= max {
            break;
        }
        if !seen.insert(pid) {
            continue;
        }
        out.push(pid);
        queue.extend(children.get(&pid).into_iter().flatten().copied());
    }
    out
}

/// What a sample keeps of one process: when it started, the CPU it and its exited children
/// used (`ticks`), and its own part of that (`own`), in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcCpu {
    start: u64,
    ticks: u64,
    own: u64,
}

/// Ticks used between two samples: each process's growth since the previous one (the same
/// pid with the same start time); a process new since then counts whole if it started after
/// `since` (ticks since boot of the previous sample), else from now on. A process gone since
/// (or whose pid now names another) had its whole time handed to whoever reaped it, which is
/// counted here: what it was counted for already is taken off.
fn cpu_ticks_between(
    before: &HashMap<u32, ProcCpu>,
    now: &HashMap<u32, ProcCpu>,
    since: u64,
) -> u64 {
    let grown = now
        .iter()
        .map(|(pid, p)| match before.get(pid) {
            Some(b) if b.start == p.start => p.ticks.saturating_sub(b.ticks),
            _ if p.start >= since => p.ticks,
            _ => 0,
        })
        .fold(0u64, u64::saturating_add);
    let gone = before
        .iter()
        .filter(|(pid, b)| now.get(pid).is_none_or(|p| p.start != b.start))
        .map(|(_, b)| b.ticks)
        .fold(0u64, u64::saturating_add);
    grown.saturating_sub(gone)
}

/// Start time (field 22), utime+stime (fields 14, 15) and the exited children's cutime+cstime
/// (16, 17) of a `/proc/<pid>/stat` line. The command name (field 2) is whatever the process
/// chose, spaces and parentheses included, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<ProcCpu> {
    let rest = text.rsplit_once(')')?.1;
    // After the name come field 3 (state) onwards: field n is at index n - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let own = field(14)?.saturating_add(field(15)?);
    let children = field(16)?.saturating_add(field(17)?);
    Some(ProcCpu {
        start: field(22)?,
        ticks: own.saturating_add(children),
        own,
    })
}

/// One process's memory, in bytes.
struct Memory {
    resident: u64,
    /// Its private pages plus its share of each shared page.
    proportional: u64,
}

/// A `Key:  N kB` line of `/proc/<pid>/smaps_rollup`, in KiB.
fn kib_of(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find_map(|l| l.strip_prefix(key))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

/// Resident pages, the second field of `/proc/<pid>/statm`.
fn rss_pages(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

/// `usage_usec` of a cgroup v2 `cpu.stat`.
fn cpu_usage_usec(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// `MemTotal` of `/proc/meminfo`, in bytes (never 0).
fn memory_total_bytes(text: &str) -> Option<u64> {
    let line = text.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kib: u64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
    (kib > 0).then_some(kib.saturating_mul(1024))
}

/// Seconds since boot, from `/proc/uptime`, in clock ticks.
fn uptime_ticks(text: &str, ticks_per_second: u64) -> Option<u64> {
    let seconds: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some((seconds * ticks_per_second as f64) as u64)
}

fn ticks_of(d: Duration, ticks_per_second: u64) -> u64 {
    (d.as_secs_f64() * ticks_per_second as f64) as u64
}

/// Wall seconds between two samples, never 0.
fn seconds_since(at: Instant, now: Instant) -> f64 {
    now.duration_since(at).as_secs_f64().max(1e-3)
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stat line as the kernel writes it, with `comm` as the name.
    fn stat_line(pid: u32, comm: &str, utime: u64, stime: u64, start: u64) -> String {
        // Fields 3..=13, then 14 utime, 15 stime, 16..=21, 22 starttime, then the rest.
        format!(
            "{pid} ({comm}) R 1 {pid} {pid} 0 -1 4194560 100 0 0 0 {utime} {stime} 0 0 20 0 1 0 \
             {start} 1000000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0"
        )
    }

    #[test]
    fn a_hostile_command_name_does_not_shift_the_fields() {
        for comm in [
            "greeter",
            "a) 1 2 (b",
            ") ) )",
            "x y z",
            "(",
            ")123 456 789 (",
        ] {
            let got = parse_stat(&stat_line(42, comm, 300, 20, 9_000)).unwrap();
            assert_eq!(
                got,
                ProcCpu {
                    start: 9_000,
                    ticks: 320,
                    own: 320,
                },
                "{comm}"
            );
        }
        assert_eq!(parse_stat("42 (cut"), None);
        assert_eq!(parse_stat("42 (short) R 1 2"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn this_process_parses_as_itself() {
        let me = parse_stat(&read("/proc/self/stat").unwrap()).unwrap();
        assert!(me.start > 0);
        assert!(rss_pages(&read("/proc/self/statm").unwrap()).unwrap() > 0);
        assert!(memory_total_bytes(&read("/proc/meminfo").unwrap()).unwrap() > 1 << 20);
    }

    #[test]
    fn counters_files_parse() {
        assert_eq!(rss_pages("1000 250 30 1 0 200 0\n"), Some(250));
        assert_eq!(rss_pages("1000"), None);
        let stat = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n";
        assert_eq!(cpu_usage_usec(stat), Some(123_456));
        assert_eq!(cpu_usage_usec("user_usec 5\n"), None);
        assert_eq!(
            memory_total_bytes("MemTotal:       16384 kB\nMemFree: 1 kB\n"),
            Some(16 << 20)
        );
        assert_eq!(memory_total_bytes("MemTotal: 0 kB\n"), None);
        assert_eq!(uptime_ticks("12.50 40.00\n", 100), Some(1_250));
    }

    #[test]
    fn cpu_counts_growth_new_processes_and_not_reused_pids() {
        let p = |start, ticks| ProcCpu {
            start,
            ticks,
            own: ticks,
        };
        let before = HashMap::from([(1, p(10, 100)), (2, p(20, 50)), (3, p(30, 7))]);
        let now = HashMap::from([
            (1, p(10, 150)),  // grew by 50
            (2, p(999, 40)),  // pid reused after the previous sample: counted whole
            (4, p(1_000, 5)), // new: counted whole
            (5, p(5, 900)),   // old but first seen now (adopted): from now on
        ]);
        // 2 (start 20, 50 counted) and 3 (7 counted) are gone: what they were counted for is
        // taken off, since their reapers' children's time holds it.
        assert_eq!(
            cpu_ticks_between(&before, &now, 500),
            (50 + 40 + 5) - 50 - 7
        );
        // A process whose counter went back (never, but a hostile /proc is no reason to
        // panic) counts nothing.
        let back = HashMap::from([(1, p(10, 10))]);
        assert_eq!(cpu_ticks_between(&before, &back, 500), 0);
    }

    #[test]
    fn children_that_exit_between_samples_count_once_whole() {
        let p = |start, ticks| ProcCpu {
            start,
            ticks,
            own: ticks,
        };
        // Parent 1 (10 ticks) and child 2, counted for 30 so far.
        let before = HashMap::from([(1, p(10, 10)), (2, p(20, 30))]);
        // Child 2 ended at 45 in all and was reaped by 1, whose children's time holds it;
        // a child that lived and died within the interval added 60 more.
        let now = HashMap::from([(1, p(10, 10 + 45 + 60))]);
        assert_eq!(cpu_ticks_between(&before, &now, 500), 15 + 60);
    }

    #[test]
    fn pss_is_read_from_smaps_rollup() {
        let text = "00400000-7ffd [rollup]\nRss:  66000 kB\nPss:    388 kB\nPss_Anon: 10 kB\n";
        assert_eq!(kib_of(text, "Pss:"), Some(388));
        assert_eq!(kib_of(text, "Rss:"), Some(66_000));
        assert_eq!(kib_of("Rss: 1 kB\n", "Pss:"), None);
        if let Some(me) = read("/proc/self/smaps_rollup") {
            assert!(kib_of(&me, "Pss:").is_some_and(|k| k > 0), "{me}");
        }
    }

    #[test]
    fn the_tree_is_walked_from_the_roots_without_the_agent_and_bounded() {
        let links = [
            (10, 1),
            (11, 10),
            (12, 11),
            (20, 1),
            (30, 99),
            (31, 30),
            (99, 1),
        ];
        let mut got = tree_of(&[10, 30], &links, 99, 100);
        got.sort();
        assert_eq!(got, [10, 11, 12, 30, 31]);
        // The agent is never counted, even when named as a root.
        assert_eq!(tree_of(&[99], &links, 99, 100), Vec::<u32>::new());
        // A cycle (pid reuse between reads) ends; a fork bomb stops at the bound.
        assert_eq!(tree_of(&[1], &[(2, 1), (1, 2)], 0, 10).len(), 2);
        let bomb: Vec<(u32, u32)> = (2..100_000).map(|p| (p, p / 2)).collect();
        assert_eq!(tree_of(&[1], &bomb, 0, MAX_PROCESSES).len(), MAX_PROCESSES);
    }

    #[test]
    fn cgroup_counters_give_cpu_over_wall_time_and_memory() {
        let dir = tempfile::tempdir().unwrap();
        let write = |usec: u64, bytes: u64| {
            let stat = format!("usage_usec {usec}\nuser_usec {usec}\nsystem_usec 0\n");
            std::fs::write(dir.path().join("cpu.stat"), stat).unwrap();
            std::fs::write(dir.path().join("memory.current"), format!("{bytes}\n")).unwrap();
        };
        let mut sampler = Sampler::new(Source {
            supervisor: Supervisor::new(dir.path().join("logs")),
            services: None,
            agent_inside: false,
        });
        write(1_000_000, 4096);
        let start = Instant::now();
        assert!(
            sampler.sample_cgroup(dir.path(), start).is_none(),
            "baseline"
        );
        write(1_050_000, 8192);
        let later = start + Duration::from_millis(100);
        let (cpu, memory) = sampler.sample_cgroup(dir.path(), later).unwrap();
        assert!((cpu - 0.5).abs() < 1e-9, "50 ms of CPU in 100 ms: {cpu}");
        assert_eq!(memory, 8192);
        // A counter that went back (a cgroup made again) counts nothing, not a wrap.
        write(10, 1);
        let (cpu, _) = sampler
            .sample_cgroup(dir.path(), later + Duration::from_millis(100))
            .unwrap();
        assert_eq!(cpu, 0.0);
        // A cgroup without the counters is no source.
        std::fs::remove_file(dir.path().join("cpu.stat")).unwrap();
        assert!(sampler.sample_cgroup(dir.path(), later).is_none());
    }

    /// The agent inside the cgroup takes off its own time, not its reaped children's: a service
    /// process that ran, ended and was reaped by the agent is in the cgroup's counter, and
    /// taking its time off again showed the services idle.
    #[test]
    fn a_reaped_child_is_not_taken_off_the_cgroup_counter() {
        let dir = tempfile::tempdir().unwrap();
        let write_usage = |usec: u64| {
            std::fs::write(dir.path().join("cpu.stat"), format!("usage_usec {usec}\n")).unwrap();
            std::fs::write(dir.path().join("memory.current"), "4096\n").unwrap();
        };
        let mut sampler = Sampler::new(Source {
            supervisor: Supervisor::new(dir.path().join("logs")),
            services: None,
            agent_inside: true,
        });
        let tick_usec = 1_000_000 / sampler.ticks_per_second;
        let children_usec = || {
            let own = parse_stat(&read("/proc/self/stat").unwrap()).unwrap();
            (own.ticks - own.own) * tick_usec
        };
        let usage = 1_000_000_000;
        write_usage(usage);
        let start = Instant::now();
        let before = children_usec();
        assert!(sampler.sample_cgroup(dir.path(), start).is_none());
        let burn = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done";
        let ran = std::process::Command::new("/bin/sh")
            .args(["-c", burn])
            .status();
        assert!(ran.unwrap().success());
        let child = children_usec() - before;
        assert!(child >= 20_000, "the child used {child} µs");
        // The cgroup counted the child as it ran.
        write_usage(usage + child);
        let later = start + Duration::from_secs(1);
        let (cpu, _) = sampler.sample_cgroup(dir.path(), later).unwrap();
        assert!(
            cpu * 1e6 > child as f64 / 2.0,
            "{cpu} s of CPU per second for a child of {child} µs"
        );
    }

    #[tokio::test]
    async fn a_busy_supervised_process_shows_as_one_core() {
        let dir = tempfile::tempdir().unwrap();
        let supervisor = Supervisor::new(dir.path().join("logs"));
        let spec = stratus_plugin_runtime::ProcessSpec {
            name: "burn".into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "while :; do :; done".into()],
            env: Vec::new(),
            working_dir: dir.path().to_owned(),
            processes: 16,
            redactor: Default::default(),
        };
        let pid = supervisor.spawn("svc", spec).unwrap();
        let mut sampler = Sampler::new(Source {
            supervisor: supervisor.clone(),
            services: None,
            agent_inside: false,
        });
        assert!(
            sampler.sample().is_none(),
            "the first sample is the baseline"
        );
        // On a loaded machine one interval may give the burner little; one of a few must
        // show it busy.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let report = loop {
            std::thread::sleep(Duration::from_millis(700));
            let report = sampler.sample().unwrap();
            if report.cpu_percent > 30.0 || std::time::Instant::now() > deadline {
                break report;
            }
        };
        supervisor.stop_all(Duration::from_secs(1)).await;
        assert!(report.cpu_percent > 30.0, "{report:?} (pid {pid})");
        assert!(report.memory_bytes > 0 && report.memory_percent > 0.0);
    }
}
