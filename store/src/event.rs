//! Committed changes as watchers see them.
//!
//! One commit (one WAL sync) produces one [`CommitBatch`] of consecutive revisions. The
//! batch is shared by `Arc` with every watcher; a watcher never copies an event, it
//! hands out [`EventBatch`] views that filter by its prefix as they are iterated.

use bytes::Bytes;
use keelson_engine::{EventType, Revision};
use std::sync::Arc;
use std::time::SystemTime;

/// One committed change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub revision: Revision,
    /// `Added`, `Modified` or `Deleted`.
    pub kind: EventType,
    pub key: Bytes,
    /// The object after the change; `None` for `Deleted`.
    pub value: Option<Bytes>,
    /// The object before the change; for `Deleted`, the last state of the object.
    pub prev_value: Option<Bytes>,
    pub create_revision: Revision,
    /// Changes since creation, 1 after create.
    pub version: u64,
    /// Where the consumer keeps what it derives from this event once for all its
    /// watchers (the API server: the encoded frame). Not part of the event's identity.
    pub memo: Memo,
}

/// A write-once slot for data derived from an event, shared by every watcher that sees
/// the event (events are shared by `Arc`, so the first watcher computes, the rest reuse).
#[derive(Clone, Default)]
pub struct Memo(std::sync::OnceLock<Arc<dyn std::any::Any + Send + Sync>>);

impl Memo {
    /// The memoized value, computed by `init` on first use; `None` if the slot holds a
    /// value of another type (one consumer per slot is the contract).
    pub fn get_or_init<T: Send + Sync + 'static>(&self, init: impl FnOnce() -> T) -> Option<Arc<T>> {
        self.0.get_or_init(|| Arc::new(init())).clone().downcast::<T>().ok()
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "Memo(set)" } else { "Memo(empty)" })
    }
}

impl PartialEq for Memo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Memo {}

impl Event {
    /// The object this event is about: the new state, or for a delete the last one.
    pub fn object(&self) -> Option<&Bytes> {
        self.value.as_ref().or(self.prev_value.as_ref())
    }

    fn size_bytes(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, Bytes::len) + self.prev_value.as_ref().map_or(0, Bytes::len) + 64
    }
}

/// The events of one commit, revisions `first..first + events.len()`.
#[derive(Debug)]
pub struct CommitBatch {
    pub first: Revision,
    pub events: Vec<Event>,
    /// When the commit was acknowledged (wall clock: lag is measured across processes).
    pub committed_at: SystemTime,
    pub(crate) size_bytes: usize,
}

impl CommitBatch {
    pub fn new(events: Vec<Event>, committed_at: SystemTime) -> CommitBatch {
        let first = events.first().map_or(Revision::ZERO, |e| e.revision);
        let size_bytes = events.iter().map(Event::size_bytes).sum();
        CommitBatch { first, events, committed_at, size_bytes }
    }

    /// The revision after this batch's last.
    pub fn end(&self) -> Revision {
        Revision(self.first.get() + self.events.len() as u64)
    }
}

/// A watcher's view of part of a shared batch: the events from `start` that match
/// `prefix`. Iterating allocates nothing.
#[derive(Clone, Debug)]
pub struct EventBatch {
    pub(crate) batch: Arc<CommitBatch>,
    pub(crate) start: usize,
    pub(crate) prefix: Bytes,
}

impl EventBatch {
    pub fn iter(&self) -> impl Iterator<Item = &Event> + '_ {
        self.batch.events[self.start..].iter().filter(|e| e.key.starts_with(&self.prefix))
    }

    pub fn committed_at(&self) -> SystemTime {
        self.batch.committed_at
    }

    /// The last revision this view covers (matching or not).
    pub fn last_revision(&self) -> Revision {
        Revision(self.batch.end().get() - 1)
    }
}

/// What a watcher receives.
#[derive(Clone, Debug)]
pub enum WatchItem {
    /// One or more events, in revision order.
    Events(EventBatch),
    /// No change under the prefix, but everything up to this revision has been seen.
    Progress(Revision),
}
