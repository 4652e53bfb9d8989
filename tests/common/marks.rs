//! Finding the processes a test started by a marker in their command line: a marker no other
//! process on the machine carries, the live processes that carry it, and a guard that ends
//! them (by pid, ours only) if the test fails half-way.

use std::time::{Duration, Instant};

/// A marker no other process on the machine carries.
pub fn marker(prefix: &str, test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{test}-{}-{nanos}", std::process::id())
}

/// Live processes whose command line carries `marker`.
pub fn marked(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker) && super::alive(pid) {
            found.push(pid);
        }
    }
    found
}

/// Waits up to `limit` until at least `n` marked processes run, and returns them.
pub fn wait_marked(marker: &str, n: usize, limit: Duration) -> Vec<u32> {
    let deadline = Instant::now() + limit;
    loop {
        let found = marked(marker);
        if found.len() >= n || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Ends the marked processes (ours, by pid) when dropped.
pub struct Reap(pub String);

impl Drop for Reap {
    fn drop(&mut self) {
        for pid in marked(&self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .output();
        }
    }
}
