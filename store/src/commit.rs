//! The committer: the single owner of the write path.
//!
//! Writers hand [`Request`]s over a bounded channel. The committer drains whatever is
//! queued (up to `max_batch`), checks each mutation against the current state (with an
//! overlay, so two mutations of one key in a batch see each other), assigns consecutive
//! revisions, applies the whole batch as one backend write with one WAL sync, then
//! publishes the events to the watch hub and acknowledges every writer. Nothing is
//! acknowledged before its sync; a failed write fails the whole batch and consumes no
//! revision. The more writers wait, the bigger the batch: one sync serves them all.

use crate::backend::{Backend, Table, WriteBatch};
use crate::codec::{self, LogEntry, Record};
use crate::error::{batch_failure, StoreError};
use crate::event::{CommitBatch, Event};
use crate::hub::Hub;
use crate::meta;
use bytes::{Bytes, BytesMut};
use keelson_engine::{EventType, Revision};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A change a writer asks for.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// Fails with `AlreadyExists` if the key is live.
    Create { key: Bytes, value: Bytes },
    /// Fails with `NotFound` if the key is not live, `Conflict` if `expected` is given
    /// and differs from the key's mod revision.
    Update { key: Bytes, value: Bytes, expected: Option<Revision> },
    /// As `Update`, leaving a tombstone until compaction.
    Delete { key: Bytes, expected: Option<Revision> },
    /// Drops history at and before the revision (log entries and tombstones).
    Compact { revision: Revision },
    /// Commits everything queued before it, then stops the committer.
    Stop,
}

/// The result of a successful mutation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    pub revision: Revision,
    /// The key's state after the write (a tombstone for a delete).
    pub record: Record,
    /// The key's state before the write (`None` after a create of a new key).
    pub prev: Option<Record>,
}

pub(crate) type Ack = oneshot::Sender<Result<WriteOutcome, StoreError>>;

pub(crate) struct Request {
    pub mutation: Mutation,
    pub ack: Ack,
}

/// Counters the committer keeps; read by reports and metrics.
#[derive(Default)]
pub struct CommitStats {
    pub batches: AtomicU64,
    pub writes: AtomicU64,
    pub syncs: AtomicU64,
}

pub(crate) struct Committer {
    pub backend: Arc<dyn Backend>,
    pub hub: Arc<Hub>,
    pub current: Arc<AtomicU64>,
    pub compacted: Arc<AtomicU64>,
    pub stats: Arc<CommitStats>,
    pub durable: bool,
    pub max_batch: usize,
}

