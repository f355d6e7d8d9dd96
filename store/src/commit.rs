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
use crate::index::{KeyIndex, KeyMeta};
use crate::meta;
use crate::seal::Sealer;
use bytes::{Bytes, BytesMut};
use keelson_engine::{EventType, Revision};
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
    /// Drops history at and before the revision (log entries and tombstones). The
    /// outcome's `revision` is the compacted revision; it changes no key.
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
    /// Batches by how long their write (with its WAL sync) took: one slot per bound in
    /// [`COMMIT_LATENCY_BOUNDS_US`], plus one for slower.
    pub latency_buckets: [AtomicU64; COMMIT_LATENCY_BOUNDS_US.len() + 1],
    pub latency_sum_us: AtomicU64,
}

/// Upper bounds of the commit-latency histogram, in microseconds.
pub const COMMIT_LATENCY_BOUNDS_US: [u64; 13] =
    [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000];

impl CommitStats {
    fn record_latency(&self, elapsed: std::time::Duration) {
        let micros = elapsed.as_micros() as u64;
        let slot = COMMIT_LATENCY_BOUNDS_US.iter().position(|b| micros <= *b).unwrap_or(COMMIT_LATENCY_BOUNDS_US.len());
        self.latency_buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(micros, Ordering::Relaxed);
    }
}

pub(crate) struct Committer {
    pub backend: Arc<dyn Backend>,
    pub hub: Arc<Hub>,
    pub current: Arc<AtomicU64>,
    pub compacted: Arc<AtomicU64>,
    pub stats: Arc<CommitStats>,
    pub durable: bool,
    pub max_batch: usize,
    pub index: KeyIndex,
    /// Seals some keys' values on their way to disk (events keep them plain).
    pub sealer: Option<Arc<Sealer>>,
}

