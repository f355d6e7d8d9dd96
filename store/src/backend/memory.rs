//! An in-memory backend for unit tests: the same tables, atomic batches and snapshots,
//! no durability. Snapshots share the maps copy-on-write, so taking one is O(1) and the
//! next write after it pays for the copy.

use super::{Backend, BackendError, Snapshot, Table, Visitor, WriteBatch, WriteOp};
use bytes::Bytes;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

type Tables = [BTreeMap<Bytes, Bytes>; 4];

#[derive(Default)]
pub struct MemoryBackend {
    tables: RwLock<Arc<Tables>>,
}

impl MemoryBackend {
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }
}

impl Backend for MemoryBackend {
    fn write(&self, batch: &WriteBatch, _sync: bool) -> Result<(), BackendError> {
        let mut guard = self.tables.write();
        let tables = Arc::make_mut(&mut guard);
        for op in &batch.ops {
            match op {
                WriteOp::Put { table, key, value } => {
                    tables[table.index()].insert(key.clone(), value.clone());
                }
                WriteOp::Delete { table, key } => {
                    tables[table.index()].remove(key);
                }
                WriteOp::DeleteRange { table, start, end } => {
                    let map = &mut tables[table.index()];
                    let doomed: Vec<Bytes> =
                        map.range::<Bytes, _>(start.clone()..end.clone()).map(|(k, _)| k.clone()).collect();
                    for key in doomed {
                        map.remove(&key);
                    }
                }
            }
        }
        Ok(())
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Bytes>, BackendError> {
        Ok(self.tables.read()[table.index()].get(key).cloned())
    }

    fn snapshot(&self) -> Box<dyn Snapshot + '_> {
        Box::new(MemorySnapshot { tables: Arc::clone(&self.tables.read()) })
    }

    fn checkpoint(&self, _dir: &Path) -> Result<(), BackendError> {
        Err(BackendError::Unsupported("checkpoint", "memory"))
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

struct MemorySnapshot {
    tables: Arc<Tables>,
}

impl Snapshot for MemorySnapshot {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Bytes>, BackendError> {
        Ok(self.tables[table.index()].get(key).cloned())
    }

    fn scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut Visitor<'_>,
    ) -> Result<(), BackendError> {
        let lower = Bound::Included(Bytes::copy_from_slice(start));
        let upper = end.map_or(Bound::Unbounded, |end| Bound::Excluded(Bytes::copy_from_slice(end)));
        for (key, value) in self.tables[table.index()].range((lower, upper)) {
            if !visit(key, value) {
                break;
            }
        }
        Ok(())
    }
}
