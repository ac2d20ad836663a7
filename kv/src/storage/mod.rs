//! The storage engine: an ordered key-value store with a few column families, atomic write
//! batches and consistent snapshots. Everything above it (MVCC, Percolator, later the raft
//! store) is written against the [`Engine`] trait, so it runs unchanged on RocksDB in
//! production and on the in-memory engine in fast tests.
//!
//! # Column families
//!
//! - [`Cf::Default`]: transaction data, `key + start_ts` → value.
//! - [`Cf::Lock`]: Percolator locks, `key` → lock.
//! - [`Cf::Write`]: commit records, `key + commit_ts` → start_ts and kind.
//! - [`Cf::Raft`]: store-local state (raft log, hard state, apply state, region state). It is a
//!   separate family so that no data key can collide with it, while one [`WriteBatch`] can still
//!   persist data and the raft apply index together.
//!
//! # Guarantees
//!
//! - [`Engine::write`] applies a whole batch or nothing, and when it returns `Ok` the batch is
//!   durable (fsynced): an acknowledged write survives a crash or `kill -9`.
//! - A [`Snapshot`] sees the engine as of the moment it was taken, unaffected by later writes,
//!   for point reads and range scans alike.
//! - Keys are ordered bytewise; range scans are `[start, end)` with `end = None` meaning
//!   "to the end of the family".
//!
//! Deliberately not here: compaction filters, TTLs, range deletion, iterator pinning options.
//! The layers above decide key formats and garbage collection.

pub mod memory;
#[cfg(feature = "rocksdb")]
pub mod rocks;
#[cfg(test)]
mod tests;

use std::fmt;

pub use memory::MemoryEngine;
#[cfg(feature = "rocksdb")]
pub use rocks::RocksEngine;

/// A column family. See the module documentation for what each holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    Default,
    Lock,
    Write,
    Raft,
}

impl Cf {
    pub const ALL: [Cf; 4] = [Cf::Default, Cf::Lock, Cf::Write, Cf::Raft];

    /// The family's name on disk.
    pub fn name(self) -> &'static str {
        match self {
            Cf::Default => "default",
            Cf::Lock => "lock",
            Cf::Write => "write",
            Cf::Raft => "raft",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Cf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An error from the engine itself: I/O failure or a damaged database. Callers cannot retry
/// their way out of either; they surface it and stop.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O error: {0}")]
    Io(String),
    #[error("storage is corrupt: {0}")]
    Corrupt(String),
}

pub type StorageResult<T> = Result<T, StorageError>;

/// One change in a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Modify {
    Put {
        cf: Cf,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: Cf,
        key: Vec<u8>,
    },
}

/// Changes applied atomically, in order, by [`Engine::write`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    modifies: Vec<Modify>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, cf: Cf, key: Vec<u8>, value: Vec<u8>) {
        self.modifies.push(Modify::Put { cf, key, value });
    }

    pub fn delete(&mut self, cf: Cf, key: Vec<u8>) {
        self.modifies.push(Modify::Delete { cf, key });
    }

    pub fn is_empty(&self) -> bool {
        self.modifies.is_empty()
    }

    pub fn len(&self) -> usize {
        self.modifies.len()
    }

    pub fn modifies(&self) -> &[Modify] {
        &self.modifies
    }

    pub fn extend(&mut self, other: WriteBatch) {
        self.modifies.extend(other.modifies);
    }

    /// A self-describing binary form, for shipping a batch in a Raft log entry.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for modify in &self.modifies {
            let (tag, cf, key, value) = match modify {
                Modify::Put { cf, key, value } => (0u8, cf, key, Some(value)),
                Modify::Delete { cf, key } => (1u8, cf, key, None),
            };
            out.push(tag);
            out.push(cf.index() as u8);
            out.extend_from_slice(&(key.len() as u32).to_be_bytes());
            out.extend_from_slice(key);
            if let Some(value) = value {
                out.extend_from_slice(&(value.len() as u32).to_be_bytes());
                out.extend_from_slice(value);
            }
        }
        out
    }

    pub fn decode(mut input: &[u8]) -> StorageResult<WriteBatch> {
        let corrupt = || StorageError::Corrupt("malformed encoded write batch".into());
        let take = |input: &mut &[u8]| -> StorageResult<Vec<u8>> {
            let len_bytes: [u8; 4] = input
                .get(..4)
                .ok_or_else(corrupt)?
                .try_into()
                .map_err(|_| corrupt())?;
            let len = u32::from_be_bytes(len_bytes) as usize;
            let bytes = input.get(4..4 + len).ok_or_else(corrupt)?.to_vec();
            *input = &input[4 + len..];
            Ok(bytes)
        };
        let mut batch = WriteBatch::new();
        while let [tag, cf, rest @ ..] = input {
            input = rest;
            let cf = *Cf::ALL.get(*cf as usize).ok_or_else(corrupt)?;
            let key = take(&mut input)?;
            match tag {
                0 => batch.put(cf, key, take(&mut input)?),
                1 => batch.delete(cf, key),
                _ => return Err(corrupt()),
            }
        }
        if !input.is_empty() {
            return Err(corrupt());
        }
        Ok(batch)
    }
}

/// A key-value pair read from the engine.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// A consistent, read-only view of the engine.
pub trait Snapshot: Send {
    fn get(&self, cf: Cf, key: &[u8]) -> StorageResult<Option<Vec<u8>>>;

    /// Pairs with `start <= key < end` (`end = None`: no upper bound) in ascending key order.
    fn scan<'a>(
        &'a self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = StorageResult<KvPair>> + 'a>;
}

/// An ordered, durable key-value store with column families. See the module documentation.
pub trait Engine: Send + Sync + 'static {
    type Snapshot<'a>: Snapshot
    where
        Self: 'a;

    /// Takes a consistent snapshot.
    fn snapshot(&self) -> Self::Snapshot<'_>;

    /// Applies `batch` atomically and durably.
    fn write(&self, batch: WriteBatch) -> StorageResult<()>;

    /// Applies `batch` atomically, without waiting for it to reach the disk: a crash may lose
    /// it, but only together with every write after it (writes survive as a prefix, in order),
    /// and the next durable write makes it durable too.
    fn write_unsynced(&self, batch: WriteBatch) -> StorageResult<()> {
        self.write(batch)
    }

    /// A point read of the latest data (a convenience for one-off reads; use a snapshot when
    /// several reads must agree).
    fn get(&self, cf: Cf, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        self.snapshot().get(cf, key)
    }
}
