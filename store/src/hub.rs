//! The watch hub: a bounded ring of recent commits shared by every watcher.
//!
//! The committer appends each commit's batch and wakes the watchers; it never waits for
//! them, so a slow watcher cannot slow a commit. Each watcher reads the ring from its
//! own cursor, which makes the ring every watcher's bounded queue at once: a watcher
//! whose cursor falls off the front (older than the oldest buffered batch) is told
//! [`StoreError::WatcherLagged`](crate::StoreError) and must re-list. Memory is bounded by
//! the ring's event and byte limits, however many watchers there are.

use crate::event::CommitBatch;
use bytes::Bytes;
use event_listener::Event as Signal;
use keelson_engine::Revision;
use parking_lot::RwLock;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Bounds of the ring. Whichever is reached first evicts the oldest batches.
#[derive(Clone, Copy, Debug)]
pub struct RingLimits {
    pub events: usize,
    pub bytes: usize,
}

impl Default for RingLimits {
    /// 200,000 events or 512 MiB: four seconds of history at 50,000 writes/s, so a
    /// watcher may stall that long before it has to re-list.
    fn default() -> Self {
        RingLimits { events: 200_000, bytes: 512 << 20 }
    }
}

struct Ring {
    batches: VecDeque<Arc<CommitBatch>>,
    /// The oldest revision still buffered; when empty, the next revision to be published.
    first: Revision,
    /// The revision after the newest buffered one.
    end: Revision,
    events: usize,
    bytes: usize,
}

/// Where a cursor stands relative to the ring.
pub(crate) enum Lookup {
    /// Nothing at or after the cursor has been published yet.
    CaughtUp,
    /// The batch holding the cursor's revision.
    Found(Arc<CommitBatch>),
    /// The cursor is older than the ring's oldest revision (carried).
    Behind(Revision),
}

impl Ring {
    /// The batch holding `revision`, which must be in `first..end`.
    fn batch_holding(&self, revision: Revision) -> &Arc<CommitBatch> {
        // Batches are contiguous and sorted: the last one starting at or before it.
        &self.batches[self.batches.partition_point(|b| b.first <= revision) - 1]
    }
}

pub(crate) struct Hub {
    ring: RwLock<Ring>,
    limits: RingLimits,
    signal: Signal,
    closed: AtomicBool,
}

impl Hub {
    /// A hub whose history starts after `current`.
    pub(crate) fn new(current: Revision, limits: RingLimits) -> Hub {
        let ring = Ring { batches: VecDeque::new(), first: current.next(), end: current.next(), events: 0, bytes: 0 };
        Hub { ring: RwLock::new(ring), limits, signal: Signal::new(), closed: AtomicBool::new(false) }
    }

    /// Appends a commit and wakes every waiting watcher. Called only by the committer,
    /// in revision order.
    pub(crate) fn publish(&self, batch: CommitBatch) {
        if batch.events.is_empty() {
            return;
        }
        {
            let mut ring = self.ring.write();
            debug_assert_eq!(batch.first, ring.end, "batches are published in revision order");
            ring.end = batch.end();
            ring.events += batch.events.len();
            ring.bytes += batch.size_bytes;
            ring.batches.push_back(Arc::new(batch));
            while ring.batches.len() > 1 && (ring.events > self.limits.events || ring.bytes > self.limits.bytes) {
                if let Some(old) = ring.batches.pop_front() {
                    ring.events -= old.events.len();
                    ring.bytes -= old.size_bytes;
                    ring.first = old.end();
                }
            }
        }
        self.signal.notify(usize::MAX);
    }

    /// Finds the batch that holds revision `cursor`.
    pub(crate) fn lookup(&self, cursor: Revision) -> Lookup {
        let ring = self.ring.read();
        if cursor >= ring.end {
            return Lookup::CaughtUp;
        }
        if cursor < ring.first {
            return Lookup::Behind(ring.first);
        }
        Lookup::Found(Arc::clone(ring.batch_holding(cursor)))
    }

    /// The value `key` took at `revision`, if that change is still in the ring: the
    /// committer's previous value for an update, shared with the event that wrote it
    /// rather than read back from disk into a second copy.
    pub(crate) fn value_at(&self, revision: Revision, key: &[u8]) -> Option<Bytes> {
        let ring = self.ring.read();
        if revision < ring.first || revision >= ring.end {
            return None;
        }
        let batch = ring.batch_holding(revision);
        let event = batch.events.get((revision.get() - batch.first.get()) as usize)?;
        debug_assert_eq!(event.revision, revision, "a batch's events are contiguous");
        (event.key == key).then(|| event.value.clone()).flatten()
    }

    pub(crate) fn listen(&self) -> event_listener::EventListener {
        self.signal.listen()
    }

    /// Wakes every watcher (for progress notifications and shutdown).
    pub(crate) fn wake_all(&self) {
        self.signal.notify(usize::MAX);
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use bytes::Bytes;
    use keelson_engine::EventType;
    use std::time::SystemTime;

    fn batch(first: u64, count: u64) -> CommitBatch {
        let events = (first..first + count)
            .map(|rev| Event {
                revision: Revision(rev),
                kind: EventType::Added,
                key: Bytes::from(format!("/k/{rev}")),
                value: Some(Bytes::from_static(b"v")),
                prev_value: None,
                create_revision: Revision(rev),
                version: 1,
                memo: Default::default(),
            })
            .collect();
        CommitBatch::new(events, SystemTime::now())
    }

    #[test]
    fn lookup_finds_batches_and_evicts_oldest() {
        let hub = Hub::new(Revision(10), RingLimits { events: 5, bytes: usize::MAX });
        assert!(matches!(hub.lookup(Revision(11)), Lookup::CaughtUp));
        hub.publish(batch(11, 3));
        hub.publish(batch(14, 2));
        match hub.lookup(Revision(15)) {
            Lookup::Found(b) => assert_eq!(b.first, Revision(14)),
            _ => panic!("expected the second batch"),
        }
        hub.publish(batch(16, 2)); // 7 events > 5: the first batch goes
        assert!(matches!(hub.lookup(Revision(12)), Lookup::Behind(Revision(14))));
        assert!(matches!(hub.lookup(Revision(18)), Lookup::CaughtUp));
    }

    #[test]
    fn value_at_answers_only_for_the_key_changed_at_that_revision_while_it_is_held() {
        let hub = Hub::new(Revision(10), RingLimits { events: 4, bytes: usize::MAX });
        hub.publish(batch(11, 2));
        hub.publish(batch(13, 2));
        assert_eq!(hub.value_at(Revision(14), b"/k/14"), Some(Bytes::from_static(b"v")));
        assert_eq!(hub.value_at(Revision(12), b"/k/12"), Some(Bytes::from_static(b"v")));
        assert_eq!(hub.value_at(Revision(14), b"/k/13"), None, "another key changed there");
        assert_eq!(hub.value_at(Revision(15), b"/k/15"), None, "not published yet");
        assert_eq!(hub.value_at(Revision(10), b"/k/10"), None, "before the ring began");
        hub.publish(batch(15, 2)); // 6 events > 4: the first batch goes
        assert_eq!(hub.value_at(Revision(12), b"/k/12"), None, "evicted");
        assert_eq!(hub.value_at(Revision(16), b"/k/16"), Some(Bytes::from_static(b"v")));
    }
}
