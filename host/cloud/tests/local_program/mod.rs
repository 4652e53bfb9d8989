//! A program of this machine running as another user than the tests (and the control plane
//! they start), holding connections open: what a plugin's program could do on a server of
//! the local provider (the tests must run as root to start it). Shared by `host/cloud/tests`
//! and the integration tests under `tests/`.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const SCRIPT: &str = include_str!("hold_connections.py");

/// A running `hold_connections.py` as its own uid; killed (by pid) and reaped on drop.
pub struct LocalProgram {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl LocalProgram {
    /// Starts a program as `uid` (gid the same, no supplementary groups) that opens `count`
    /// connections to `to`, taking the `sources` addresses in turn, and keeps them open.
    pub fn hold(uid: u32, to: SocketAddr, count: usize, sources: &[&str]) -> LocalProgram {
        let mut child = Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(SCRIPT)
            .arg(to.ip().to_string())
            .arg(to.port().to_string())
            .arg(count.to_string())
            .args(sources)
            .uid(uid)
            .gid(uid)
            .current_dir("/")
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3 as another user");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut program = LocalProgram {
            child,
            stdin,
            stdout,
        };
        let held = program.line();
        assert_eq!(
            held,
            format!("held {count}"),
            "the program could not connect"
        );
        program
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    /// How many of its connections the server has not closed.
    pub fn open(&mut self) -> usize {
        self.stdin.write_all(b"?\n").unwrap();
        self.line().parse().expect("a count")
    }

    /// How many stay open once the server closed all it closes at once: asks until at most
    /// `expected` are open (or 4 s passed, before any of the servers' time limits).
    pub fn open_once_settled(&mut self, expected: usize) -> usize {
        let started = Instant::now();
        loop {
            let open = self.open();
            if open <= expected || started.elapsed() > Duration::from_secs(4) {
                return open;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// How many connections `programs` keep open together once the server closed all it closes
/// at once: asks until at most `expected` are (or 4 s passed).
pub fn open_together(programs: &mut [LocalProgram], expected: usize) -> usize {
    let started = Instant::now();
    loop {
        let open = programs.iter_mut().map(LocalProgram::open).sum();
        if open <= expected || started.elapsed() > Duration::from_secs(4) {
            return open;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for LocalProgram {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
