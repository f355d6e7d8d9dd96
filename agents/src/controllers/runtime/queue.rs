//! The work queue between informers and reconcilers (client-go's rate-limited,
//! deduplicating queue).
//!
//! - A key waiting is queued once, however often it is added.
//! - A key being reconciled is never handed to a second worker: added meanwhile, it
//!   is queued again when the first worker is done, so the change is not lost.
//! - A failing key is retried after an exponential per-key delay (5 ms doubling to
//!   1000 s), reset by [`WorkQueue::forget`] once it succeeds.
//!
//! Its state sits behind one mutex: informer handlers add and workers take, a few
//! hash operations each, never across an await.

use super::metrics::QueueMetrics;
use parking_lot::Mutex;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The first retry's delay, and the cap of the doubling (client-go's defaults).
const RETRY_BASE: Duration = Duration::from_millis(5);
const RETRY_MAX: Duration = Duration::from_secs(1000);

#[derive(Default)]
struct State {
    ready: VecDeque<String>,
    /// Keys in `ready`, or added while being processed.
    dirty: HashSet<String>,
    processing: HashSet<String>,
    /// Keys to add at a time; `waiting` holds each key's earliest time, and heap
    /// entries that no longer match it are skipped.
    delayed: BinaryHeap<Reverse<(Instant, String)>>,
    waiting: HashMap<String, Instant>,
    failures: HashMap<String, u32>,
    shut_down: bool,
}

impl State {
    /// Returns whether a worker should be woken.
    fn add(&mut self, key: &str) -> bool {
        if self.shut_down || self.dirty.contains(key) {
            return false;
        }
        self.dirty.insert(key.to_string());
        if self.processing.contains(key) {
            return false;
        }
        self.ready.push_back(key.to_string());
        true
    }

    /// Moves due delayed keys to `ready`; returns the next time one is due.
    fn promote_due(&mut self, now: Instant) -> Option<Instant> {
        while let Some(Reverse((at, _))) = self.delayed.peek() {
            if *at > now {
                return Some(*at);
            }
            let Reverse((at, key)) = self.delayed.pop().expect("peeked");
            if self.waiting.get(&key) == Some(&at) {
                self.waiting.remove(&key);
                self.add(&key);
            }
        }
        None
    }
}

pub struct WorkQueue {
    state: Mutex<State>,
    wake: Notify,
    metrics: Arc<QueueMetrics>,
}

impl WorkQueue {
    pub fn new(metrics: Arc<QueueMetrics>) -> Arc<Self> {
        Arc::new(WorkQueue { state: Mutex::new(State::default()), wake: Notify::new(), metrics })
    }

    pub fn add(&self, key: &str) {
        let mut state = self.state.lock();
        let wake = state.add(key);
        self.metrics.depth.set(state.ready.len() as i64);
        drop(state);
        self.metrics.adds.inc();
        if wake {
            self.wake.notify_one();
        }
    }

    /// Adds `key` once `delay` has passed (at once for a zero delay). A key already
    /// waiting keeps the earlier of the two times.
    pub fn add_after(&self, key: &str, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let at = Instant::now() + delay;
        let mut state = self.state.lock();
        if state.shut_down || state.waiting.get(key).is_some_and(|t| *t <= at) {
            return;
        }
        state.waiting.insert(key.to_string(), at);
        state.delayed.push(Reverse((at, key.to_string())));
        drop(state);
        // A worker asleep until a later time must look again.
        self.wake.notify_waiters();
    }

    /// Adds `key` after its next backoff delay (a failed reconcile).
    pub fn add_rate_limited(&self, key: &str) {
        let failures = {
            let mut state = self.state.lock();
            let count = state.failures.entry(key.to_string()).or_insert(0);
            *count += 1;
            *count
        };
        self.metrics.retries.inc();
        self.add_after(key, backoff(failures));
    }

    /// Clears `key`'s failure count.
    pub fn forget(&self, key: &str) {
        self.state.lock().failures.remove(key);
    }

