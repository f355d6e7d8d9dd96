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
}

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
