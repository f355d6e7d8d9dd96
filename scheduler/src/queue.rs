//! The scheduling queue: activeQ (ordered by priority, then by when the pod was queued:
//! the PrioritySort plugin), backoffQ (pods waiting out an exponential backoff after a
//! failed attempt), the unschedulable pool (pods no node fits, waiting for a cluster event
//! that might change that), and gated pods (scheduling gates not yet removed).
//!
//! Time is passed in (`now_ms`), never read, so tests drive the clock. The queue is
//! bounded: adding beyond `capacity` fails and the caller decides (the runner re-lists
//! later). Heaps use lazy deletion: an entry is valid only while its sequence number is
//! the pod's current one, and heaps are compacted when stale entries dominate.

use keelson_engine::k8s_openapi::api::core::v1::Pod;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

/// First backoff after a failed attempt (kube's `podInitialBackoffDuration`).
pub const INITIAL_BACKOFF_MS: u64 = 1_000;
/// Backoff never exceeds this (`podMaxBackoffDuration`).
pub const MAX_BACKOFF_MS: u64 = 10_000;
/// Unschedulable pods are retried after this long even with no cluster event
/// (`podMaxInUnschedulablePodsDuration`).
pub const UNSCHEDULABLE_FLUSH_MS: u64 = 5 * 60 * 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Active,
    Backoff,
    Unschedulable,
    Gated,
    /// Popped and being scheduled; comes back through `done`/`failed`.
    InFlight,
}

#[derive(Debug)]
struct Entry {
    pod: Arc<Pod>,
    priority: i32,
    queued_ms: u64,
    attempts: u32,
    seq: u64,
    place: Place,
    since_ms: u64,
    /// A cluster event arrived while the pod was in flight: if it fails, retry soon
    /// instead of parking it (kube's `moveRequestCycle`).
    moved_while_in_flight: bool,
}

#[derive(Debug, PartialEq, Eq)]
struct ActiveKey {
    priority: i32,
    queued_ms: u64,
    seq: u64,
    key: Arc<str>,
}