    /// Times `key` has failed in a row.
    pub fn failures(&self, key: &str) -> u32 {
        self.state.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// The next key to reconcile; `None` once shut down.
    pub async fn next(&self) -> Option<String> {
        loop {
            let wake = self.wake.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            let due = {
                let mut state = self.state.lock();
                let due = state.promote_due(Instant::now());
                if let Some(key) = state.ready.pop_front() {
                    state.dirty.remove(&key);
                    state.processing.insert(key.clone());
                    let more = !state.ready.is_empty();
                    self.metrics.depth.set(state.ready.len() as i64);
                    drop(state);
                    if more {
                        self.wake.notify_one();
                    }
                    return Some(key);
                }
                if state.shut_down {
                    return None;
                }
                due
            };
            match due {
                Some(at) => {
                    tokio::select! {
                        _ = &mut wake => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => wake.await,
            }
        }
    }

    /// Marks `key` reconciled; a key added meanwhile is queued again.
    pub fn done(&self, key: &str) {
        let mut state = self.state.lock();
        state.processing.remove(key);
        let requeue = state.dirty.contains(key);
        if requeue {
            state.ready.push_back(key.to_string());
        }
        self.metrics.depth.set(state.ready.len() as i64);
        drop(state);
        if requeue {
            self.wake.notify_one();
        }
    }

    /// Wakes every worker with `None` once the keys in hand are done.
    pub fn shut_down(&self) {
        self.state.lock().shut_down = true;
        self.wake.notify_waiters();
    }

    /// Keys waiting (not delayed, not in progress).
    pub fn len(&self) -> usize {
        self.state.lock().ready.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The delay before retry number `failures` (1-based).
fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(30);
    RETRY_BASE.saturating_mul(1u32 << exponent).min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> Arc<WorkQueue> {
        WorkQueue::new(Arc::new(QueueMetrics::default()))
    }

    #[tokio::test]
    async fn a_key_is_queued_once_and_never_handed_out_twice_at_once() {
        let q = queue();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let first = q.next().await.unwrap();
        assert_eq!(first, "a");
        // Added while in progress: held back until done.
        q.add("a");
        assert_eq!(q.next().await.as_deref(), Some("b"));
        assert!(q.is_empty(), "a waits for its worker");
        q.done("a");
        assert_eq!(q.next().await.as_deref(), Some("a"));
        q.done("a");
        q.done("b");
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_keys_arrive_at_their_time_and_keep_the_earliest() {
        let q = queue();
        q.add_after("late", Duration::from_secs(10));
        q.add_after("late", Duration::from_secs(3));
        q.add_after("late", Duration::from_secs(20));
        let started = Instant::now();
        assert_eq!(q.next().await.as_deref(), Some("late"));
        assert_eq!(started.elapsed().as_secs(), 3);
        q.done("late");
        // The stale heap entries do not bring it back.
        let again = tokio::time::timeout(Duration::from_secs(60), q.next()).await;
        assert!(again.is_err(), "queued once");
    }

    #[test]
    fn retries_back_off_exponentially_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_millis(5));
        assert_eq!(backoff(2), Duration::from_millis(10));
        assert_eq!(backoff(11), Duration::from_millis(5120));
        assert_eq!(backoff(40), RETRY_MAX);
    }

    #[tokio::test]
    async fn failures_are_counted_until_forgotten_and_shutdown_ends_workers() {
        let q = queue();
        q.add_rate_limited("x");
        q.add_rate_limited("x");
        assert_eq!(q.failures("x"), 2);
        q.forget("x");
        assert_eq!(q.failures("x"), 0);
        let waiter = {
            let q = Arc::clone(&q);
            tokio::spawn(async move { q.next().await })
        };
        // "x" is due within 10 ms; after it, shutdown returns None.
        assert_eq!(waiter.await.unwrap().as_deref(), Some("x"));
        q.done("x");
        q.shut_down();
        assert_eq!(q.next().await, None);
    }
}
