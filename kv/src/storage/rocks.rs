//! The RocksDB engine: one RocksDB instance with one column family per [`Cf`].
//!
//! Writes go through a RocksDB `WriteBatch` with `sync = true`, so `write` returns only after
//! the write-ahead log is fsynced: acknowledged data survives a process or machine crash.
//! `write_unsynced` skips the fsync: the batch is in the write-ahead log, in order, and a
//! machine crash can lose only a suffix of such writes (any synced write makes the ones before
//! it durable). Both rely on RocksDB's defaults: the WAL on, point-in-time recovery.
//! Snapshots are RocksDB snapshots; reads and iterators on them see exactly that sequence
//! number.
//!
//! Deliberately not configured yet: compression (the build carries no codec libraries, to keep
//! RocksDB's C++ build lean), block cache sizing, rate limiting, and group commit across
//! concurrent writers beyond what RocksDB's own write queue does.

use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, ReadOptions};

use super::{Cf, Engine, KvPair, Modify, Snapshot, StorageError, StorageResult, WriteBatch};

pub struct RocksEngine {
    db: DB,
}

fn io_error(e: rocksdb::Error) -> StorageError {
    match e.kind() {
        rocksdb::ErrorKind::Corruption => StorageError::Corrupt(e.into_string()),
        _ => StorageError::Io(e.into_string()),
    }
}

impl RocksEngine {
    /// Opens (creating if needed) the database in `path`.
    pub fn open(path: &Path) -> StorageResult<Self> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families = Cf::ALL
            .iter()
            .map(|cf| ColumnFamilyDescriptor::new(cf.name(), Options::default()));
        let db = DB::open_cf_descriptors(&options, path, families).map_err(io_error)?;
        Ok(Self { db })
    }

    fn handle(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        // Every family in Cf::ALL is created by `open`, so the handle always exists.
        self.db
            .cf_handle(cf.name())
            .unwrap_or_else(|| panic!("column family {cf} was opened with the database"))
    }
}

impl Engine for RocksEngine {
    type Snapshot<'a> = RocksSnapshot<'a>;

    fn snapshot(&self) -> RocksSnapshot<'_> {
        RocksSnapshot {
            engine: self,
            inner: self.db.snapshot(),
        }
    }

    fn write(&self, batch: WriteBatch) -> StorageResult<()> {
        self.write_with(batch, true)
    }

    /// Unsynced writes still go through the write-ahead log, in order, so a crash keeps a
    /// prefix of all writes.
    fn write_unsynced(&self, batch: WriteBatch) -> StorageResult<()> {
        self.write_with(batch, false)
    }
}

impl RocksEngine {
    fn write_with(&self, batch: WriteBatch, sync: bool) -> StorageResult<()> {
        let mut rocks_batch = rocksdb::WriteBatch::default();
        for modify in &batch.modifies {
            match modify {
                Modify::Put { cf, key, value } => rocks_batch.put_cf(self.handle(*cf), key, value),
                Modify::Delete { cf, key } => rocks_batch.delete_cf(self.handle(*cf), key),
            }
        }
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(sync);
        self.db.write_opt(rocks_batch, &options).map_err(io_error)
    }
}

/// A RocksDB snapshot, borrowing the engine it was taken from.
pub struct RocksSnapshot<'a> {
    engine: &'a RocksEngine,
    inner: rocksdb::SnapshotWithThreadMode<'a, DB>,
}

impl Snapshot for RocksSnapshot<'_> {
    fn get(&self, cf: Cf, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        self.inner
            .get_cf(self.engine.handle(cf), key)
            .map_err(io_error)
    }

    fn scan<'b>(
        &'b self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = StorageResult<KvPair>> + 'b> {
        if let Some(end) = end
            && end <= start
        {
            return Box::new(std::iter::empty());
        }
        let mut options = ReadOptions::default();
        if let Some(end) = end {
            options.set_iterate_upper_bound(end.to_vec());
        }
        let iter = self.inner.iterator_cf_opt(
            self.engine.handle(cf),
            options,
            IteratorMode::From(start, Direction::Forward),
        );
        Box::new(iter.map(|item| {
            item.map(|(k, v)| (k.into_vec(), v.into_vec()))
                .map_err(io_error)
        }))
    }
}
