//! Reads: the latest state, or the state at an older revision still in history.
//!
//! The `objects` table holds each key's newest record (or its tombstone). To read at an
//! older revision R, a record changed after R is walked back through the log: the log
//! entry at its mod revision holds the record before it, and so on until a record at or
//! before R is reached. Compaction only drops history at or before its revision, so
//! every entry such a walk needs exists for any R at or after the compacted revision.
//!
//! The same walk finds the value of a change replayed from the log, whose entry holds
//! only the state before it ([`change_values`]).

use crate::backend::{Snapshot, Table};
use crate::codec::{self, LoggedChange, Record};
use crate::error::StoreError;
use crate::meta;
use bytes::Bytes;
use keelson_engine::Revision;
use std::collections::HashMap;

/// Which revision to read at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadAt {
    /// The newest committed state.
    #[default]
    Latest,
    /// Exactly this revision (must not be compacted nor in the future).
    Revision(Revision),
}

/// A request for one page of keys under a prefix.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    pub at: ReadAt,
    /// At most this many items (0 = no limit).
    pub limit: usize,
    /// Resume after this key (from the previous page's `next_key`, exclusive).
    pub after_key: Option<Bytes>,
}

/// One page of a list, all at one revision.
#[derive(Clone, Debug, Default)]
pub struct ListPage {
    pub revision: Revision,
    pub items: Vec<(Bytes, Record)>,
    /// Set when more keys follow: pass it as `after_key` (and `revision` as `at`).
    pub next_key: Option<Bytes>,
}

pub(crate) fn read_u64(snapshot: &dyn Snapshot, key: &[u8]) -> Result<u64, StoreError> {
    Ok(snapshot.get(Table::Meta, key)?.and_then(|b| meta::decode_u64(&b)).unwrap_or(0))
}

/// Resolves `at` against a snapshot: the revision to read at.
fn resolve(snapshot: &dyn Snapshot, at: ReadAt) -> Result<(Revision, bool), StoreError> {
    let current = Revision(read_u64(snapshot, meta::CURRENT)?);
    match at {
        ReadAt::Latest => Ok((current, true)),
        ReadAt::Revision(requested) => {
            let compacted = Revision(read_u64(snapshot, meta::COMPACTED)?);
            if requested > current {
                return Err(StoreError::FutureRevision { requested, current });
            }
            if requested < compacted {
                return Err(StoreError::Compacted { requested, compacted });
            }
            Ok((requested, requested == current))
        }
    }
}

/// The live state of a key at `revision`, walking back from its newest record.
fn state_at(snapshot: &dyn Snapshot, newest: Record, revision: Revision) -> Result<Option<Record>, StoreError> {
    let mut record = newest;
    loop {
        if record.mod_revision <= revision {
            return Ok((!record.is_tombstone()).then_some(record));
        }
        let Some(bytes) = snapshot.get(Table::Log, &record.mod_revision.to_bytes())? else {
            return Err(codec::Corrupt { what: "history (missing log entry)" }.into());
        };
        match codec::decode_log_entry(bytes)?.prev {
            Some(prev) => record = prev,
            None => return Ok(None),
        }
    }
}

