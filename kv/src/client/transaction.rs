//! The interface between the SQL layer and the key-value layer.

use crate::error::KvResult;
use crate::storage::KvPair;

/// A snapshot-isolated transaction over the ordered key space.
///
/// Reads see the database as of the transaction's start plus the transaction's own writes.
/// Writes are buffered and become visible to others atomically at [`Transaction::commit`].
/// After `commit` or `rollback` returns, the transaction must not be used again.
pub trait Transaction: Send {
    fn get(&mut self, key: &[u8]) -> KvResult<Option<Vec<u8>>>;

    /// The values of `keys`, in their order (`None`: absent). An implementation over a
    /// cluster reads each region's keys in one request.
    fn batch_get(&mut self, keys: &[Vec<u8>]) -> KvResult<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|key| self.get(key)).collect()
    }

    /// Pairs with `start <= key < end` (`end = None`: unbounded), in key order, at most `limit`.
    fn scan(&mut self, start: &[u8], end: Option<&[u8]>, limit: usize) -> KvResult<Vec<KvPair>>;

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);

    fn delete(&mut self, key: Vec<u8>);

    /// Locks `key` as if writing it, without changing it (`SELECT … FOR UPDATE`).
    fn lock(&mut self, key: Vec<u8>);

    /// Commits the buffered writes atomically. A write-write conflict with a transaction that
    /// committed after this one started fails with a retryable error and applies nothing.
    fn commit(&mut self) -> KvResult<()>;

    /// Discards the buffered writes.
    fn rollback(&mut self) -> KvResult<()>;

    /// The transaction's snapshot timestamp (for diagnostics).
    fn start_ts(&self) -> u64;
}

/// Where transactions come from.
pub trait TransactionSource: Send + Sync {
    fn begin(&self) -> KvResult<Box<dyn Transaction>>;
}