impl Ord for ActiveKey {
    /// Max-heap order: higher priority first, then earlier queued, then earlier added.
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority.cmp(&other.priority).then(other.queued_ms.cmp(&self.queued_ms)).then(other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ActiveKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A pod handed out by `pop`.
#[derive(Clone, Debug)]
pub struct QueuedPod {
    pub key: Arc<str>,
    pub pod: Arc<Pod>,
    /// Attempts including this one.
    pub attempts: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the scheduling queue is full ({0} pods)")]
pub struct QueueFull(pub usize);

/// Sizes of the sub-queues, for `scheduler_pending_pods{queue=...}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueLengths {
    pub active: usize,
    pub backoff: usize,
    pub unschedulable: usize,
    pub gated: usize,
    pub in_flight: usize,
}

pub struct SchedulingQueue {
    entries: HashMap<Arc<str>, Entry>,
    active: BinaryHeap<ActiveKey>,
    backoff: BinaryHeap<Reverse<(u64, u64, Arc<str>)>>,
    capacity: usize,
    next_seq: u64,
}

fn is_gated(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.scheduling_gates.as_ref()).is_some_and(|g| !g.is_empty())
}

fn backoff_ms(attempts: u32) -> u64 {
    let doublings = attempts.saturating_sub(1).min(16);
    (INITIAL_BACKOFF_MS << doublings).min(MAX_BACKOFF_MS)
}

impl SchedulingQueue {
    pub fn new(capacity: usize) -> SchedulingQueue {
        SchedulingQueue {
            entries: HashMap::new(),
            active: BinaryHeap::new(),
            backoff: BinaryHeap::new(),
            capacity,
            next_seq: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    pub fn lengths(&self) -> QueueLengths {
        let mut lengths = QueueLengths::default();
        for entry in self.entries.values() {
            match entry.place {
                Place::Active => lengths.active += 1,
                Place::Backoff => lengths.backoff += 1,
                Place::Unschedulable => lengths.unschedulable += 1,
                Place::Gated => lengths.gated += 1,
                Place::InFlight => lengths.in_flight += 1,
            }
        }
        lengths
    }

    /// Adds a pending pod, or updates one already queued. An update of a parked
    /// (unschedulable or gated) pod may have made it schedulable: it is retried.
    pub fn add(&mut self, key: &str, pod: Arc<Pod>, now_ms: u64) -> Result<(), QueueFull> {
        let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        let gated = is_gated(&pod);
        if let Some(entry) = self.entries.get_mut(key) {
            entry.pod = pod;
            entry.priority = priority;
            match entry.place {
                Place::InFlight => entry.moved_while_in_flight = true,
                Place::Unschedulable | Place::Gated if !gated => self.activate_or_back_off(key, now_ms),
                Place::Active | Place::Backoff if gated => self.park(key, Place::Gated, now_ms),
                Place::Active => self.activate(key),
                _ => {}
            }
            return Ok(());
        }
        if self.entries.len() >= self.capacity {
            return Err(QueueFull(self.capacity));
        }
        let key: Arc<str> = key.into();
        let entry = Entry {
            pod,
            priority,
            queued_ms: now_ms,
            attempts: 0,
            seq: 0,
            place: Place::Gated,
            since_ms: now_ms,
            moved_while_in_flight: false,
        };
        self.entries.insert(Arc::clone(&key), entry);
        if !gated {
            self.activate(&key);
        }
        Ok(())
    }

    /// The queued copy of a pod.
    pub fn get(&self, key: &str) -> Option<&Arc<Pod>> {
        self.entries.get(key).map(|e| &e.pod)
    }

    /// Replaces the queued copy of a pod without moving it: for updates that cannot
    /// change where it fits (its status, say). Returns false if it is not queued.
    pub fn refresh(&mut self, key: &str, pod: Arc<Pod>) -> bool {
        match self.entries.get_mut(key) {
            Some(entry) => {
                entry.pod = pod;
                true
            }
            None => false,
        }
    }

    /// Forgets a pod (deleted, or bound by someone else).
    pub fn delete(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// The next pod to schedule: backoffs that have expired join activeQ first.
    pub fn pop(&mut self, now_ms: u64) -> Option<QueuedPod> {
        self.flush_backoff(now_ms);
        while let Some(top) = self.active.pop() {
            let Some(entry) = self.entries.get_mut(&top.key) else { continue };
            if entry.seq != top.seq || entry.place != Place::Active {
                continue;
            }
            entry.place = Place::InFlight;
            entry.attempts += 1;
            entry.moved_while_in_flight = false;
            return Some(QueuedPod { key: top.key, pod: Arc::clone(&entry.pod), attempts: entry.attempts });
        }
        None
    }

    /// The pod was scheduled (or handed to binding): it leaves the queue.
    pub fn done(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// No node fits. The pod waits in the unschedulable pool for a cluster event, unless
    /// one already arrived while it was being scheduled (then it backs off and retries).
    pub fn unschedulable(&mut self, key: &str, now_ms: u64) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        if entry.place != Place::InFlight {
            return;
        }
        if entry.moved_while_in_flight {
            self.back_off(key, now_ms);
        } else {
            self.park(key, Place::Unschedulable, now_ms);
        }
    }

    /// The attempt failed for another reason (an error, a failed bind): back off.
    pub fn failed(&mut self, key: &str, now_ms: u64) {
        if self.entries.get(key).is_some_and(|e| e.place == Place::InFlight) {
            self.back_off(key, now_ms);
        }
    }

    /// A cluster event (node added or changed, pod deleted, ...) may have made parked
    /// pods schedulable: move them all to activeQ (or backoffQ while backing off).
    pub fn cluster_changed(&mut self, now_ms: u64) {
        let parked: Vec<Arc<str>> =
            self.entries.iter().filter(|(_, e)| e.place == Place::Unschedulable).map(|(k, _)| Arc::clone(k)).collect();
        for key in parked {
            self.activate_or_back_off(&key, now_ms);
        }
        for entry in self.entries.values_mut() {
            if entry.place == Place::InFlight {
                entry.moved_while_in_flight = true;
            }
        }
    }

    /// Retries pods parked as unschedulable for longer than `UNSCHEDULABLE_FLUSH_MS`.
    pub fn flush_unschedulable(&mut self, now_ms: u64) {
        let stale: Vec<Arc<str>> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.place == Place::Unschedulable && now_ms.saturating_sub(e.since_ms) >= UNSCHEDULABLE_FLUSH_MS
            })
            .map(|(k, _)| Arc::clone(k))
            .collect();
        for key in stale {
            self.activate_or_back_off(&key, now_ms);
        }
    }

    /// When the earliest backoff ends, if any (the runner sleeps until then).
    pub fn next_backoff_ms(&self) -> Option<u64> {
        self.backoff.peek().map(|Reverse((until, _, _))| *until)
    }

    fn flush_backoff(&mut self, now_ms: u64) {
        while let Some(Reverse((until, seq, _))) = self.backoff.peek() {
            if *until > now_ms {
                break;
            }
            let (seq, key) = (*seq, self.backoff.pop().expect("peeked").0 .2);
            if self.entries.get(&key).is_some_and(|e| e.seq == seq && e.place == Place::Backoff) {
                self.activate(&key);
            }
        }
    }

    fn activate_or_back_off(&mut self, key: &str, now_ms: u64) {
        let Some(entry) = self.entries.get(key) else { return };
        let until = entry.since_ms + backoff_ms(entry.attempts);
        if entry.attempts > 0 && until > now_ms && entry.place != Place::Gated {
            self.back_off(key, entry.since_ms);
        } else {
            self.activate(key);
        }
    }

    fn activate(&mut self, key: &str) {
        let seq = self.bump();
        let Some((key, entry)) = self.entries.get_key_value(key) else { return };
        let key = Arc::clone(key);
        let active = ActiveKey { priority: entry.priority, queued_ms: entry.queued_ms, seq, key: Arc::clone(&key) };
        let entry = self.entries.get_mut(&key).expect("present");
        entry.seq = seq;
        entry.place = Place::Active;
        self.active.push(active);
        self.compact();
    }

    /// Backs off from `from_ms` for the pod's attempts so far.
    fn back_off(&mut self, key: &str, from_ms: u64) {
        let seq = self.bump();
        let Some((key, entry)) = self.entries.get_key_value(key) else { return };
        let key = Arc::clone(key);
        let until = from_ms + backoff_ms(entry.attempts);
        let entry = self.entries.get_mut(&key).expect("present");
        entry.seq = seq;
        entry.place = Place::Backoff;
        entry.since_ms = from_ms;
        self.backoff.push(Reverse((until, seq, key)));
        self.compact();
    }

    fn park(&mut self, key: &str, place: Place, now_ms: u64) {
        let seq = self.bump();
        if let Some(entry) = self.entries.get_mut(key) {
            entry.seq = seq;
            entry.place = place;
            entry.since_ms = now_ms;
        }
    }

    fn bump(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Drops stale heap entries once they outnumber live pods, bounding the heaps.
    fn compact(&mut self) {
        let live = self.entries.len().max(64);
        if self.active.len() > 2 * live {
            let entries = &self.entries;
            self.active.retain(|a| entries.get(&a.key).is_some_and(|e| e.seq == a.seq && e.place == Place::Active));
        }
        if self.backoff.len() > 2 * live {
            let entries = &self.entries;
            self.backoff.retain(|Reverse((_, seq, key))| {
                entries.get(key).is_some_and(|e| e.seq == *seq && e.place == Place::Backoff)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, priority: i32) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": name}, "spec": {"containers": [], "priority": priority}}),
            )
            .unwrap(),
        )
    }

    fn gated(name: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": name}, "spec": {"containers": [], "schedulingGates": [{"name": "wait"}]}}),
            )
            .unwrap(),
        )
    }

