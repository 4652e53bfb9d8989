//! A CPU burner for the tests of metrics and scaling rules, bounded so a test that forgets its
//! switch cannot leave a core busy: while a file (or anything) named [`SWITCH`] exists in the
//! greeter's service directory (beside its config file), one thread keeps one core busy. The
//! thread looks at the switch every [`POLL`], never starts a second thread, and ends for good
//! once it has burned [`MAX_BURN`] in all.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The switch's file name, in the directory of the greeter's config file.
pub const SWITCH: &str = "burn";
/// How often the switch is looked at, burning or not.
pub const POLL: Duration = Duration::from_millis(100);
/// The most CPU time one greeter ever burns.
pub const MAX_BURN: Duration = Duration::from_secs(600);

/// Starts the burner's one thread for the greeter whose config file is `config`.
pub fn start(config: &Path) {
    let dir = config.parent().unwrap_or(Path::new("."));
    let mut burner = Burner::new(dir.join(SWITCH), MAX_BURN);
    let spawned = std::thread::Builder::new()
        .name("burn".into())
        .spawn(move || while burner.step() {});
    if let Err(e) = spawned {
        println!("no CPU burner: {e}");
    }
}

/// The burner's state: its switch and the burn time it has left.
pub struct Burner {
    switch: PathBuf,
    left: Duration,
}

impl Burner {
    pub fn new(switch: PathBuf, budget: Duration) -> Burner {
        Burner {
            switch,
            left: budget,
        }
    }

    /// One poll: spins for [`POLL`] while the switch is on, else sleeps; `false` once the
    /// budget is spent.
    pub fn step(&mut self) -> bool {
        if self.left.is_zero() {
            return false;
        }
        // Not followed: whatever the entry is, its presence is the switch.
        if std::fs::symlink_metadata(&self.switch).is_err() {
            std::thread::sleep(POLL);
            return true;
        }
        let slice = POLL.min(self.left);
        spin(slice);
        self.left -= slice;
        !self.left.is_zero()
    }
}

/// Keeps this thread busy for `d`.
fn spin(d: Duration) {
    let end = Instant::now() + d;
    let mut x = 1u64;
    while Instant::now() < end {
        for _ in 0..1_000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_burns_only_while_switched_on_and_stops_at_its_budget() {
        let dir = std::env::temp_dir().join(format!("greeter-burn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let switch = dir.join(SWITCH);
        let mut b = Burner::new(switch.clone(), POLL * 3);
        let _ = std::fs::remove_file(&switch);
        assert!(b.step(), "off: it waits");
        assert_eq!(b.left, POLL * 3, "and burns nothing");
        std::fs::write(&switch, "").unwrap();
        let started = Instant::now();
        assert!(b.step());
        assert!(started.elapsed() >= POLL);
        assert_eq!(b.left, POLL * 2);
        assert!(b.step());
        assert!(!b.step(), "the budget is spent");
        assert!(!b.step(), "and stays spent");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
