//! How a reconcile issues many writes at once: bounded, and slow to start.
//!
//! A ReplicaSet of 10,000 replicas wants hundreds of creates in one reconcile. Sent
//! all at once they overrun the server's mutating in-flight limit (kube's 200) and come
//! back 429, each a wasted write and a requeue; so a reconcile keeps at most
//! [`IN_FLIGHT`] writes in flight, and issues at most [`BURST`] per pass.

use futures::StreamExt;
use std::future::Future;

/// Creates or deletes one reconcile issues at most (kube's burstReplicas).
pub const BURST: usize = 500;
/// Writes one reconcile keeps in flight at once: a fraction of the server's mutating
/// in-flight limit, so a few controllers writing together still fit under it.
pub const IN_FLIGHT: usize = 32;

/// Runs every future, at most [`IN_FLIGHT`] at once; the results in input order.
///
/// The calls are collected first: a stream over a borrowing `map` closure would make
/// the caller's future not `Send` (rustc cannot prove the closure general enough).
pub fn bounded<I, Fut, T>(calls: I) -> impl Future<Output = Vec<T>>
where
    I: IntoIterator<Item = Fut>,
    Fut: Future<Output = T>,
{
    let calls: Vec<Fut> = calls.into_iter().collect();
    futures::stream::iter(calls).buffered(IN_FLIGHT).collect()
}

/// Runs `count` calls of `call` in batches of 1, 2, 4, ... (each [`bounded`]); stops
/// after the first batch with a failure, so a template the server rejects costs one
/// failed write, not hundreds. Returns how many succeeded and the first error.
pub async fn slow_start<F, Fut>(count: usize, call: F) -> (usize, Option<kube::Error>)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), kube::Error>>,
{
    let mut done = 0;
    let mut batch = 1;
    while done < count {
        let size = batch.min(count - done);
        let mut error = None;
        for result in bounded((done..done + size).map(&call)).await {
            match result {
                Ok(()) => done += 1,
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        if error.is_some() {
            return (done, error);
        }
        batch *= 2;
    }
    (done, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn bounded_keeps_order_and_caps_concurrency() {
        let (running, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let results = bounded((0..200).map(|i| {
            let (running, peak) = (&running, &peak);
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                running.fetch_sub(1, Ordering::SeqCst);
                i
            }
        }))
        .await;
        assert_eq!(results, (0..200).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= IN_FLIGHT);
        assert!(peak.load(Ordering::SeqCst) > 1, "the calls ran concurrently");
    }

    #[tokio::test]
    async fn slow_start_doubles_batches_and_stops_at_the_first_failing_batch() {
        let calls = AtomicUsize::new(0);
        let (done, error) = slow_start(10, |_| async {
            calls.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .await;
        assert_eq!((done, error.is_none()), (10, true));
        assert_eq!(calls.load(Ordering::Relaxed), 10);

        let calls = AtomicUsize::new(0);
        let (done, error) = slow_start(100, |i| {
            calls.fetch_add(1, Ordering::Relaxed);
            async move {
                if i >= 4 {
                    Err(kube::Error::LinesCodecMaxLineLengthExceeded)
                } else {
                    Ok(())
                }
            }
        })
        .await;
        // Batches 1, 2, 4: the third batch (calls 3..7) fails at call 4.
        assert_eq!(done, 4);
        assert!(error.is_some());
        assert_eq!(calls.load(Ordering::Relaxed), 7, "no batch after the failing one");
    }
}
