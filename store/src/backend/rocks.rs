//! The RocksDB backend: one column family per [`Table`].

use super::{Backend, BackendError, Snapshot, Table, Visitor, WriteBatch, WriteOp};
use bytes::Bytes;
use rocksdb::{
    checkpoint::Checkpoint, BlockBasedOptions, ColumnFamily, DBCompressionType, Direction, IteratorMode, Options,
    ReadOptions, WriteOptions, DB,
};
use std::path::Path;

pub struct RocksBackend {
    db: DB,
}

fn db_options() -> Options {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.increase_parallelism(2);
    options.set_max_background_jobs(2);
    // Large memtables: the committer's batches land in memory and flush in big runs.
    options.set_write_buffer_size(64 << 20);
    options.set_max_write_buffer_number(4);
    options.set_compression_type(DBCompressionType::Lz4);
    // One writer thread commits; pipelining lets WAL and memtable work overlap.
    options.set_enable_pipelined_write(true);
    options
}

fn cf_options(table: Table) -> Options {
    let mut options = Options::default();
    options.set_compression_type(DBCompressionType::Lz4);
    if table == Table::Log {
        // The log is written in revision order and read in ranges: no point lookups by
        // arbitrary key, so a prefix-free layout with large blocks fits it.
        options.set_write_buffer_size(64 << 20);
    } else {
        // The other tables are read by key, and often for keys that are not there: a
        // create checks the key is free, admission asks for a ServiceAccount or a
        // PriorityClass that may not exist. Bloom filters on the tables' files and on
        // the memtable answer most such misses without searching either.
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        table.set_whole_key_filtering(true);
        options.set_block_based_table_factory(&table);
        options.set_memtable_whole_key_filtering(true);
        options.set_memtable_prefix_bloom_ratio(0.05);
    }
    options
}

impl RocksBackend {
    /// Opens (or creates) the store in `path`.
    pub fn open(path: &Path) -> Result<RocksBackend, BackendError> {
        let families = Table::ALL.map(|t| rocksdb::ColumnFamilyDescriptor::new(t.name(), cf_options(t)));
        let db = DB::open_cf_descriptors(&db_options(), path, families)?;
        Ok(RocksBackend { db })
    }

    fn cf(&self, table: Table) -> &ColumnFamily {
        // Every table's family is created at open, so this lookup cannot fail.
        self.db.cf_handle(table.name()).expect("column family created at open")
    }
}

impl Backend for RocksBackend {
    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<(), BackendError> {
        let mut rocks_batch = rocksdb::WriteBatch::default();
        for op in &batch.ops {
            match op {
                WriteOp::Put { table, key, value } => rocks_batch.put_cf(self.cf(*table), key, value),
                WriteOp::Delete { table, key } => rocks_batch.delete_cf(self.cf(*table), key),
                WriteOp::DeleteRange { table, start, end } => rocks_batch.delete_range_cf(self.cf(*table), start, end),
            }
        }
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        self.db.write_opt(rocks_batch, &options)?;
        Ok(())
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Bytes>, BackendError> {
        Ok(self.db.get_cf(self.cf(table), key)?.map(Bytes::from))
    }

    fn snapshot(&self) -> Box<dyn Snapshot + '_> {
        Box::new(RocksSnapshot { backend: self, snapshot: self.db.snapshot() })
    }

    fn checkpoint(&self, dir: &Path) -> Result<(), BackendError> {
        self.db.flush_wal(true)?;
        Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }

    fn name(&self) -> &'static str {
        "rocksdb"
    }
}

struct RocksSnapshot<'a> {
    backend: &'a RocksBackend,
    snapshot: rocksdb::Snapshot<'a>,
}

impl Snapshot for RocksSnapshot<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Bytes>, BackendError> {
        Ok(self.snapshot.get_cf(self.backend.cf(table), key)?.map(Bytes::from))
    }

    fn scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut Visitor<'_>,
    ) -> Result<(), BackendError> {
        let mut options = ReadOptions::default();
        options.set_snapshot(&self.snapshot);
        if let Some(end) = end {
            options.set_iterate_upper_bound(end.to_vec());
        }
        let mode = IteratorMode::From(start, Direction::Forward);
        for item in self.backend.db.iterator_cf_opt(self.backend.cf(table), options, mode) {
            let (key, value) = item?;
            if !visit(&key, &value) {
                break;
            }
        }
        Ok(())
    }
}
