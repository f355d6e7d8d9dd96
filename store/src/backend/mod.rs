//! Storage behind a trait, in the style of TiKV's `engine_traits`: the registry logic
//! (revisions, preconditions, history) lives above it; a backend only stores bytes in
//! a few ordered tables, applies a batch atomically, and gives consistent snapshots.
//!
//! Architecture invariant: only `backend/rocks.rs` knows RocksDB.

mod memory;
mod rocks;

pub use memory::MemoryBackend;
pub use rocks::RocksBackend;

use bytes::Bytes;
use std::path::Path;

/// The ordered key spaces a backend keeps (column families in RocksDB).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Table {
    Objects,
    Log,
    Tombstones,
    Meta,
}

impl Table {
    pub const ALL: [Table; 4] = [Table::Objects, Table::Log, Table::Tombstones, Table::Meta];

    pub const fn name(self) -> &'static str {
        match self {
            Table::Objects => "objects",
            Table::Log => "log",
            Table::Tombstones => "tombstones",
            Table::Meta => "meta",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// One change inside an atomic batch.
#[derive(Clone, Debug)]
pub enum WriteOp {
    Put {
        table: Table,
        key: Bytes,
        value: Bytes,
    },
    Delete {
        table: Table,
        key: Bytes,
    },
    /// Removes every key in `[start, end)`.
    DeleteRange {
        table: Table,
        start: Bytes,
        end: Bytes,
    },
}

/// Changes applied all together or not at all.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    pub ops: Vec<WriteOp>,
}

impl WriteBatch {
    pub fn put(&mut self, table: Table, key: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.ops.push(WriteOp::Put { table, key: key.into(), value: value.into() });
    }

    pub fn delete(&mut self, table: Table, key: impl Into<Bytes>) {
        self.ops.push(WriteOp::Delete { table, key: key.into() });
    }

    pub fn delete_range(&mut self, table: Table, start: impl Into<Bytes>, end: impl Into<Bytes>) {
        self.ops.push(WriteOp::DeleteRange { table, start: start.into(), end: end.into() });
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn clear(&mut self) {
        self.ops.clear();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0} is not supported by the {1} backend")]
    Unsupported(&'static str, &'static str),
}

/// Visits `(key, value)` pairs in key order; returns `false` to stop.
pub type Visitor<'v> = dyn FnMut(&[u8], &[u8]) -> bool + 'v;

/// A consistent, read-only view of every table at one instant.
pub trait Snapshot {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Bytes>, BackendError>;

    /// Visits the keys in `[start, end)` (`end: None` = to the last key) in order.
    fn scan(&self, table: Table, start: &[u8], end: Option<&[u8]>, visit: &mut Visitor<'_>)
        -> Result<(), BackendError>;
}

/// A durable (or, for tests, in-memory) ordered key-value engine.
pub trait Backend: Send + Sync + 'static {
    /// Applies `batch` atomically. With `sync`, returns only after the write-ahead log
    /// is on stable storage: that is what makes an acknowledged write survive `kill -9`.
    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<(), BackendError>;

    /// The latest value of `key` (outside any snapshot; used by the single committer).
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Bytes>, BackendError>;

    fn snapshot(&self) -> Box<dyn Snapshot + '_>;

    /// Writes a consistent copy of the whole store to `dir`, which must not exist.
    fn checkpoint(&self, dir: &Path) -> Result<(), BackendError>;

    /// `"rocksdb"`, `"memory"`: for reports.
    fn name(&self) -> &'static str;
}
