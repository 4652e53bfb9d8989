//! The local provider's blocking work (making and removing server directories, the lease lock,
//! spawning agents, ending cgroups) runs on tokio's blocking threads, a bounded number at a
//! time: a thousand servers launched or ended together otherwise made a thousand threads in the
//! control plane (their stacks and allocator arenas were a third of its memory), for work the
//! lease lock and the disk serialize anyway.

use crate::ProviderError;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Most blocking tasks of one provider running at once.
pub const BLOCKING_AT_ONCE: usize = 16;

/// Hands blocking work to tokio's pool, at most [`BLOCKING_AT_ONCE`] at a time.
#[derive(Debug, Clone)]
pub(crate) struct BlockingGate(Arc<Semaphore>);

impl Default for BlockingGate {
    fn default() -> BlockingGate {
        BlockingGate(Arc::new(Semaphore::new(BLOCKING_AT_ONCE)))
    }
}

impl BlockingGate {
    /// Runs `f` on a blocking thread once a place is free. Work that started goes on to its end
    /// even if the caller stops waiting for it.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ProviderError> {
        let place = self
            .0
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ProviderError::Task(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let _place = place;
            f()
        })
        .await
        .map_err(|e| ProviderError::Task(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn no_more_than_the_bound_run_at_once() {
        let gate = BlockingGate::default();
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let tasks: Vec<_> = (0..BLOCKING_AT_ONCE * 3)
            .map(|_| {
                let (gate, now, most) = (gate.clone(), now.clone(), most.clone());
                tokio::spawn(async move {
                    gate.run(move || {
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        now.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let most = most.load(Ordering::SeqCst);
        assert!(most <= BLOCKING_AT_ONCE, "{most} ran at once");
        assert!(most > 1, "the work did not run in parallel");
    }
}
