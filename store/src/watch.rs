//! A watcher: a cursor over history, filtered by key prefix.
//!
//! A new watcher replays committed history from the log on disk (`watch(prefix, after)`
//! delivers every change with a revision greater than `after`), then follows the hub's
//! in-memory ring. Once it has read from the ring it is *live*: if it later falls off
//! the ring's front it gets `WatcherLagged` (410 at the API) rather than an unbounded
//! disk replay. Delivery is in revision order, without gaps and without copies.

use crate::backend::{Backend, Table};
use crate::codec::{self, LoggedChange};
use crate::error::StoreError;
use crate::event::{CommitBatch, Event, EventBatch, WatchItem};
use crate::hub::{Hub, Lookup};
use crate::read;
use crate::seal::Sealer;
use bytes::Bytes;
use event_listener::Listener;
use keelson_engine::{EventType, Revision};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How many log entries one disk read replays at most.
const REPLAY_CHUNK: usize = 1024;

pub(crate) struct WatchShared {
    pub backend: Arc<dyn Backend>,
    pub hub: Arc<Hub>,
    pub compacted: Arc<AtomicU64>,
    pub progress_interval: Duration,
    /// Opens sealed values replayed from the log.
    pub sealer: Option<Arc<Sealer>>,
}

pub struct Watcher {
    shared: Arc<WatchShared>,
    prefix: Bytes,
    /// The next revision this watcher has not looked at.
    cursor: Revision,
    live: bool,
    last_delivery: Instant,
}

impl Watcher {
    pub(crate) fn new(shared: Arc<WatchShared>, prefix: Bytes, after: Revision) -> Result<Watcher, StoreError> {
        let compacted = Revision(shared.compacted.load(Ordering::Acquire));
        if after < compacted {
            return Err(StoreError::Compacted { requested: after, compacted });
        }
        Ok(Watcher { shared, prefix, cursor: after.next(), live: false, last_delivery: Instant::now() })
    }

    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// Every revision before this one has been delivered or filtered out.
    pub fn seen_through(&self) -> Revision {
        Revision(self.cursor.get() - 1)
    }

    /// The next item if one is ready, without waiting.
    pub fn try_next(&mut self) -> Result<Option<WatchItem>, StoreError> {
        loop {
            match self.shared.hub.lookup(self.cursor) {
                Lookup::CaughtUp => return Ok(self.progress_if_due()),
                Lookup::Found(batch) => {
                    self.live = true;
                    if let Some(item) = self.view(batch) {
                        return Ok(Some(item));
                    }
                }
                Lookup::Behind(oldest) => {
                    if self.live {
                        return Err(StoreError::WatcherLagged { cursor: self.cursor, oldest });
                    }
                    let batch = self.replay(oldest)?;
                    if let Some(item) = self.view(Arc::new(batch)) {
                        return Ok(Some(item));
                    }
                }
            }
        }
    }

    /// Takes the part of `batch` from the cursor on; `None` if none of it matches.
    fn view(&mut self, batch: Arc<CommitBatch>) -> Option<WatchItem> {
        let start = (self.cursor.get() - batch.first.get()) as usize;
        self.cursor = batch.end();
        let matches = batch.events[start..].iter().any(|e| e.key.starts_with(&self.prefix));
        matches.then(|| {
            self.last_delivery = Instant::now();
            WatchItem::Events(EventBatch { batch, start, prefix: self.prefix.clone() })
        })
    }

    fn progress_if_due(&mut self) -> Option<WatchItem> {
        if self.last_delivery.elapsed() < self.shared.progress_interval {
            return None;
        }
        self.last_delivery = Instant::now();
        Some(WatchItem::Progress(self.seen_through()))
    }

