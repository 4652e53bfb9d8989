//! The epoch ticker: advances the engine's epoch every [`EPOCH_TICK`] while a guest runs, and
//! sleeps while none does. A ticker that always ran woke every process 100 times a second:
//! a thousand idle agents cost the machine 100,000 wake-ups a second for nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;
use wasmtime::{Engine, EngineWeak};

/// How often the epoch advances while a guest runs; timeouts are measured in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How long an idle ticker sleeps before it looks whether its engine is still there: an
/// agent's engine lives as long as its process, so this only bounds how long a ticker outlives
/// a dropped engine, and every idle agent wakes this often for nothing.
const IDLE_CHECK: Duration = Duration::from_secs(30);

/// How many guests run, the ticker's wake-up call, and how often it ticked.
struct Gate {
    running: Mutex<usize>,
    wake: Condvar,
    ticks: AtomicU64,
}

impl Gate {
    const fn new() -> Gate {
        Gate {
            running: Mutex::new(0),
            wake: Condvar::new(),
            ticks: AtomicU64::new(0),
        }
    }

    fn count(&self) -> std::sync::MutexGuard<'_, usize> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a guest runs; `false` once the engine is gone.
    fn wait_for_a_guest(&self, engine: &EngineWeak) -> bool {
        let mut n = self.count();
        while *n == 0 {
            let (guard, _) = self
                .wake
                .wait_timeout(n, IDLE_CHECK)
                .unwrap_or_else(|e| e.into_inner());
            n = guard;
            if *n == 0 && engine.upgrade().is_none() {
                return false;
            }
        }
        true
    }

    fn tick_while_running(&'static self, engine: EngineWeak) {
        while self.wait_for_a_guest(&engine) {
            std::thread::sleep(EPOCH_TICK);
            match engine.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => break,
            }
            self.ticks.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn running(&'static self) -> Running {
        *self.count() += 1;
        self.wake.notify_all();
        Running(self)
    }
}

/// The gate of this process's tickers.
static GATE: Gate = Gate::new();

/// Held while a guest may run (from before its epoch deadline is set until its store is
/// done): the ticker ticks while any is held.
#[must_use = "the ticker stops when the guard is dropped"]
pub struct Running(&'static Gate);

impl Drop for Running {
    fn drop(&mut self) {
        let mut n = self.0.count();
        *n = n.saturating_sub(1);
    }
}

/// Marks a guest as running until the returned guard is dropped.
pub fn running() -> Running {
    GATE.running()
}

/// Arms `store` for a guest call: it yields to the async runtime every tick (a long guest does
/// not hog a worker) and traps at `deadline`; the ticker ticks until the guard is dropped.
pub fn arm<T>(store: &mut wasmtime::Store<T>, deadline: std::time::Instant) -> Running {
    let ticking = running();
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        Ok(if std::time::Instant::now() >= deadline {
            wasmtime::UpdateDeadline::Interrupt
        } else {
            wasmtime::UpdateDeadline::Yield(1)
        })
    });
    ticking
}

/// Advances `engine`'s epoch every tick while a guest runs, until the engine is dropped; it
/// holds only a weak reference so that the engine (and its pool) can go away.
pub fn start_ticker(engine: &Engine) {
    spawn(&GATE, engine);
}

fn spawn(gate: &'static Gate, engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("stratus-epoch".into())
        .spawn(move || gate.tick_while_running(weak));
    if let Err(err) = spawned {
        // Without a ticker no deadline ever fires; the tokio timeout backstop still does.
        tracing::error!(error = %err, "cannot start the epoch ticker thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticker_ticks_only_while_a_guest_runs_and_ends_with_its_engine() {
        let gate: &'static Gate = Box::leak(Box::new(Gate::new()));
        let engine = Engine::new(wasmtime::Config::new().epoch_interruption(true)).unwrap();
        spawn(gate, &engine);
        std::thread::sleep(EPOCH_TICK * 10);
        assert_eq!(gate.ticks.load(Ordering::Relaxed), 0, "idle: no tick");
        let guard = gate.running();
        // Polled, not slept: a loaded machine may keep the ticker thread off the cores.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while gate.ticks.load(Ordering::Relaxed) < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(EPOCH_TICK);
        }
        let ticked = gate.ticks.load(Ordering::Relaxed);
        assert!(ticked >= 2, "running: ticks ({ticked})");
        drop(guard);
        let at_drop = gate.ticks.load(Ordering::Relaxed);
        std::thread::sleep(EPOCH_TICK * 20);
        // The tick under way when the guard dropped may still land; no other.
        let settled = gate.ticks.load(Ordering::Relaxed);
        assert!(
            settled - at_drop <= 1,
            "idle again: {at_drop} then {settled}"
        );
        drop(engine);
        // Wake the idle ticker rather than wait out its IDLE_CHECK: it finds its engine gone.
        gate.wake.notify_all();
        std::thread::sleep(EPOCH_TICK * 5);
        let _ = gate.running();
        std::thread::sleep(EPOCH_TICK * 5);
        let last = gate.ticks.load(Ordering::Relaxed);
        assert!(
            last - at_drop <= 1,
            "the ticker ended with its engine: {last}"
        );
    }
}