/// Per-batch scratch state, reused between batches to avoid reallocating.
#[derive(Default)]
struct Scratch {
    overlay: HashMap<Bytes, Record>,
    write: WriteBatch,
    events: Vec<Event>,
    outcomes: Vec<Result<WriteOutcome, StoreError>>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn key_text(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

impl Committer {
    /// Runs until every sender is gone.
    pub fn run(self, requests: flume::Receiver<Request>) {
        let mut queued: Vec<Request> = Vec::with_capacity(self.max_batch);
        let mut batch: Vec<Request> = Vec::with_capacity(self.max_batch);
        let mut scratch = Scratch::default();
        while let Ok(first) = requests.recv() {
            queued.push(first);
            while queued.len() < self.max_batch {
                match requests.try_recv() {
                    Ok(request) => queued.push(request),
                    Err(_) => break,
                }
            }
            let mut stopping = false;
            for request in queued.drain(..) {
                match request.mutation {
                    Mutation::Compact { revision } => {
                        // Commit what came before, so the compaction's scan sees it applied.
                        self.commit(&mut batch, &mut scratch);
                        let _ = request.ack.send(self.compact(revision));
                    }
                    Mutation::Stop => stopping = true,
                    _ if stopping => {
                        let _ = request.ack.send(Err(StoreError::Closed));
                    }
                    _ => batch.push(request),
                }
            }
            self.commit(&mut batch, &mut scratch);
            if stopping {
                return;
            }
        }
    }

    fn current_record(&self, overlay: &HashMap<Bytes, Record>, key: &Bytes) -> Result<Option<Record>, StoreError> {
        if let Some(record) = overlay.get(key) {
            return Ok(Some(record.clone()));
        }
        match self.backend.get(Table::Objects, key)? {
            Some(mut bytes) => Ok(Some(codec::decode_record(&mut bytes)?)),
            None => Ok(None),
        }
    }

    /// Checks one mutation against the current state and, if it holds, stages it.
    fn stage(
        &self,
        mutation: &Mutation,
        revision: Revision,
        scratch: &mut Scratch,
        committed_at_ms: u64,
    ) -> Result<WriteOutcome, StoreError> {
        let (key, new_value, expected, creating) = match mutation {
            Mutation::Create { key, value } => (key, Some(value), None, true),
            Mutation::Update { key, value, expected } => (key, Some(value), *expected, false),
            Mutation::Delete { key, expected } => (key, None, *expected, false),
            Mutation::Compact { .. } | Mutation::Stop => unreachable!("handled by the run loop"),
        };
        let prev = self.current_record(&scratch.overlay, key)?;
        let live = prev.as_ref().filter(|r| !r.is_tombstone());
        let record = match (creating, live) {
            (true, Some(_)) => return Err(StoreError::AlreadyExists { key: key_text(key) }),
            (true, None) => {
                Record { create_revision: revision, mod_revision: revision, version: 1, value: new_value.cloned() }
            }
            (false, None) => return Err(StoreError::NotFound { key: key_text(key) }),
            (false, Some(current)) => {
                if let Some(expected) = expected {
                    if expected != current.mod_revision {
                        return Err(StoreError::Conflict { key: key_text(key), expected, found: current.mod_revision });
                    }
                }
                Record {
                    create_revision: current.create_revision,
                    mod_revision: revision,
                    version: current.version + 1,
                    value: new_value.cloned(),
                }
            }
        };
        let kind = match (creating, new_value) {
            (true, _) => EventType::Added,
            (false, Some(_)) => EventType::Modified,
            (false, None) => EventType::Deleted,
        };
        let mut encoded = BytesMut::new();
        codec::encode_record(&record, &mut encoded);
        scratch.write.put(Table::Objects, key.clone(), encoded.split().freeze());
        if record.is_tombstone() {
            scratch.write.put(Table::Tombstones, Bytes::copy_from_slice(&revision.to_bytes()), key.clone());
        }
        let entry = LogEntry { key: key.clone(), record: record.clone(), prev: prev.clone(), committed_at_ms };
        codec::encode_log_entry(&entry, &mut encoded);
        scratch.write.put(Table::Log, Bytes::copy_from_slice(&revision.to_bytes()), encoded.freeze());
        scratch.overlay.insert(key.clone(), record.clone());
        scratch.events.push(Event {
            revision,
            kind,
            key: key.clone(),
            value: record.value.clone(),
            prev_value: live.and_then(|r| r.value.clone()),
            create_revision: record.create_revision,
            version: record.version,
        });
        Ok(WriteOutcome { revision, record, prev: live.cloned() })
    }

    fn commit(&self, batch: &mut Vec<Request>, scratch: &mut Scratch) {
        let start = Revision(self.current.load(Ordering::Acquire));
        let mut next = start.next();
        let committed_at_ms = now_ms();
        for request in batch.iter() {
            let outcome = self.stage(&request.mutation, next, scratch, committed_at_ms);
            if outcome.is_ok() {
                next = next.next();
            }
            scratch.outcomes.push(outcome);
        }
        let last = Revision(next.get() - 1);
        if last > start {
            scratch.write.put(Table::Meta, meta::CURRENT, Bytes::copy_from_slice(&last.get().to_le_bytes()));
            if let Err(error) = self.backend.write(&scratch.write, self.durable) {
                tracing::error!(%error, "commit failed; failing the whole batch");
                for outcome in scratch.outcomes.iter_mut().filter(|o| o.is_ok()) {
                    *outcome = Err(batch_failure(&error));
                }
                scratch.events.clear();
            } else {
                if self.durable {
                    self.stats.syncs.fetch_add(1, Ordering::Relaxed);
                }
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                self.stats.writes.fetch_add(scratch.events.len() as u64, Ordering::Relaxed);
                self.current.store(last.get(), Ordering::Release);
                self.hub.publish(CommitBatch::new(std::mem::take(&mut scratch.events), SystemTime::now()));
            }
        }
        for (request, outcome) in batch.drain(..).zip(scratch.outcomes.drain(..)) {
            // A writer that gave up waiting is not an error: its write stands.
            let _ = request.ack.send(outcome);
        }
        scratch.overlay.clear();
        scratch.write.clear();
        scratch.events.clear();
    }

    /// Drops log entries and tombstones at or before `revision`.
    fn compact(&self, revision: Revision) -> Result<WriteOutcome, StoreError> {
        let current = Revision(self.current.load(Ordering::Acquire));
        if revision > current {
            return Err(StoreError::FutureRevision { requested: revision, current });
        }
        let already = Revision(self.compacted.load(Ordering::Acquire));
        let outcome = WriteOutcome {
            revision: current,
            record: Record { create_revision: Revision::ZERO, mod_revision: revision, version: 0, value: None },
            prev: None,
        };
        if revision <= already {
            return Ok(outcome);
        }
        let end = Bytes::copy_from_slice(&revision.next().to_bytes());
        let start = Bytes::copy_from_slice(&Revision::ZERO.to_bytes());
        let mut write = WriteBatch::default();
        {
            let snapshot = self.backend.snapshot();
            let mut doomed: Vec<(Bytes, Bytes)> = Vec::new();
            snapshot.scan(Table::Tombstones, &start, Some(&end), &mut |rev, key| {
                doomed.push((Bytes::copy_from_slice(rev), Bytes::copy_from_slice(key)));
                true
            })?;
            for (rev, key) in doomed {
                // Drop the object row only if it is still this tombstone (not re-created).
                if let Some(mut bytes) = snapshot.get(Table::Objects, &key)? {
                    let record = codec::decode_record(&mut bytes)?;
                    if record.is_tombstone() && record.mod_revision.to_bytes()[..] == rev[..] {
                        write.delete(Table::Objects, key);
                    }
                }
            }
        }
        write.delete_range(Table::Tombstones, start.clone(), end.clone());
        write.delete_range(Table::Log, start, end);
        write.put(Table::Meta, meta::COMPACTED, Bytes::copy_from_slice(&revision.get().to_le_bytes()));
        self.backend.write(&write, self.durable)?;
        self.compacted.store(revision.get(), Ordering::Release);
        Ok(outcome)
    }
}
