//! The committer's in-memory key index: every key's revisions and version, as etcd's
//! `treeIndex` keeps them.
//!
//! The committer is the only writer, so it owns the index outright (no lock). With it, a
//! create decides "exists or not" without touching RocksDB, and a precondition is
//! checked in memory; only updates and deletes read the previous value, because the
//! log keeps it. Tombstones stay in the index until compaction drops them, as they stay
//! in the `objects` table. Memory: the key plus about 64 bytes per key.

use crate::backend::{Backend, Table};
use crate::codec;
use crate::error::StoreError;
use bytes::Bytes;
use keelson_engine::Revision;
use std::collections::HashMap;

/// What the index knows of a key: its record without the value.
pub(crate) use crate::codec::RecordHeader as KeyMeta;

#[derive(Default)]
pub(crate) struct KeyIndex {
    keys: HashMap<Bytes, KeyMeta>,
}

impl KeyIndex {
    /// Builds the index from the `objects` table.
    pub fn load(backend: &dyn Backend) -> Result<KeyIndex, StoreError> {
        let snapshot = backend.snapshot();
        let mut keys = HashMap::new();
        let mut failure = None;
        snapshot.scan(Table::Objects, b"", None, &mut |key, value| match codec::decode_record_header(value) {
            Ok(header) => {
                keys.insert(Bytes::copy_from_slice(key), header);
                true
            }
            Err(error) => {
                failure = Some(error);
                false
            }
        })?;
        match failure {
            Some(error) => Err(error.into()),
            None => Ok(KeyIndex { keys }),
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<KeyMeta> {
        self.keys.get(key).copied()
    }

    /// Sets a key's meta; returns what it replaced (for undo).
    pub fn set(&mut self, key: Bytes, meta: KeyMeta) -> Option<KeyMeta> {
        self.keys.insert(key, meta)
    }

    /// Restores a key to `previous` (undo of `set`).
    pub fn restore(&mut self, key: &Bytes, previous: Option<KeyMeta>) {
        match previous {
            Some(meta) => {
                self.keys.insert(key.clone(), meta);
            }
            None => {
                self.keys.remove(key);
            }
        }
    }

    /// Drops the tombstone left by the delete at `revision`, unless the key was
    /// re-created since; returns what was dropped (for undo).
    pub fn drop_tombstone(&mut self, key: &[u8], revision: Revision) -> Option<KeyMeta> {
        let meta = self.keys.get(key).copied()?;
        if !(meta.tombstone && meta.mod_revision == revision) {
            return None;
        }
        self.keys.remove(key);
        Some(meta)
    }
}
