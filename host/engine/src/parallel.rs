//! Running independent work side by side. Unlike `try_join_all`, a failure does not cancel the
//! siblings: a hook half-way through on another server runs to its end (so it is journaled as
//! done, and a CM run still erases its credentials), then the first failure is reported.

use futures::future::join_all;
use std::future::Future;

/// Awaits every future; returns their values in order, or the first error in order.
pub async fn all<T, E, F>(work: impl IntoIterator<Item = F>) -> Result<Vec<T>, E>
where
    F: Future<Output = Result<T, E>>,
{
    join_all(work).await.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_failure_lets_the_others_finish_and_the_first_error_wins() {
        let finished = AtomicUsize::new(0);
        let finished = &finished;
        let result: Result<Vec<u32>, String> = all((0..4u32).map(|i| async move {
            tokio::time::sleep(std::time::Duration::from_millis(u64::from(10 * (4 - i)))).await;
            finished.fetch_add(1, Ordering::SeqCst);
            if i % 2 == 1 {
                Err(format!("job {i} failed"))
            } else {
                Ok(i)
            }
        }))
        .await;
        assert_eq!(result, Err("job 1 failed".to_string()));
        assert_eq!(finished.load(Ordering::SeqCst), 4, "no job was cancelled");
        let ok: Result<Vec<u32>, String> = all((0..3u32).map(|i| async move { Ok(i) })).await;
        assert_eq!(ok, Ok(vec![0, 1, 2]));
    }
}