    fn popped(q: &mut SchedulingQueue, now: u64) -> Option<String> {
        q.pop(now).map(|p| p.key.to_string())
    }

    #[test]
    fn active_queue_orders_by_priority_then_age() {
        let mut q = SchedulingQueue::new(10);
        q.add("low-old", pod("a", 1), 0).unwrap();
        q.add("high", pod("b", 100), 5).unwrap();
        q.add("low-new", pod("c", 1), 10).unwrap();
        assert_eq!(popped(&mut q, 20).as_deref(), Some("high"));
        assert_eq!(popped(&mut q, 20).as_deref(), Some("low-old"));
        assert_eq!(popped(&mut q, 20).as_deref(), Some("low-new"));
        assert_eq!(popped(&mut q, 20), None);
    }

    #[test]
    fn failures_back_off_exponentially_up_to_ten_seconds() {
        let mut q = SchedulingQueue::new(10);
        q.add("p", pod("p", 0), 0).unwrap();
        let mut now = 0;
        for expected in [1_000, 2_000, 4_000, 8_000, 10_000, 10_000] {
            assert_eq!(popped(&mut q, now).as_deref(), Some("p"));
            q.failed("p", now);
            assert_eq!(q.lengths().backoff, 1);
            assert_eq!(popped(&mut q, now + expected - 1), None, "still backing off before {expected}ms");
            now += expected;
        }
        assert_eq!(popped(&mut q, now).as_deref(), Some("p"));
    }