    /// Reads up to `REPLAY_CHUNK` entries from the log, from the cursor up to `until`.
    fn replay(&mut self, until: Revision) -> Result<CommitBatch, StoreError> {
        let compacted = Revision(self.shared.compacted.load(Ordering::Acquire));
        if self.cursor <= compacted {
            return Err(StoreError::Compacted { requested: Revision(self.cursor.get() - 1), compacted });
        }
        let snapshot = self.shared.backend.snapshot();
        let mut changes = Vec::with_capacity(REPLAY_CHUNK.min((until.get() - self.cursor.get()) as usize));
        let mut failure = None;
        let end = until.to_bytes();
        snapshot.scan(
            Table::Log,
            &self.cursor.to_bytes(),
            Some(&end),
            &mut |_, value| match codec::decode_log_entry(Bytes::copy_from_slice(value)) {
                Ok(change) => {
                    changes.push(change);
                    changes.len() < REPLAY_CHUNK
                }
                Err(error) => {
                    failure = Some(error);
                    false
                }
            },
        )?;
        if let Some(error) = failure {
            return Err(error.into());
        }
        let values = read::change_values(&*snapshot, &changes)?;
        let committed_at_ms = changes.last().map_or(0, |c| c.committed_at_ms);
        let sealer = self.shared.sealer.as_deref();
        let events = changes
            .into_iter()
            .zip(values)
            .map(|(change, value)| event_from_log(change, value, sealer))
            .collect::<Result<Vec<_>, _>>()?;
        // History on disk is contiguous above the compacted revision; a gap means the
        // range was compacted under us.
        if events.first().map(|e| e.revision) != Some(self.cursor) {
            let compacted = Revision(self.shared.compacted.load(Ordering::Acquire));
            return Err(StoreError::Compacted { requested: Revision(self.cursor.get() - 1), compacted });
        }
        let committed_at = UNIX_EPOCH + Duration::from_millis(committed_at_ms);
        Ok(CommitBatch::new(events, committed_at.min(SystemTime::now())))
    }

    /// Waits for the next item, blocking the thread for at most `timeout`.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<WatchItem>, StoreError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(item) = self.try_next()? {
                return Ok(Some(item));
            }
            let listener = self.shared.hub.listen();
            if let Some(item) = self.try_next()? {
                return Ok(Some(item));
            }
            if self.shared.hub.is_closed() {
                return Err(StoreError::Closed);
            }
            let progress_due = self.last_delivery + self.shared.progress_interval;
            let wake = deadline.min(progress_due);
            if Instant::now() >= deadline {
                return Ok(None);
            }
            listener.wait_deadline(wake);
        }
    }

    /// Waits for the next item (async; runtime-agnostic). Progress notifications arrive
    /// when the store's ticker wakes idle watchers.
    pub async fn next(&mut self) -> Result<WatchItem, StoreError> {
        loop {
            if let Some(item) = self.try_next()? {
                return Ok(item);
            }
            let listener = self.shared.hub.listen();
            if let Some(item) = self.try_next()? {
                return Ok(item);
            }
            if self.shared.hub.is_closed() {
                return Err(StoreError::Closed);
            }
            listener.await;
        }
    }
}

/// A change replayed from the log, with its new value (`None` for a delete), as a watch
/// event; its values are opened if the key is sealed.
fn event_from_log(entry: LoggedChange, value: Option<Bytes>, sealer: Option<&Sealer>) -> Result<Event, StoreError> {
    let live_prev = entry.prev.filter(|p| !p.is_tombstone());
    let kind = match (&value, &live_prev) {
        (None, _) => EventType::Deleted,
        (Some(_), Some(_)) => EventType::Modified,
        (Some(_), None) => EventType::Added,
    };
    let key = entry.key;
    let open = |value: Option<Bytes>| match (value, sealer.filter(|s| s.applies(&key))) {
        (Some(value), Some(sealer)) => sealer.open(&key, value).map(Some),
        (value, _) => Ok(value),
    };
    Ok(Event {
        revision: entry.record.mod_revision,
        kind,
        value: open(value)?,
        prev_value: open(live_prev.and_then(|p| p.value))?,
        key,
        create_revision: entry.record.create_revision,
        version: entry.record.version,
        memo: Default::default(),
    })
}
