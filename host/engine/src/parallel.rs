//! Running independent work side by side. Unlike `try_join_all`, a failure does not cancel the
//! siblings: a hook half-way through on another server runs to its end (so it is journaled as
//! done, and a CM run still erases its credentials), then the first failure is reported.

use futures::StreamExt;
use futures::future::join_all;
use futures::stream::FuturesUnordered;
use std::future::Future;

/// Awaits every future; returns their values in order, or the first error in order.
pub async fn all<T, E, F>(work: impl IntoIterator<Item = F>) -> Result<Vec<T>, E>
where
    F: Future<Output = Result<T, E>>,
{
    join_all(work).await.into_iter().collect()
}

/// Awaits every future, at most `n` at a time, started in order; returns their values in
/// order. For questions to a provider about many servers: one that waits on an unreachable
/// host holds one of the `n` places and no other question, and a thousand servers are not
/// asked in one burst. (Unordered underneath: futures' `buffered` starts no new future while
/// the oldest one still waits.)
pub async fn at_most<F: Future>(n: usize, work: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut waiting = work.into_iter().enumerate();
    let mut running = FuturesUnordered::new();
    let mut done = Vec::new();
    loop {
        while running.len() < n.max(1) {
            let Some((i, job)) = waiting.next() else {
                break;
            };
            running.push(async move { (i, job.await) });
        }
        match running.next().await {
            Some(value) => done.push(value),
            None => break,
        }
    }
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, value)| value).collect()
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

    #[tokio::test]
    async fn at_most_n_run_together_and_the_values_keep_their_order() {
        // Each of the first four waits for all four: asked one after another, none would end.
        let together = tokio::sync::Barrier::new(4);
        let (running, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let (together, running, most) = (&together, &running, &most);
        let work = (0..10u32).map(|i| async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            if i < 4 {
                together.wait().await;
            }
            // Later ones end first: the order of the values is still the order of the work.
            tokio::time::sleep(std::time::Duration::from_millis(u64::from(10 - i))).await;
            running.fetch_sub(1, Ordering::SeqCst);
            i * 2
        });
        let limit = std::time::Duration::from_secs(10);
        let values = tokio::time::timeout(limit, at_most(4, work)).await;
        assert_eq!(values, Ok((0..10).map(|i| i * 2).collect::<Vec<u32>>()));
        assert_eq!(
            most.load(Ordering::SeqCst),
            4,
            "never more than four at once"
        );
    }

    #[tokio::test]
    async fn a_slow_first_job_holds_one_place_and_no_other_job() {
        // The first job ends only once all the others have: with two places, they must all
        // pass through the second one while it waits.
        let finished = AtomicUsize::new(0);
        let finished = &finished;
        let work = (0..6u32).map(|i| async move {
            if i == 0 {
                while finished.load(Ordering::SeqCst) < 5 {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
            finished.fetch_add(1, Ordering::SeqCst);
            i
        });
        let limit = std::time::Duration::from_secs(10);
        let values = tokio::time::timeout(limit, at_most(2, work)).await;
        assert_eq!(values, Ok((0..6).collect::<Vec<u32>>()));
    }
}