    #[test]
    fn unschedulable_pods_wait_for_a_cluster_event_or_the_flush() {
        let mut q = SchedulingQueue::new(10);
        q.add("p", pod("p", 0), 0).unwrap();
        q.pop(0).unwrap();
        q.unschedulable("p", 0);
        assert_eq!(q.lengths().unschedulable, 1);
        assert_eq!(popped(&mut q, 60_000), None, "nothing changed: it stays parked");
        q.cluster_changed(60_000);
        assert_eq!(popped(&mut q, 60_000).as_deref(), Some("p"), "backoff (1s) is long over");

        q.unschedulable("p", 60_000);
        q.flush_unschedulable(60_000 + UNSCHEDULABLE_FLUSH_MS - 1);
        assert_eq!(q.lengths().unschedulable, 1);
        q.flush_unschedulable(60_000 + UNSCHEDULABLE_FLUSH_MS);
        assert_eq!(q.lengths().active, 1);
    }

    #[test]
    fn a_refresh_replaces_the_pod_but_keeps_it_parked() {
        let mut q = SchedulingQueue::new(10);
        q.add("p", pod("p", 0), 0).unwrap();
        q.pop(0).unwrap();
        q.unschedulable("p", 0);
        assert!(q.refresh("p", pod("p-v2", 0)));
        assert_eq!(q.lengths().unschedulable, 1, "a status-only update does not retry the pod");
        assert_eq!(q.get("p").and_then(|p| p.metadata.name.as_deref()), Some("p-v2"));
        assert!(!q.refresh("absent", pod("x", 0)));
        assert_eq!(popped(&mut q, 60_000), None);
    }

    #[test]
    fn an_event_during_the_attempt_means_retry_not_park() {
        let mut q = SchedulingQueue::new(10);
        q.add("p", pod("p", 0), 0).unwrap();
        q.pop(0).unwrap();
        q.cluster_changed(1);
        q.unschedulable("p", 2);
        assert_eq!(q.lengths().backoff, 1);
        assert_eq!(popped(&mut q, 2 + INITIAL_BACKOFF_MS).as_deref(), Some("p"));
    }

    #[test]
    fn cluster_events_respect_a_running_backoff() {
        let mut q = SchedulingQueue::new(10);
        q.add("p", pod("p", 0), 0).unwrap();
        q.pop(0).unwrap();
        q.unschedulable("p", 0);
        q.cluster_changed(100);
        assert_eq!(q.lengths().backoff, 1, "1s backoff from the failure is still running");
        assert_eq!(popped(&mut q, 999), None);
        assert_eq!(popped(&mut q, 1_000).as_deref(), Some("p"));
    }

    #[test]
    fn gated_pods_wait_until_their_gates_are_removed() {
        let mut q = SchedulingQueue::new(10);
        q.add("p", gated("p"), 0).unwrap();
        assert_eq!(q.lengths().gated, 1);
        assert_eq!(popped(&mut q, 0), None);
        q.add("p", pod("p", 0), 5).unwrap();
        assert_eq!(popped(&mut q, 5).as_deref(), Some("p"));
    }

    #[test]
    fn the_queue_is_bounded_and_deletes_are_honoured() {
        let mut q = SchedulingQueue::new(2);
        q.add("a", pod("a", 0), 0).unwrap();
        q.add("b", pod("b", 0), 0).unwrap();
        assert_eq!(q.add("c", pod("c", 0), 0), Err(QueueFull(2)));
        q.delete("a");
        assert_eq!(popped(&mut q, 0).as_deref(), Some("b"));
        assert_eq!(popped(&mut q, 0), None);
        q.done("b");
        assert!(q.is_empty());
    }

    #[test]
    fn heaps_stay_bounded_under_churn() {
        let mut q = SchedulingQueue::new(10);
        q.add("p", pod("p", 0), 0).unwrap();
        for i in 0..10_000 {
            q.add("p", pod("p", i), 0).unwrap();
        }
        assert!(q.active.len() <= 2 * 64 + 1, "{}", q.active.len());
        assert_eq!(popped(&mut q, 0).as_deref(), Some("p"));
    }
}