/// The new value of each change in `changes` (consecutive log entries, oldest first),
/// `None` for a delete. A change's value is the `prev` of the key's next change; for
/// each key's last change here, that is further on in the log or the key's newest
/// record, so one walk back from the newest per key finds it.
pub(crate) fn change_values(
    snapshot: &dyn Snapshot,
    changes: &[LoggedChange],
) -> Result<Vec<Option<Bytes>>, StoreError> {
    const WHAT: codec::Corrupt = codec::Corrupt { what: "history (a change's value)" };
    // Per key, the state before the next change seen so far (walking backwards).
    let mut before_next: HashMap<&[u8], Option<&Record>> = HashMap::new();
    let mut values = vec![None; changes.len()];
    for (slot, change) in values.iter_mut().zip(changes).rev() {
        let revision = change.record.mod_revision;
        if !change.record.tombstone {
            *slot = match (&change.value, before_next.get(change.key.as_ref())) {
                (Some(value), _) => Some(value.clone()),
                (None, Some(state)) => {
                    let state = state.filter(|s| s.mod_revision == revision).ok_or(WHAT)?;
                    Some(state.value.clone().ok_or(WHAT)?)
                }
                (None, None) => {
                    let newest = newest(snapshot, &change.key)?.ok_or(WHAT)?;
                    let state = state_at(snapshot, newest, revision)?.filter(|s| s.mod_revision == revision);
                    Some(state.and_then(|s| s.value).ok_or(WHAT)?)
                }
            };
        }
        before_next.insert(change.key.as_ref(), change.prev.as_ref());
    }
    Ok(values)
}

/// `key`'s newest record (or tombstone) in the `objects` table.
fn newest(snapshot: &dyn Snapshot, key: &[u8]) -> Result<Option<Record>, StoreError> {
    match snapshot.get(Table::Objects, key)? {
        Some(mut bytes) => Ok(Some(codec::decode_record(&mut bytes)?)),
        None => Ok(None),
    }
}

pub(crate) fn get(snapshot: &dyn Snapshot, key: &[u8], at: ReadAt) -> Result<(Revision, Option<Record>), StoreError> {
    let (revision, latest) = resolve(snapshot, at)?;
    let Some(record) = newest(snapshot, key)? else {
        return Ok((revision, None));
    };
    let state = if latest { (!record.is_tombstone()).then_some(record) } else { state_at(snapshot, record, revision)? };
    Ok((revision, state))
}

pub(crate) fn list(snapshot: &dyn Snapshot, prefix: &[u8], options: &ListOptions) -> Result<ListPage, StoreError> {
    let (revision, latest) = resolve(snapshot, options.at)?;
    let end = codec::prefix_end(prefix);
    let start: Vec<u8> = match &options.after_key {
        // The smallest key greater than `after`: `after` followed by a zero byte.
        Some(after) if after.as_ref() >= prefix => [after.as_ref(), &[0]].concat(),
        _ => prefix.to_vec(),
    };
    let mut page = ListPage { revision, ..ListPage::default() };
    let mut failure: Option<StoreError> = None;
    let limit = if options.limit == 0 { usize::MAX } else { options.limit };
    snapshot.scan(Table::Objects, &start, end.as_deref(), &mut |key, value| {
        let decoded =
            codec::decode_record(&mut Bytes::copy_from_slice(value)).map_err(StoreError::from).and_then(|record| {
                if latest {
                    Ok((!record.is_tombstone()).then_some(record))
                } else {
                    state_at(snapshot, record, revision)
                }
            });
        match decoded {
            Ok(Some(record)) => {
                if page.items.len() == limit {
                    // One more live item exists: the page is full and there is a next one.
                    page.next_key = page.items.last().map(|(k, _)| k.clone());
                    return false;
                }
                page.items.push((Bytes::copy_from_slice(key), record));
                true
            }
            Ok(None) => true,
            Err(error) => {
                failure = Some(error);
                false
            }
        }
    })?;
    match failure {
        Some(error) => Err(error),
        None => Ok(page),
    }
}

pub(crate) fn count(snapshot: &dyn Snapshot, prefix: &[u8]) -> Result<u64, StoreError> {
    let end = codec::prefix_end(prefix);
    let mut count = 0u64;
    let mut failure = None;
    snapshot.scan(
        Table::Objects,
        prefix,
        end.as_deref(),
        &mut |_, value| match codec::decode_record_header(value) {
            Ok(header) => {
                count += u64::from(header.is_live());
                true
            }
            Err(error) => {
                failure = Some(error);
                false
            }
        },
    )?;
    match failure {
        Some(error) => Err(error.into()),
        None => Ok(count),
    }
}
