//! Scans of `/proc` shared between the callers waiting for one. Ending a thousand servers at
//! once used to scan every process once per server (and per poll); now a caller waits for
//! the next scan that starts after it asked, and that one scan answers everyone waiting.
//! A scan that starts after a caller asked sees at least what that caller's own scan would
//! have seen, so sharing never answers with an older picture.

use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};

/// Callers waiting for the next scan, and whether one of them is scanning.
pub(crate) struct Coalescer<Q, A> {
    state: Mutex<Waiting<Q, A>>,
}

struct Waiting<Q, A> {
    pending: Vec<(Q, mpsc::Sender<A>)>,
    scanning: bool,
}

impl<Q: Clone, A> Coalescer<Q, A> {
    pub(crate) const fn new() -> Self {
        Coalescer {
            state: Mutex::new(Waiting {
                pending: Vec::new(),
                scanning: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Waiting<Q, A>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The answer to `query` from a scan that starts after this call: `scan` answers a batch
    /// of queries in order. The first caller scans for everyone who waits meanwhile.
    pub(crate) fn ask(&self, query: Q, scan: impl Fn(&[Q]) -> Vec<A>) -> A {
        let (tx, rx) = mpsc::channel();
        let lead = {
            let mut w = self.lock();
            w.pending.push((query.clone(), tx));
            !std::mem::replace(&mut w.scanning, true)
        };
        if lead {
            let _done = Done(self);
            loop {
                let batch = {
                    let mut w = self.lock();
                    if w.pending.is_empty() {
                        // Under the same lock as the check: whoever comes next leads.
                        w.scanning = false;
                        break;
                    }
                    std::mem::take(&mut w.pending)
                };
                let (queries, senders): (Vec<Q>, Vec<_>) = batch.into_iter().unzip();
                for (tx, answer) in senders.into_iter().zip(scan(&queries)) {
                    let _ = tx.send(answer);
                }
            }
        }
        // A leader that panicked dropped our sender: scan alone then.
        match rx.recv() {
            Ok(answer) => answer,
            Err(_) => scan(std::slice::from_ref(&query))
                .pop()
                .expect("a scan answers each query"),
        }
    }
}

/// Ends a leader's turn when its scan panics: the next caller leads.
struct Done<'a, Q, A>(&'a Coalescer<Q, A>);

impl<Q, A> Drop for Done<'_, Q, A> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut w = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
            w.scanning = false;
            // Whoever still waits gets a closed channel and scans alone.
            w.pending.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn callers_waiting_together_share_scans_and_each_gets_its_own_answer() {
        let c: Arc<Coalescer<u32, u32>> = Arc::new(Coalescer::new());
        let scans = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..64u32)
            .map(|i| {
                let (c, scans) = (c.clone(), scans.clone());
                std::thread::spawn(move || {
                    let answer = c.ask(i, |qs| {
                        scans.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        qs.iter().map(|q| q * 10).collect()
                    });
                    assert_eq!(answer, i * 10);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n = scans.load(Ordering::SeqCst);
        assert!((1..64).contains(&n), "64 callers shared {n} scans");
    }

    #[test]
    fn a_scan_that_panics_leaves_the_next_caller_able_to_scan() {
        let c: Coalescer<u32, u32> = Coalescer::new();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.ask(1, |_| panic!("scan failed"))
        }));
        assert!(panicked.is_err());
        assert_eq!(c.ask(2, |qs| qs.to_vec()), 2);
    }
}
