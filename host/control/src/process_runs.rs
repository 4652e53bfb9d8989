//! Whether a process id names a running process.

/// Whether `pid` runs: it exists and is neither a zombie nor dead. A control plane a caller
/// started itself stays a zombie until that caller reaps it, and `kill(pid, 0)` still
/// succeeds on a zombie, so waiting on that would wait for nothing.
pub fn process_runs(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::process_runs;

    #[test]
    fn a_reaped_child_does_not_run_and_an_unreaped_one_neither() {
        assert!(process_runs(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: once it has exited it is a zombie.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_runs(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            !process_runs(pid),
            "an exited, unreaped child counts as running"
        );
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        child.wait().unwrap();
        assert!(!process_runs(pid));
    }
}