/// Per-batch scratch state, reused between batches to avoid reallocating.
#[derive(Default)]
struct Scratch {
    /// Index entries this batch replaced, to undo them if the write fails.
    undo: Vec<(Bytes, Option<KeyMeta>)>,
    write: WriteBatch,
    /// The batch's events so far; event `i` has revision `start + 1 + i`.
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
    /// Runs until every sender is gone or a `Stop` arrives.
    pub fn run(mut self, requests: flume::Receiver<Request>) {
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
                        // Commit what came before, so the compaction sees it applied.
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

    /// The sealer, if `key`'s values are sealed.
    fn sealing(&self, key: &[u8]) -> Option<&Sealer> {
        self.sealer.as_deref().filter(|sealer| sealer.applies(key))
    }

    /// The full previous record of a live key: its value comes from this batch's own
    /// events when the key changed earlier in the batch, else from the watch ring when
    /// the change is still there (the same bytes the event holds, so a recent object's
    /// update keeps one copy of its old value in memory, not two), else from the
    /// `objects` table.
    fn live_record(&self, key: &[u8], meta: KeyMeta, start: Revision, scratch: &Scratch) -> Result<Record, StoreError> {
        let value = if meta.mod_revision > start {
            let position = (meta.mod_revision.get() - start.get() - 1) as usize;
            scratch.events.get(position).and_then(|e| e.value.clone())
        } else if let Some(value) = self.hub.value_at(meta.mod_revision, key) {
            Some(value)
        } else {
            match self.backend.get(Table::Objects, key)? {
                Some(mut bytes) => match (codec::decode_record(&mut bytes)?.value, self.sealing(key)) {
                    (Some(value), Some(sealer)) => Some(sealer.open(key, value)?),
                    (value, _) => value,
                },
                None => None,
            }
        };
        let value = value.ok_or(codec::Corrupt { what: "object missing for a live index entry" })?;
        Ok(Record {
            create_revision: meta.create_revision,
            mod_revision: meta.mod_revision,
            version: meta.version,
            value: Some(value),
        })
    }

    /// Checks one mutation against the current state and, if it holds, stages it.
    fn stage(
        &mut self,
        mutation: &Mutation,
        revision: Revision,
        start: Revision,
        scratch: &mut Scratch,
        committed_at_ms: u64,
    ) -> Result<WriteOutcome, StoreError> {
        let (key, new_value, expected, creating) = match mutation {
            Mutation::Create { key, value } => (key, Some(value), None, true),
            Mutation::Update { key, value, expected } => (key, Some(value), *expected, false),
            Mutation::Delete { key, expected } => (key, None, *expected, false),
            Mutation::Compact { .. } | Mutation::Stop => unreachable!("handled by the run loop"),
        };
        let current = self.index.get(key);
        let live = current.filter(KeyMeta::is_live);
        let (record, prev) = match (creating, live) {
            (true, Some(_)) => return Err(StoreError::AlreadyExists { key: key_text(key) }),
            (true, None) => {
                let record =
                    Record { create_revision: revision, mod_revision: revision, version: 1, value: new_value.cloned() };
                // A tombstone is history (for reads at older revisions), not an object.
                let tombstone = current.map(|m| Record {
                    create_revision: m.create_revision,
                    mod_revision: m.mod_revision,
                    version: m.version,
                    value: None,
                });
                (record, tombstone)
            }
            (false, None) => return Err(StoreError::NotFound { key: key_text(key) }),
            (false, Some(meta)) => {
                if let Some(expected) = expected {
                    if expected != meta.mod_revision {
                        return Err(StoreError::Conflict { key: key_text(key), expected, found: meta.mod_revision });
                    }
                }
                let record = Record {
                    create_revision: meta.create_revision,
                    mod_revision: revision,
                    version: meta.version + 1,
                    value: new_value.cloned(),
                };
                (record, Some(self.live_record(key, meta, start, scratch)?))
            }
        };
        let kind = match (creating, new_value) {
            (true, _) => EventType::Added,
            (false, Some(_)) => EventType::Modified,
            (false, None) => EventType::Deleted,
        };
        let entry = LogEntry { key: key.clone(), record, prev, committed_at_ms };
        // What goes to disk: the same, with sealed values where the key is sealed.
        let sealed = self.sealing(key).map(|sealer| {
            let seal = |record: &Record| Record {
                value: record.value.as_ref().map(|value| sealer.seal(key, value)),
                ..record.clone()
            };
            LogEntry {
                key: key.clone(),
                record: seal(&entry.record),
                prev: entry.prev.as_ref().map(seal),
                committed_at_ms,
            }
        });
        let stored = sealed.as_ref().unwrap_or(&entry);
        // One allocation holds both encodings.
        let mut encoded = BytesMut::with_capacity(codec::record_len(&stored.record) + codec::log_entry_len(stored));
        codec::encode_record(&stored.record, &mut encoded);
        scratch.write.put(Table::Objects, key.clone(), encoded.split().freeze());
        codec::encode_log_entry(stored, &mut encoded);
        scratch.write.put(Table::Log, Bytes::copy_from_slice(&revision.to_bytes()), encoded.freeze());
        if entry.record.is_tombstone() {
            scratch.write.put(Table::Tombstones, Bytes::copy_from_slice(&revision.to_bytes()), key.clone());
        }
        let replaced = self.index.set(key.clone(), KeyMeta::of(&entry.record));
        scratch.undo.push((key.clone(), replaced));
        let prev_live = entry.prev.filter(|p| !p.is_tombstone());
        scratch.events.push(Event {
            revision,
            kind,
            key: entry.key,
            value: entry.record.value.clone(),
            prev_value: prev_live.as_ref().and_then(|r| r.value.clone()),
            create_revision: entry.record.create_revision,
            version: entry.record.version,
            memo: Default::default(),
        });
        Ok(WriteOutcome { revision, record: entry.record, prev: prev_live })
    }

    fn commit(&mut self, batch: &mut Vec<Request>, scratch: &mut Scratch) {
        if batch.is_empty() {
            return;
        }
        let start = Revision(self.current.load(Ordering::Acquire));
        let mut next = start.next();
        let committed_at_ms = now_ms();
        for request in batch.iter() {
            let outcome = self.stage(&request.mutation, next, start, scratch, committed_at_ms);
            if outcome.is_ok() {
                next = next.next();
            }
            scratch.outcomes.push(outcome);
        }
        let last = Revision(next.get() - 1);
        if last > start {
            scratch.write.put(Table::Meta, meta::CURRENT, Bytes::copy_from_slice(&last.get().to_le_bytes()));
            let began = std::time::Instant::now();
            let written = self.backend.write(&scratch.write, self.durable);
            self.stats.record_latency(began.elapsed());
            if let Err(error) = written {
                tracing::error!(%error, "commit failed; failing the whole batch");
                for (key, previous) in scratch.undo.drain(..).rev() {
                    self.index.restore(&key, previous);
                }
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
                let events = std::mem::replace(&mut scratch.events, Vec::with_capacity(batch.len()));
                self.hub.publish(CommitBatch::new(events, SystemTime::now()));
            }
        }
        for (request, outcome) in batch.drain(..).zip(scratch.outcomes.drain(..)) {
            // A writer that gave up waiting is not an error: its write stands.
            let _ = request.ack.send(outcome);
        }
        scratch.undo.clear();
        scratch.write.clear();
        scratch.events.clear();
    }

    /// Drops log entries and tombstones at or before `revision`.
    fn compact(&mut self, revision: Revision) -> Result<WriteOutcome, StoreError> {
        let current = Revision(self.current.load(Ordering::Acquire));
        if revision > current {
            return Err(StoreError::FutureRevision { requested: revision, current });
        }
        let already = Revision(self.compacted.load(Ordering::Acquire));
        // A compaction changes no key: its outcome carries the compacted revision only.
        let outcome = WriteOutcome {
            revision,
            record: Record { create_revision: Revision::ZERO, mod_revision: revision, version: 0, value: None },
            prev: None,
        };
        if revision <= already {
            return Ok(outcome);
        }
        let end = Bytes::copy_from_slice(&revision.next().to_bytes());
        let start = Bytes::copy_from_slice(&Revision::ZERO.to_bytes());
        let mut write = WriteBatch::default();
        let mut doomed: Vec<(Revision, Bytes)> = Vec::new();
        self.backend.snapshot().scan(Table::Tombstones, &start, Some(&end), &mut |rev, key| {
            if let Some(rev) = Revision::from_bytes(rev) {
                doomed.push((rev, Bytes::copy_from_slice(key)));
            }
            true
        })?;
        let mut dropped = Vec::new();
        for (rev, key) in doomed {
            // Drop the object row only if it is still this tombstone (not re-created).
            if let Some(meta) = self.index.drop_tombstone(&key, rev) {
                write.delete(Table::Objects, key.clone());
                dropped.push((key, meta));
            }
        }
        write.delete_range(Table::Tombstones, start.clone(), end.clone());
        write.delete_range(Table::Log, start, end);
        write.put(Table::Meta, meta::COMPACTED, Bytes::copy_from_slice(&revision.get().to_le_bytes()));
        if let Err(error) = self.backend.write(&write, self.durable) {
            for (key, meta) in dropped {
                self.index.restore(&key, Some(meta));
            }
            return Err(error.into());
        }
        self.compacted.store(revision.get(), Ordering::Release);
        Ok(outcome)
    }
}
